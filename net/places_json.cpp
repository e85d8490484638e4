#include "net/places_json.hpp"

#include "net/json_skip.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace herd::places {
namespace {

/// Containers nested deeper than this are rejected (the top-level object is
/// level 1). Bounds the recursion of the scanner.
constexpr int max_depth = 64;

inline bool is_ws(char c) noexcept {
  return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

inline bool is_digit(char c) noexcept {
  return c >= '0' && c <= '9';
}

inline unsigned char byte(char c) noexcept {
  return static_cast<unsigned char>(c);
}

#if defined(__SSE2__)
inline __m128i load16(const char* p) noexcept {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}

inline unsigned mask16(__m128i v) noexcept {
  return static_cast<unsigned>(_mm_movemask_epi8(v));
}
#endif

/// Where the top-level "results" array is and what the cut keeps.
struct cut_plan {
  const char* value_begin = nullptr;   ///< the top-level '{'
  const char* value_end = nullptr;     ///< one past the matching '}'
  const char* results_open = nullptr;  ///< the '[' of "results"
  const char* results_close = nullptr; ///< its ']'
  const char* keep_end = nullptr;      ///< one past the last kept element
  const char* last_end = nullptr;      ///< one past the last element
  std::size_t count = 0;               ///< elements validated (up to the bound)
  bool dropped = false;                ///< elements follow the last kept one
  bool blank_lines = false; ///< a white-space run holds two or more '\n'
};

/// A validating single-pass JSON scanner (RFC 8259, strict: UTF-8 checked,
/// lone surrogate escapes rejected) that records where the top-level
/// "results" array and its elements are. Builds no DOM and copies nothing.
/// The elements past the bound, which are cut and never sent on, are only
/// stepped over (strings and brackets, 64 bytes a step: skip_dropped());
/// everything that is sent on is validated.
class scanner {
 public:
  scanner(std::string_view text, std::size_t bound) noexcept
      : begin_(text.data()), p_(text.data()), end_(text.data() + text.size()),
        bound_(bound) {}

  bool scan() {
    skip_ws();
    if (p_ == end_)
      return fail("empty body");
    if (*p_ != '{')
      return fail("the body is not a JSON object");
    plan_.value_begin = p_;
    if (!top_object())
      return false;
    plan_.value_end = p_;
    skip_ws();
    if (p_ != end_)
      return fail("trailing data after the JSON object");
    if (!seen_results_)
      return fail_semantic("no top-level \"results\" array");
    if (!seen_status_)
      return fail_semantic("no top-level \"status\" string");
    return true;
  }

  const cut_plan& plan() const noexcept { return plan_; }

  std::string error() const {
    std::string out = "invalid Places body: ";
    out += what_ ? what_ : "unknown error";
    if (where_ != npos) {
      out += " at byte ";
      out += std::to_string(where_);
    }
    return out;
  }

 private:
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  bool fail(const char* what) noexcept {
    if (!what_) {
      what_ = what;
      where_ = static_cast<std::size_t>(p_ - begin_);
    }
    return false;
  }

  bool fail_semantic(const char* what) noexcept {
    if (!what_) {
      what_ = what;
      where_ = npos;
    }
    return false;
  }

  /// Skips JSON white space; notes a run that holds two or more '\n' (a
  /// blank line), so the caller knows whether newlines need collapsing.
  __attribute__((always_inline)) void skip_ws() noexcept {
    if (p_ == end_ || !is_ws(*p_))
      return;
    // Fast paths for pretty-printed bodies: a lone space (around ':') and
    // a newline followed by indentation.
    if (*p_ == ' ' && end_ - p_ > 1 && !is_ws(p_[1])) {
      ++p_;
      return;
    }
#if defined(__SSE2__)
    if (*p_ == '\n' && end_ - p_ > 16) {
      const unsigned spaces =
          ~mask16(_mm_cmpeq_epi8(load16(p_ + 1), _mm_set1_epi8(' ')));
      if ((spaces & 0xFFFFu) != 0) {
        const char* next = p_ + 1 + __builtin_ctz(spaces);
        if (!is_ws(*next)) {
          p_ = next;
          return;
        }
      }
    }
#endif
    bool newline = false;
#if defined(__SSE2__)
    const __m128i sp = _mm_set1_epi8(' ');
    const __m128i nl = _mm_set1_epi8('\n');
    const __m128i cr = _mm_set1_epi8('\r');
    const __m128i tab = _mm_set1_epi8('\t');
    while (end_ - p_ >= 16) {
      const __m128i v = load16(p_);
      const __m128i is_nl = _mm_cmpeq_epi8(v, nl);
      const __m128i ws = _mm_or_si128(
          _mm_or_si128(_mm_cmpeq_epi8(v, sp), is_nl),
          _mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, tab)));
      const unsigned ws_mask = mask16(ws);
      unsigned nl_mask = mask16(is_nl);
      if (ws_mask != 0xFFFFu) {
        const unsigned n =
            static_cast<unsigned>(__builtin_ctz(~ws_mask & 0xFFFFu));
        nl_mask &= (1u << n) - 1u;
        note_newlines(nl_mask, newline);
        p_ += n;
        return;
      }
      note_newlines(nl_mask, newline);
      p_ += 16;
    }
#endif
    while (p_ != end_ && is_ws(*p_)) {
      if (*p_ == '\n') {
        if (newline)
          plan_.blank_lines = true;
        newline = true;
      }
      ++p_;
    }
  }

  void note_newlines(unsigned nl_mask, bool& newline) noexcept {
    if (nl_mask == 0)
      return;
    if (newline || (nl_mask & (nl_mask - 1u)) != 0)
      plan_.blank_lines = true;
    newline = true;
  }

  /// Advances to the next byte of a string that needs a closer look: '"',
  /// '\\', a control character or a non-ASCII byte; or to the end.
  void skip_plain() noexcept {
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i backslash = _mm_set1_epi8('\\');
    const __m128i space = _mm_set1_epi8(0x20);
    while (end_ - p_ >= 16) {
      const __m128i v = load16(p_);
      // Signed compare: true for 0x00..0x1F and for 0x80..0xFF.
      const __m128i special = _mm_or_si128(
          _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
          _mm_cmplt_epi8(v, space));
      const unsigned m = mask16(special);
      if (m != 0) {
        p_ += __builtin_ctz(m);
        return;
      }
      p_ += 16;
    }
#endif
    while (p_ != end_) {
      const unsigned char c = byte(*p_);
      if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80)
        return;
      ++p_;
    }
  }

  /// At '"'; on success just past the closing '"'. Sets `escaped_` when
  /// the string holds an escape sequence.
  bool string() {
    ++p_;
    escaped_ = false;
    for (;;) {
      skip_plain();
      if (p_ == end_)
        return fail("unterminated string");
      const unsigned char c = byte(*p_);
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c == '\\') {
        if (!escape())
          return false;
        escaped_ = true;
      } else if (c < 0x20) {
        return fail("control character in a string");
      } else if (!utf8()) {
        return false;
      }
    }
  }

  /// At '\\'; on success just past the escape sequence.
  bool escape() {
    ++p_;
    if (p_ == end_)
      return fail("unterminated string");
    switch (*p_) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't':
      ++p_;
      return true;
    case 'u': {
      unsigned cp = 0;
      if (!hex4(cp))
        return false;
      if (cp >= 0xDC00 && cp <= 0xDFFF)
        return fail("lone low surrogate escape");
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u')
          return fail("high surrogate escape without a low surrogate");
        ++p_;
        unsigned low = 0;
        if (!hex4(low))
          return false;
        if (low < 0xDC00 || low > 0xDFFF)
          return fail("high surrogate escape without a low surrogate");
      }
      return true;
    }
    default:
      return fail("invalid escape sequence");
    }
  }

  /// At 'u'; reads the four hex digits after it.
  bool hex4(unsigned& out) {
    ++p_;
    if (end_ - p_ < 4)
      return fail("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = p_[i];
      unsigned d = 0;
      if (c >= '0' && c <= '9')
        d = static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f')
        d = static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        d = static_cast<unsigned>(c - 'A' + 10);
      else
        return fail("invalid \\u escape");
      v = v * 16 + d;
    }
    p_ += 4;
    out = v;
    return true;
  }

  /// At a byte >= 0x80; checks one UTF-8 sequence and steps over it.
  bool utf8() {
    const std::ptrdiff_t avail = end_ - p_;
    const unsigned char c0 = byte(p_[0]);
    auto in = [](unsigned char c, unsigned char lo, unsigned char hi) {
      return c >= lo && c <= hi;
    };
    if (in(c0, 0xC2, 0xDF)) {
      if (avail >= 2 && in(byte(p_[1]), 0x80, 0xBF)) {
        p_ += 2;
        return true;
      }
    } else if (in(c0, 0xE0, 0xEF)) {
      const unsigned char lo = c0 == 0xE0 ? 0xA0 : 0x80;
      const unsigned char hi = c0 == 0xED ? 0x9F : 0xBF;
      if (avail >= 3 && in(byte(p_[1]), lo, hi) &&
          in(byte(p_[2]), 0x80, 0xBF)) {
        p_ += 3;
        return true;
      }
    } else if (in(c0, 0xF0, 0xF4)) {
      const unsigned char lo = c0 == 0xF0 ? 0x90 : 0x80;
      const unsigned char hi = c0 == 0xF4 ? 0x8F : 0xBF;
      if (avail >= 4 && in(byte(p_[1]), lo, hi) &&
          in(byte(p_[2]), 0x80, 0xBF) && in(byte(p_[3]), 0x80, 0xBF)) {
        p_ += 4;
        return true;
      }
    }
    return fail("invalid UTF-8 in a string");
  }

  bool number() {
    if (*p_ == '-')
      ++p_;
    if (p_ == end_)
      return fail("invalid number");
    if (*p_ == '0') {
      ++p_;
    } else if (*p_ >= '1' && *p_ <= '9') {
      ++p_;
      while (p_ != end_ && is_digit(*p_))
        ++p_;
    } else {
      return fail("invalid number");
    }
    if (p_ != end_ && *p_ == '.') {
      ++p_;
      if (p_ == end_ || !is_digit(*p_))
        return fail("invalid number");
      while (p_ != end_ && is_digit(*p_))
        ++p_;
    }
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-'))
        ++p_;
      if (p_ == end_ || !is_digit(*p_))
        return fail("invalid number");
      while (p_ != end_ && is_digit(*p_))
        ++p_;
    }
    return true;
  }

  bool literal(const char* word, std::size_t n) {
    if (static_cast<std::size_t>(end_ - p_) >= n &&
        std::memcmp(p_, word, n) == 0) {
      p_ += n;
      return true;
    }
    return fail("invalid literal");
  }

  /// Any value; `depth` is the nesting level of the container holding it.
  bool value(int depth) {
    if (p_ == end_)
      return fail("unexpected end of input");
    if (*p_ == '"')
      return string();
    switch (*p_) {
    case '{':
      return object(depth + 1);
    case '[':
      return array(depth + 1);
    case '"':
      return string();
    case 't':
      return literal("true", 4);
    case 'f':
      return literal("false", 5);
    case 'n':
      return literal("null", 4);
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
      return number();
    default:
      return fail("unexpected character");
    }
  }

  /// After a member value or an element: skips to ',' or `close`. Returns
  /// 1 after ',', 0 after `close`, -1 on error.
  int next_or_close(char close, const char* what) {
    skip_ws();
    if (p_ == end_) {
      fail("unexpected end of input");
      return -1;
    }
    if (*p_ == ',') {
      ++p_;
      skip_ws();
      return 1;
    }
    if (*p_ == close) {
      ++p_;
      return 0;
    }
    fail(what);
    return -1;
  }

  /// At '"' of a member name; steps over the name, the ':' after it and
  /// the white space after that.
  bool member_name() {
    if (p_ == end_ || *p_ != '"')
      return fail("expected a member name");
    if (!string())
      return false;
    name_end_ = p_ - 1;
    skip_ws();
    if (p_ == end_ || *p_ != ':')
      return fail("expected ':'");
    ++p_;
    skip_ws();
    return true;
  }

  bool object(int depth) {
    if (depth > max_depth)
      return fail("nesting too deep");
    ++p_;
    skip_ws();
    if (p_ != end_ && *p_ == '}') {
      ++p_;
      return true;
    }
    for (;;) {
      if (!member_name() || !value(depth))
        return false;
      const int next = next_or_close('}', "expected ',' or '}'");
      if (next <= 0)
        return next == 0;
    }
  }

  bool array(int depth) {
    if (depth > max_depth)
      return fail("nesting too deep");
    ++p_;
    skip_ws();
    if (p_ != end_ && *p_ == ']') {
      ++p_;
      return true;
    }
    for (;;) {
      if (!value(depth))
        return false;
      const int next = next_or_close(']', "expected ',' or ']'");
      if (next <= 0)
        return next == 0;
    }
  }

  enum class top_key { other, results, status };

  /// Which top-level member a name (raw bytes between the quotes) is.
  top_key classify(const char* b, const char* e) const {
    std::string_view name(b, static_cast<std::size_t>(e - b));
    std::string decoded;
    if (escaped_) {
      // Rare: decode just enough to compare with ASCII names; anything
      // non-ASCII becomes a byte that matches neither.
      for (const char* q = b; q != e; ++q) {
        if (*q != '\\') {
          decoded += *q;
          continue;
        }
        ++q;
        if (*q == 'u') {
          unsigned v = 0;
          for (int i = 1; i <= 4; ++i) {
            const char c = q[i];
            v = v * 16 + static_cast<unsigned>(c <= '9'   ? c - '0'
                                               : c <= 'F' ? c - 'A' + 10
                                                          : c - 'a' + 10);
          }
          q += 4;
          decoded += v < 0x80 ? static_cast<char>(v) : '\x80';
        } else {
          switch (*q) {
          case 'b':
            decoded += '\b';
            break;
          case 'f':
            decoded += '\f';
            break;
          case 'n':
            decoded += '\n';
            break;
          case 'r':
            decoded += '\r';
            break;
          case 't':
            decoded += '\t';
            break;
          default:
            decoded += *q; // '"', '\\' or '/'
          }
        }
      }
      name = decoded;
    }
    if (name == "results")
      return top_key::results;
    if (name == "status")
      return top_key::status;
    return top_key::other;
  }

  bool top_object() {
    ++p_;
    skip_ws();
    if (p_ != end_ && *p_ == '}') {
      ++p_;
      return true;
    }
    for (;;) {
      const char* name_begin = p_ + 1;
      if (!member_name())
        return false;
      switch (classify(name_begin, name_end_)) {
      case top_key::results:
        if (seen_results_)
          return fail("duplicate top-level \"results\" member");
        seen_results_ = true;
        if (p_ == end_ || *p_ != '[')
          return fail("top-level \"results\" is not an array");
        if (!results_array())
          return false;
        break;
      case top_key::status:
        if (seen_status_)
          return fail("duplicate top-level \"status\" member");
        seen_status_ = true;
        if (p_ == end_ || *p_ != '"')
          return fail("top-level \"status\" is not a string");
        if (!string())
          return false;
        break;
      case top_key::other:
        if (!value(1))
          return false;
        break;
      }
      const int next = next_or_close('}', "expected ',' or '}'");
      if (next <= 0)
        return next == 0;
    }
  }

  /// The top-level "results" array (level 2); notes where its elements end.
  bool results_array() {
    plan_.results_open = p_;
    ++p_;
    skip_ws();
    if (p_ != end_ && *p_ == ']') {
      plan_.results_close = p_;
      ++p_;
      return true;
    }
    if (bound_ == 0)
      return skip_dropped();
    for (;;) {
      if (!value(2))
        return false;
      ++plan_.count;
      plan_.last_end = p_;
      if (plan_.count == bound_)
        plan_.keep_end = p_;
      skip_ws();
      if (p_ == end_)
        return fail("unexpected end of input");
      if (*p_ == ',') {
        ++p_;
        skip_ws();
        if (plan_.count == bound_)
          return skip_dropped();
        continue;
      }
      if (*p_ == ']') {
        plan_.results_close = p_;
        ++p_;
        return true;
      }
      return fail("expected ',' or ']'");
    }
  }

  /// At the first element past the bound (or at the first element, with a
  /// bound of 0): steps to the ']' that closes "results", following only
  /// strings (with their escapes) and brackets (net/json_skip.hpp). The
  /// elements stepped over are cut, so they are checked only this far:
  /// brackets balance outside strings, strings end, and no ',' is doubled at
  /// either end. On success just past the ']'.
  bool skip_dropped() {
    const char* const start = p_;
    if (p_ != end_ && *p_ == ',')
      return fail("expected a value");
    p_ = detail::find_close(p_, end_);
    if (p_ == end_)
      return fail("unexpected end of input");
    return close_dropped(start);
  }

  /// At the ']' (or a stray '}') where skip_dropped() came back to depth 0.
  bool close_dropped(const char* start) {
    if (*p_ != ']')
      return fail("expected ',' or ']'");
    const char* last = p_;
    while (last > start && is_ws(last[-1]))
      --last;
    if (last == start) {
      // Nothing after the last kept element's ',': a trailing comma. (With
      // a bound of 0, "results" is not empty here: scan() saw a non-']'.)
      if (bound_ != 0)
        return fail("expected a value");
    } else if (last[-1] == ',') {
      return fail("expected a value");
    }
    // The white space before ']' stays in the cut body.
    int newlines = 0;
    for (const char* w = last; w != p_; ++w)
      newlines += *w == '\n';
    if (newlines >= 2)
      plan_.blank_lines = true;
    plan_.last_end = last;
    plan_.dropped = true;
    plan_.results_close = p_;
    ++p_;
    return true;
  }

  const char* begin_;
  const char* p_;
  const char* end_;
  std::size_t bound_;
  const char* what_ = nullptr;
  std::size_t where_ = npos;
  const char* name_end_ = nullptr; ///< closing '"' of the last name
  bool escaped_ = false;
  bool seen_results_ = false;
  bool seen_status_ = false;
  cut_plan plan_;
};

} // namespace

std::optional<std::string> cut_results(std::string_view body, int bound,
                                       std::string& why) {
  const std::size_t keep = bound > 0 ? static_cast<std::size_t>(bound) : 0;
  scanner scan(body, keep);
  if (!scan.scan()) {
    why = scan.error();
    return std::nullopt;
  }
  const cut_plan& plan = scan.plan();
  std::string out;
  if (!plan.dropped) {
    out.assign(plan.value_begin, plan.value_end);
  } else {
    // keep == 0: "[]"; otherwise drop from the end of the last kept element
    // to the end of the last element, so the ',' goes and the white space
    // before ']' stays as it was.
    const char* cut_from = keep == 0 ? plan.results_open + 1 : plan.keep_end;
    const char* cut_to = keep == 0 ? plan.results_close : plan.last_end;
    const auto head = static_cast<std::size_t>(cut_from - plan.value_begin);
    const auto tail = static_cast<std::size_t>(plan.value_end - cut_to);
    out.reserve(head + tail);
    out.append(plan.value_begin, head);
    out.append(cut_to, tail);
  }
  // The copy starts at '{' and ends at '}', and every '\n' of valid JSON
  // sits in white space the scanner walked over: without a blank line
  // there is nothing to normalize.
  if (plan.blank_lines)
    normalize_newlines(out);
  return out;
}

std::string unknown_error_json(std::string_view message) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out = "{\"html_attributions\":[],\"results\":[],"
                    "\"status\":\"UNKNOWN_ERROR\",\"error_message\":\"";
  out.reserve(out.size() + message.size() + 8);
  const char* p = message.data();
  const char* const end = p + message.size();
  while (p != end) {
    const unsigned char c = byte(*p);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++p;
    } else if (c < 0x20) {
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 0xF];
      ++p;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
      ++p;
    } else {
      // Copy a well-formed UTF-8 sequence; replace a bad byte with U+FFFD
      // so the body stays valid JSON whatever the message holds.
      std::size_t n = 0;
      const std::ptrdiff_t avail = end - p;
      auto cont = [&](std::ptrdiff_t i, unsigned char lo, unsigned char hi) {
        return i < avail && byte(p[i]) >= lo && byte(p[i]) <= hi;
      };
      if (c >= 0xC2 && c <= 0xDF) {
        n = cont(1, 0x80, 0xBF) ? 2 : 0;
      } else if (c >= 0xE0 && c <= 0xEF) {
        const unsigned char lo = c == 0xE0 ? 0xA0 : 0x80;
        const unsigned char hi = c == 0xED ? 0x9F : 0xBF;
        n = cont(1, lo, hi) && cont(2, 0x80, 0xBF) ? 3 : 0;
      } else if (c >= 0xF0 && c <= 0xF4) {
        const unsigned char lo = c == 0xF0 ? 0x90 : 0x80;
        const unsigned char hi = c == 0xF4 ? 0x8F : 0xBF;
        n = cont(1, lo, hi) && cont(2, 0x80, 0xBF) && cont(3, 0x80, 0xBF) ? 4
                                                                          : 0;
      }
      if (n == 0) {
        out += "\\ufffd";
        ++p;
      } else {
        out.append(p, n);
        p += n;
      }
    }
  }
  out += "\"}";
  return out;
}

void normalize_newlines(std::string& json) {
  // Blank lines go: a white-space run that holds two or more '\n' keeps its
  // bytes up to and including the first '\n' and those after the last one
  // (the next line's indentation), so "\n\n" -> "\n", "\r\n\r\n" -> "\r\n"
  // and "\n  \n  x" -> "\n  x". Leading white space up to its last '\n' and
  // all trailing white space (including '\r'/'\n' mixes) are removed.
  std::size_t n = json.size();
  while (n > 0 && is_ws(json[n - 1]))
    --n;
  char* const d = json.data();
  std::size_t read = 0;
  for (std::size_t i = 0; i < n && is_ws(d[i]); ++i)
    if (d[i] == '\n')
      read = i + 1;
  std::size_t write = 0;
  std::size_t search = read;
  while (search < n) {
    const void* hit = std::memchr(d + search, '\n', n - search);
    if (hit == nullptr)
      break;
    const auto first =
        static_cast<std::size_t>(static_cast<const char*>(hit) - d);
    std::size_t last = first;
    std::size_t j = first + 1;
    for (; j < n && is_ws(d[j]); ++j)
      if (d[j] == '\n')
        last = j;
    if (last != first) {
      const std::size_t len = first + 1 - read;
      if (write != read)
        std::memmove(d + write, d + read, len);
      write += len;
      read = last + 1;
    }
    search = j;
  }
  const std::size_t len = n - read;
  if (write != read && len != 0)
    std::memmove(d + write, d + read, len);
  json.resize(write + len);
}

} // namespace herd::places
