#include "net/logging.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
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
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace herd::log {

void byte_buffer::reallocate(size_t need) {
  size_t cap = cap_ < 256 ? 256 : cap_;
  while (cap < need)
    cap *= 2;
  std::unique_ptr<char[]> bigger(new char[cap]);
  if (size_ > 0)
    std::memcpy(bigger.get(), data_.get(), size_);
  data_ = std::move(bigger);
  cap_ = cap;
}

namespace {

void set_thread_name(const char* name) {
  pthread_setname_np(pthread_self(), name);
}

/// The log file and the one thread that writes it. Callers hand over
/// formatted lines: a message block's whole buffer (moved, not copied; the
/// caller gets an emptied buffer back), or an ordinary line copied into an
/// open buffer at the end. The writer takes everything waiting every
/// `write_interval`, or at once when `wake_bytes` are waiting or a warning
/// comes, and writes it with writev(2). So a busy node pays no thread switch
/// per log line or per batch, only one per interval, which is what made
/// per-message logging cheap enough to leave on. Nothing is dropped: a
/// caller waits while `max_pending` bytes are unwritten (the log is the
/// audit trail).
class file_writer {
 public:
  static constexpr auto write_interval = std::chrono::milliseconds(20);
  static constexpr size_t wake_bytes = 256 * 1024;
  static constexpr size_t max_pending = 64 * 1024 * 1024;
  /// Emptied buffers kept for reuse, and the largest one kept: a session
  /// keeps the buffer it gets back while it is idle, so spares stay small
  /// (a depth-16 batch of lines is about 2 KiB), 16 MiB at most in all.
  static constexpr size_t max_spares = 4096;
  static constexpr size_t max_spare_capacity = 4 * 1024;
  /// Drop-behind: once `drop_chunk` bytes are written, their write-out to
  /// disk starts, and they leave the page cache when the next chunk starts
  /// or `drop_delay` later, whichever comes first. At full rate the message
  /// log is over 100 MB/s that nobody reads back from memory: kept, it
  /// would evict the machine's useful cache, and every new page costs the
  /// writer a page allocation (on a virtual machine, often a fault in the
  /// host as well).
  static constexpr off_t drop_chunk = 8 << 20;
  static constexpr auto drop_delay = std::chrono::milliseconds(100);

  explicit file_writer(const std::string& path)
      : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                   0644)) {
    if (fd_ < 0)
      throw std::runtime_error("cannot open log file " + path + ": " +
                               std::strerror(errno));
    // Appending: the file's present end is where this writer starts.
    if (off_t end = ::lseek(fd_, 0, SEEK_END); end > 0)
      started_ = dropped_ = end;
    // Never joined: the writer lives as long as the process.
    std::thread([this] {
      set_thread_name("herd.log");
      run();
    }).detach();
  }

  /// Any thread: copies `bytes` (ordinary log lines). `urgent`: wake the
  /// writer now (warnings and errors).
  void append(std::string_view bytes, bool urgent) {
    std::unique_lock<std::mutex> lock(mtx_);
    wait_for_space(lock);
    if (!tail_open_) {
      pending_.push_back(take_spare());
      tail_open_ = true;
    }
    std::memcpy(pending_.back().grow(bytes.size()), bytes.data(), bytes.size());
    added(lock, bytes.size(), urgent);
  }

  /// Any thread: takes `block`'s bytes as they are and leaves `block` empty
  /// (with the capacity of an earlier buffer, so the caller rarely
  /// allocates).
  void hand_over(byte_buffer& block) {
    if (block.empty())
      return;
    std::unique_lock<std::mutex> lock(mtx_);
    wait_for_space(lock);
    const size_t n = block.size();
    pending_.push_back(std::move(block));
    tail_open_ = false;
    block = take_spare();
    added(lock, n, false);
  }

  /// Any thread: everything handed over before the call is written when it
  /// returns (in order: writes take `write_mtx_` before the buffers).
  void flush() {
    std::lock_guard<std::mutex> writing(write_mtx_);
    write_pending();
  }

 private:
  void wait_for_space(std::unique_lock<std::mutex>& lock) {
    space_.wait(lock, [&] { return pending_bytes_ < max_pending; });
  }

  void added(std::unique_lock<std::mutex>& lock, size_t n, bool urgent) {
    const bool crossed =
        pending_bytes_ < wake_bytes && pending_bytes_ + n >= wake_bytes;
    pending_bytes_ += n;
    urgent_ = urgent_ || urgent;
    lock.unlock();
    if (crossed || urgent)
      wake_.notify_one();
  }

  /// Under `mtx_`.
  byte_buffer take_spare() {
    if (spares_.empty())
      return {};
    byte_buffer b = std::move(spares_.back());
    spares_.pop_back();
    return b;
  }

  void run() {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mtx_);
        wake_.wait_for(lock, write_interval,
                       [&] { return urgent_ || pending_bytes_ >= wake_bytes; });
        urgent_ = false;
      }
      {
        std::lock_guard<std::mutex> writing(write_mtx_);
        write_pending();
      }
      drop_behind();
    }
  }

  /// Under `write_mtx_`: takes what is waiting, writes it, and keeps the
  /// emptied buffers (up to a bound; a burst's large ones are freed).
  void write_pending() {
    {
      std::lock_guard<std::mutex> lock(mtx_);
      chunks_.swap(pending_);
      pending_bytes_ = 0;
      tail_open_ = false;
    }
    space_.notify_all();
    write_all(chunks_);
    std::lock_guard<std::mutex> lock(mtx_);
    for (auto& b : chunks_) {
      if (spares_.size() < max_spares && b.capacity() <= max_spare_capacity) {
        b.clear();
        spares_.push_back(std::move(b));
      }
    }
    chunks_.clear();
  }

  void write_all(const std::vector<byte_buffer>& chunks) {
    std::array<iovec, 256> iov{};
    size_t next = 0;   // the first chunk not yet in `iov`
    size_t offset = 0; // bytes of chunks[next] already written
    while (next < chunks.size()) {
      size_t count = 0;
      for (size_t i = next; i < chunks.size() && count < iov.size(); ++i) {
        size_t skip = i == next ? offset : 0;
        iov[count].iov_base = const_cast<char*>(chunks[i].data() + skip);
        iov[count].iov_len = chunks[i].size() - skip;
        ++count;
      }
      ssize_t n = ::writev(fd_, iov.data(), static_cast<int>(count));
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return; // a full disk: lose the rest of these, not stall the node
      auto left = static_cast<size_t>(n);
      while (next < chunks.size() && left >= chunks[next].size() - offset) {
        left -= chunks[next].size() - offset;
        offset = 0;
        ++next;
      }
      offset += left;
    }
  }

  /// On the writer's thread only, outside every lock (a thread that logs
  /// an error and flushes never waits for the disk here): see drop_chunk.
  /// Errors are ignored: at worst the pages stay cached, as they would
  /// without this.
  void drop_behind() {
#if defined(__linux__)
    // The end of the file (with O_APPEND, where the last write ended): true
    // also when another process appends, or the file was truncated under
    // us (a rotation by copy and truncate).
    const off_t end_now = ::lseek(fd_, 0, SEEK_CUR);
    if (end_now < 0)
      return;
    if (end_now < dropped_)
      started_ = dropped_ = end_now;
    const auto now = std::chrono::steady_clock::now();
    const bool next_round = end_now - started_ >= drop_chunk;
    // What the last round started leaves the cache when the next one
    // starts, or once writing has paused: by then it is usually on disk,
    // so the wait is short, and it is this thread's alone.
    if (started_ > dropped_ &&
        (next_round || now - started_at_ >= drop_delay)) {
      ::sync_file_range(fd_, dropped_, started_ - dropped_,
                        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                            SYNC_FILE_RANGE_WAIT_AFTER);
      // From a chunk before: a large folio across the last range's end was
      // kept whole then, and is inside this range now.
      off_t from = std::max<off_t>(0, dropped_ - drop_chunk);
      ::posix_fadvise(fd_, from, started_ - from, POSIX_FADV_DONTNEED);
      dropped_ = started_;
    }
    if (next_round) {
      ::sync_file_range(fd_, started_, end_now - started_,
                        SYNC_FILE_RANGE_WRITE);
      started_ = end_now;
      started_at_ = now;
    }
#endif
  }

  int fd_;
  /// The writer thread's: the file offsets where the write-out not yet
  /// started begins and where the cached part begins, and when the last
  /// write-out started.
  off_t started_ = 0, dropped_ = 0;
  std::chrono::steady_clock::time_point started_at_;
  std::mutex mtx_;
  std::condition_variable wake_, space_;
  std::vector<byte_buffer> pending_; ///< handed over, in file order
  size_t pending_bytes_ = 0;
  bool tail_open_ = false; ///< pending_.back() takes appended lines
  bool urgent_ = false;
  std::vector<byte_buffer> spares_;
  std::mutex write_mtx_;
  std::vector<byte_buffer> chunks_; ///< being written (under write_mtx_)
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
                        std::string_view direction, std::string_view text,
                        std::initializer_list<std::string_view> tail) {
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
  // one grow and straight copies: this runs for every message logged.
  size_t escaped_size = text.size();
  const bool plain = is_plain(text);
  if (!plain)
    for (unsigned char c : text)
      if (!plain_bytes[c])
        escaped_size += c == '\\' ? 1 : 3;
  size_t tail_size = 0;
  for (std::string_view piece : tail)
    tail_size += piece.size();
  constexpr std::string_view level = " info ";
  char* p =
      lines_.grow(stamp_.size() + 7 + zone_.size() + level.size() + who.size() +
                  1 + direction.size() + 2 + escaped_size + tail_size + 1);
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
  for (std::string_view piece : tail)
    p = copy(p, piece);
  *p = '\n';
}

void message_block::flush() {
  if (lines_.empty())
    return;
  if (writer) {
    writer->hand_over(lines_);
  } else {
    lines_.shrink_by(1); // the logger ends the entry with its own newline
    spdlog::info(lines_.view());
    lines_.clear();
  }
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
