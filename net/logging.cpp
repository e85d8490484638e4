#include "net/logging.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iterator>
#include <thread>

#include <spdlog/async.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace herd::log {

namespace {

// Big enough to ride out bursts of per-message logging; when it is full the
// caller waits instead of dropping lines (the log is the audit trail).
constexpr size_t queue_items = 1 << 16;

/// The file sink, kept so close() can flush it from the calling thread.
std::shared_ptr<spdlog::sinks::basic_file_sink_mt> file_sink;

/// Writes message blocks as they are: their lines carry their own prefix.
std::shared_ptr<spdlog::logger> block_logger;
constexpr const char* block_logger_name = "messages";

/// Records that the background writer reached it: everything queued before
/// a message to this sink has been written when it fires (one writer thread,
/// FIFO), which is how close() knows the log is complete.
class marker_sink final : public spdlog::sinks::sink {
 public:
  void log(const spdlog::details::log_msg&) override { reached.store(true); }
  void flush() override {}
  void set_pattern(const std::string&) override {}
  void set_formatter(std::unique_ptr<spdlog::formatter>) override {}
  std::atomic<bool> reached{false};
};

std::shared_ptr<marker_sink> marker;
std::shared_ptr<spdlog::logger> marker_logger;

/// The file's one formatter: the usual prefix for ordinary entries, none for
/// message blocks (both loggers share the sink, so lines never interleave).
class herd_formatter final : public spdlog::formatter {
 public:
  herd_formatter()
      : pattern_(std::make_unique<spdlog::pattern_formatter>(
            "%Y-%m-%dT%H:%M:%S.%f%z %l %v")) {}
  void format(const spdlog::details::log_msg& msg,
              spdlog::memory_buf_t& dest) override {
    if (msg.logger_name == block_logger_name) {
      dest.append(msg.payload.begin(), msg.payload.end());
      std::string_view eol = spdlog::details::os::default_eol;
      dest.append(eol.data(), eol.data() + eol.size());
      return;
    }
    pattern_->format(msg, dest);
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<herd_formatter>();
  }

 private:
  std::unique_ptr<spdlog::formatter> pattern_;
};

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
    file_sink->set_formatter(std::make_unique<herd_formatter>());
    logger->flush_on(spdlog::level::warn);
    spdlog::set_default_logger(logger);
    block_logger = std::make_shared<spdlog::async_logger>(
        block_logger_name, file_sink, spdlog::thread_pool(),
        spdlog::async_overflow_policy::block);
    marker = std::make_shared<marker_sink>();
    marker_logger = std::make_shared<spdlog::async_logger>(
        "marker", marker, spdlog::thread_pool(),
        spdlog::async_overflow_policy::block);
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
  // queue a marker behind everything logged so far, wait (bounded) until
  // the background writer has reached it, then flush the file from here.
  if (marker_logger) {
    marker->reached.store(false);
    marker_logger->info("end");
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (!marker->reached.load() &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (file_sink)
    file_sink->flush();
  else if (auto logger = spdlog::default_logger())
    logger->flush();
}

void message_block::add(int64_t when_ns, std::string_view who,
                        std::string_view direction, std::string_view text) {
  int64_t second = when_ns / 1'000'000'000;
  if (second != stamp_second_) {
    time_t t = static_cast<time_t>(second);
    tm parts{};
    localtime_r(&t, &parts);
    char buf[32];
    auto n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &parts);
    stamp_.assign(buf, n);
    long off = parts.tm_gmtoff / 60;
    char zone[32];
    std::snprintf(zone, sizeof(zone), "%c%02ld:%02ld", off < 0 ? '-' : '+',
                  (off < 0 ? -off : off) / 60, (off < 0 ? -off : off) % 60);
    zone_ = zone;
    stamp_second_ = second;
  }
  char micros[32];
  std::snprintf(micros, sizeof(micros), ".%06ld",
                static_cast<long>((when_ns / 1000) % 1'000'000));
  lines_ += stamp_;
  lines_ += micros;
  lines_ += zone_;
  lines_ += " info ";
  lines_ += who;
  lines_ += ' ';
  lines_ += direction;
  lines_ += ": ";
  append_escaped(lines_, text);
  lines_ += '\n';
}

void message_block::flush() {
  if (lines_.empty())
    return;
  lines_.pop_back(); // the writer ends the entry with its own newline
  if (block_logger)
    block_logger->info(lines_);
  else
    spdlog::info(lines_);
  lines_.clear();
}

void append_escaped(std::string& out, std::string_view text) {
  if (!needs_escape(text))
    out += text;
  else
    escape_into(std::back_inserter(out), text);
}

bool needs_escape(std::string_view text) noexcept {
  for (unsigned char c : text)
    if (c < 0x20 || c == 0x7f || c == '\\')
      return true;
  return false;
}

std::string escape(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 16);
  append_escaped(out, text);
  return out;
}

} // namespace herd::log
