#include "net/logging.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iterator>
#include <mutex>
#include <stdexcept>
#include <thread>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace herd::log {

namespace {

/// The log file and the one thread that writes it. Callers append formatted
/// lines to a shared buffer (a memcpy under a mutex); the writer swaps the
/// buffer out every `write_interval`, or at once when `wake_bytes` are
/// waiting or a warning comes, and writes it with one write(2). So a busy
/// node pays no thread switch per log line or per batch, only one per
/// interval, which is what made per-message logging cheap enough to leave on.
/// Nothing is dropped: a caller waits while `max_pending` bytes are unwritten
/// (the log is the audit trail).
class file_writer {
 public:
  static constexpr auto write_interval = std::chrono::milliseconds(20);
  static constexpr size_t wake_bytes = 256 * 1024;
  static constexpr size_t max_pending = 64 * 1024 * 1024;

  explicit file_writer(const std::string& path)
      : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                   0644)) {
    if (fd_ < 0)
      throw std::runtime_error("cannot open log file " + path + ": " +
                               std::strerror(errno));
    // Never joined: the writer lives as long as the process.
    std::thread([this] { run(); }).detach();
  }

  /// Any thread. `urgent`: wake the writer now (warnings and errors).
  void append(std::string_view bytes, bool urgent) {
    std::unique_lock<std::mutex> lock(mtx_);
    space_.wait(lock, [&] { return pending_.size() < max_pending; });
    const bool crossed = pending_.size() < wake_bytes &&
                         pending_.size() + bytes.size() >= wake_bytes;
    pending_.append(bytes.data(), bytes.size());
    urgent_ = urgent_ || urgent;
    lock.unlock();
    if (crossed || urgent)
      wake_.notify_one();
  }

  /// Any thread: everything appended before the call is written when it
  /// returns (in order: writes take `write_mtx_` before the buffer).
  void flush() {
    std::lock_guard<std::mutex> writing(write_mtx_);
    std::string chunk;
    {
      std::lock_guard<std::mutex> lock(mtx_);
      chunk.swap(pending_);
    }
    space_.notify_all();
    write_all(chunk);
  }

 private:
  void run() {
    std::string chunk;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mtx_);
        wake_.wait_for(lock, write_interval, [&] {
          return urgent_ || pending_.size() >= wake_bytes;
        });
        urgent_ = false;
      }
      std::lock_guard<std::mutex> writing(write_mtx_);
      {
        std::lock_guard<std::mutex> lock(mtx_);
        chunk.swap(pending_); // pending_ keeps the old chunk's capacity
      }
      space_.notify_all();
      write_all(chunk);
      chunk.clear();
      // After a burst, give back all but a normal batch's worth of memory
      // (this buffer becomes pending_ at the next swap).
      if (chunk.capacity() > 4 * wake_bytes)
        chunk.shrink_to_fit();
    }
  }

  void write_all(const std::string& chunk) {
    const char* p = chunk.data();
    size_t left = chunk.size();
    while (left > 0) {
      ssize_t n = ::write(fd_, p, left);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return; // a full disk: lose the rest of this chunk, not stall the node
      p += n;
      left -= static_cast<size_t>(n);
    }
  }

  int fd_;
  std::mutex mtx_;
  std::condition_variable wake_, space_;
  std::string pending_;
  bool urgent_ = false;
  std::mutex write_mtx_;
};

/// Leaked on purpose: threads may log until the process exits.
file_writer* writer = nullptr;

/// Formats ordinary log lines on the caller's thread and hands them to the
/// writer, so they and the message blocks share one order in the file.
class writer_sink final : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    writer->append(std::string_view(buf.data(), buf.size()),
                   msg.level >= spdlog::level::warn);
  }
  void flush_() override { writer->flush(); }
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
  writer = new file_writer(path);
  auto sink = std::make_shared<writer_sink>();
  sink->set_pattern("%Y-%m-%dT%H:%M:%S.%f%z %l %v");
  auto logger = std::make_shared<spdlog::logger>(server, std::move(sink));
  // Errors are written before the call returns; warnings wake the writer.
  logger->flush_on(spdlog::level::err);
  spdlog::set_default_logger(logger);
}

void open_stderr() {
  auto logger = spdlog::stderr_color_mt("stderr");
  spdlog::set_default_logger(logger);
}

void close() {
  // Other threads may still be logging, so nothing is torn down: write out
  // everything logged so far, from this thread.
  if (writer)
    writer->flush();
  else if (auto logger = spdlog::default_logger())
    logger->flush();
}

namespace {

/// 1 for the bytes escape_into() writes as they are.
constexpr std::array<bool, 256> plain_bytes = [] {
  std::array<bool, 256> t{};
  for (int c = 0; c < 256; ++c)
    t[static_cast<size_t>(c)] = !(c < 0x20 || c == 0x7f || c == '\\');
  return t;
}();

/// True when escape_into() would copy `text` as it is; 16 bytes a step.
bool is_plain(std::string_view text) noexcept {
  const char* p = text.data();
  const char* end = p + text.size();
#if defined(__SSE2__)
  const __m128i max_control = _mm_set1_epi8(0x1f);
  const __m128i del = _mm_set1_epi8(0x7f);
  const __m128i backslash = _mm_set1_epi8('\\');
  for (; end - p >= 16; p += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i control = _mm_cmpeq_epi8(_mm_min_epu8(v, max_control), v);
    const __m128i special =
        _mm_or_si128(control, _mm_or_si128(_mm_cmpeq_epi8(v, del),
                                           _mm_cmpeq_epi8(v, backslash)));
    if (_mm_movemask_epi8(special) != 0)
      return false;
  }
#endif
  for (; p != end; ++p)
    if (!plain_bytes[static_cast<unsigned char>(*p)])
      return false;
  return true;
}

char* copy(char* out, std::string_view s) {
  std::memcpy(out, s.data(), s.size());
  return out + s.size();
}

} // namespace

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
  // The exact length first (the scan also tells whether to escape), then
  // one resize and straight copies: this runs twice per message.
  size_t escaped_size = text.size();
  const bool plain = is_plain(text);
  if (!plain)
    for (unsigned char c : text)
      if (!plain_bytes[c])
        escaped_size += c == '\\' ? 1 : 3;
  constexpr std::string_view level = " info ";
  const size_t old = lines_.size();
  lines_.resize(old + stamp_.size() + 7 + zone_.size() + level.size() +
                who.size() + 1 + direction.size() + 2 + escaped_size + 1);
  char* p = lines_.data() + old;
  p = copy(p, stamp_);
  *p++ = '.';
  auto micros = static_cast<uint32_t>((when_ns / 1000) % 1'000'000);
  for (int i = 5; i >= 0; --i) {
    p[i] = static_cast<char>('0' + micros % 10);
    micros /= 10;
  }
  p += 6;
  p = copy(p, zone_);
  p = copy(p, level);
  p = copy(p, who);
  *p++ = ' ';
  p = copy(p, direction);
  *p++ = ':';
  *p++ = ' ';
  p = plain ? copy(p, text) : escape_into(p, text);
  *p = '\n';
}

void message_block::flush() {
  if (lines_.empty())
    return;
  if (writer) {
    writer->append(lines_, false);
  } else {
    lines_.pop_back(); // the logger ends the entry with its own newline
    spdlog::info(lines_);
  }
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
