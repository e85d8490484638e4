// Logging over spdlog: one file per server. Callers format their lines and
// append them to a shared buffer; one background thread writes the buffer out
// every 20 ms (sooner when it grows or a warning comes), so a log line costs
// the hot path a format and a memcpy, never a write(2) or a thread switch.
// Each line starts with the component's name. No secret is ever passed here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include <spdlog/spdlog.h>

namespace herd::log {

/// Opens `<dir>/<server>.log` (creating `dir`) as the default logger.
/// Throws std::runtime_error with the path on failure.
void open(const std::string& dir, const std::string& server);

/// A logger to stderr only (tests, tools).
void open_stderr();

/// Writes out everything logged so far, from the calling thread; safe while
/// other threads still log, and safe to call twice.
void close();

/// `text` with control bytes, DEL and backslash written as \xNN / \\, so one
/// client line is always one log line whatever bytes it holds.
std::string escape(std::string_view text);

/// True when `text` needs escape().
bool needs_escape(std::string_view text) noexcept;

/// Writes `text` to `out` with control bytes, DEL and backslash escaped
/// (the one definition of the escaping; the functions below use it).
template<class OutputIt>
OutputIt escape_into(OutputIt out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  for (unsigned char c : text) {
    if (c == '\\') {
      *out++ = '\\';
      *out++ = '\\';
    } else if (c < 0x20 || c == 0x7f) {
      *out++ = '\\';
      *out++ = 'x';
      *out++ = hex[c >> 4];
      *out++ = hex[c & 0xf];
    } else {
      *out++ = static_cast<char>(c);
    }
  }
  return out;
}

/// Appends `text` escaped as escape() does.
void append_escaped(std::string& out, std::string_view text);

/// A growable byte buffer that, unlike std::string, does not zero what it
/// grows into: log lines are written once, where they will stay.
class byte_buffer {
 public:
  byte_buffer() = default;
  byte_buffer(byte_buffer&& other) noexcept
      : data_(std::move(other.data_)), size_(std::exchange(other.size_, 0)),
        cap_(std::exchange(other.cap_, 0)) {}
  byte_buffer& operator=(byte_buffer&& other) noexcept {
    data_ = std::move(other.data_);
    size_ = std::exchange(other.size_, 0);
    cap_ = std::exchange(other.cap_, 0);
    return *this;
  }

  /// `n` more bytes at the end, uninitialised; returns where they start.
  char* grow(size_t n) {
    if (size_ + n > cap_)
      reallocate(size_ + n);
    char* p = data_.get() + size_;
    size_ += n;
    return p;
  }
  void shrink_by(size_t n) noexcept { size_ -= n; }
  void clear() noexcept { size_ = 0; }
  const char* data() const noexcept { return data_.get(); }
  size_t size() const noexcept { return size_; }
  size_t capacity() const noexcept { return cap_; }
  bool empty() const noexcept { return size_ == 0; }
  std::string_view view() const noexcept { return {data_.get(), size_}; }

 private:
  void reallocate(size_t need);

  std::unique_ptr<char[]> data_;
  size_t size_ = 0;
  size_t cap_ = 0;
};

/// The per-message lines ("<who> in: ...", "<who> out: ...") of one batch,
/// collected and handed to the writer whole: per-message logging then costs
/// a lock per batch, not two per message, and no copy (the writer takes the
/// buffer and gives back an empty one). Lines carry the same timestamp
/// format as every other log line.
class message_block {
 public:
  /// Adds one line, timestamped `when_ns` (CLOCK_REALTIME):
  /// "<who> <direction>: <text, escaped><tail...>". The pieces of `tail`
  /// are the node's own text and are written as they are.
  void add(int64_t when_ns, std::string_view who, std::string_view direction,
           std::string_view text,
           std::initializer_list<std::string_view> tail = {});
  /// Hands what was added to the writer; cheap when nothing was.
  void flush();

 private:
  byte_buffer lines_;
  int64_t stamp_second_ = -1; ///< the second `stamp_` holds
  std::string stamp_;         ///< "YYYY-MM-DDTHH:MM:SS" of that second
  std::string zone_;          ///< "+HH:MM"
};

/// `text` escaped as escape() does, written straight into the log line
/// (no allocation): `HERD_LOG_INFO("{} in: {}", name, log::escaped{line})`.
struct escaped {
  std::string_view text;
};

} // namespace herd::log

template<>
struct fmt::formatter<herd::log::escaped> : fmt::formatter<std::string_view> {
  template<class FormatContext>
  auto format(const herd::log::escaped& e, FormatContext& ctx) const
      -> decltype(ctx.out()) {
    return herd::log::escape_into(ctx.out(), e.text);
  }
};

#define HERD_LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define HERD_LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define HERD_LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)
#define HERD_LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
