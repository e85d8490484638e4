// Logging over spdlog: one file per server, written by a background thread so
// a log line costs the hot path a format and a queue push, not a write(2).
// Each line starts with the component's name. No secret is ever passed here.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

namespace herd::log {

/// Opens `<dir>/<server>.log` (creating `dir`) as the default logger.
/// Throws std::runtime_error with the path on failure.
void open(const std::string& dir, const std::string& server);

/// A logger to stderr only (tests, tools).
void open_stderr();

/// Writes out what is queued and flushes the file (bounded to a second);
/// safe while other threads still log, and safe to call twice.
void close();

/// `text` with control bytes, DEL and backslash written as \xNN / \\, so one
/// client line is always one log line whatever bytes it holds.
std::string escape(std::string_view text);

/// True when `text` needs escape().
bool needs_escape(std::string_view text) noexcept;

} // namespace herd::log

#define HERD_LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define HERD_LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define HERD_LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)
#define HERD_LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
