#include "net/logging.hpp"

#include <chrono>
#include <filesystem>
#include <thread>

#include <spdlog/async.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace herd::log {

namespace {

// Big enough to ride out bursts of per-message logging; when it is full the
// caller waits instead of dropping lines (the log is the audit trail).
constexpr size_t queue_items = 1 << 16;

/// The file sink, kept so close() can flush it from the calling thread.
std::shared_ptr<spdlog::sinks::basic_file_sink_mt> file_sink;

} // namespace

void open(const std::string& dir, const std::string& server) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    throw std::runtime_error("cannot create log directory " + dir + ": " +
                             ec.message());
  auto path = (fs::path(dir) / (server + ".log")).string();
  try {
    spdlog::init_thread_pool(queue_items, 1);
    file_sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path);
    auto logger = std::make_shared<spdlog::async_logger>(
        server, file_sink, spdlog::thread_pool(),
        spdlog::async_overflow_policy::block);
    spdlog::register_logger(logger);
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%f%z %l %v");
    logger->flush_on(spdlog::level::warn);
    spdlog::set_default_logger(logger);
    spdlog::flush_every(std::chrono::seconds(1));
  } catch (const spdlog::spdlog_ex& e) {
    throw std::runtime_error("cannot open log file " + path + ": " + e.what());
  }
}

void open_stderr() {
  auto logger = spdlog::stderr_color_mt("stderr");
  spdlog::set_default_logger(logger);
}

void close() {
  // Actors may still be logging on other threads, so nothing is torn down:
  // wait (bounded) until the background thread has written what is queued,
  // then flush the file from here.
  if (auto pool = spdlog::thread_pool()) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (pool->queue_size() > 0 &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (file_sink)
    file_sink->flush();
  else if (auto logger = spdlog::default_logger())
    logger->flush();
}

bool needs_escape(std::string_view text) noexcept {
  for (unsigned char c : text)
    if (c < 0x20 || c == 0x7f || c == '\\')
      return true;
  return false;
}

std::string escape(std::string_view text) {
  if (!needs_escape(text))
    return std::string(text);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size() + 16);
  for (unsigned char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

} // namespace herd::log
