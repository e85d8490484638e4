// Reply checks of herd-bench: every reply it counts is validated with these.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string_view>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "net/protocol.hpp"

namespace herd::bench {

using std::size_t;
using std::string_view;

inline constexpr bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

/// Checks "AT <server> <+|-><digits>.<9 digits> " and returns the offset of
/// what follows it; 0 when the line does not start that way.
inline size_t at_header(string_view line) {
  size_t n = line.size();
  if (n < 3 || std::memcmp(line.data(), "AT ", 3) != 0)
    return 0;
  size_t i = 3;
  size_t start = i;
  while (i < n && !herd::proto::is_space(static_cast<unsigned char>(line[i])))
    ++i;
  if (i == start || i >= n || line[i] != ' ')
    return 0;
  ++i;
  if (i >= n || (line[i] != '+' && line[i] != '-'))
    return 0;
  ++i;
  start = i;
  while (i < n && is_digit(line[i]))
    ++i;
  if (i == start || i >= n || line[i] != '.')
    return 0;
  ++i;
  for (int k = 0; k < 9; ++k, ++i)
    if (i >= n || !is_digit(line[i]))
      return 0;
  if (i >= n || line[i] != ' ')
    return 0;
  return i + 1;
}

/// An IAMAT reply (no '\n'): "AT <server> <diff> " + echo + time, exactly.
inline bool check_iamat_reply(string_view line, string_view echo,
                              string_view time) {
  size_t i = at_header(line);
  if (i == 0)
    return false;
  string_view rest = line.substr(i);
  return rest.size() == echo.size() + time.size() &&
         std::memcmp(rest.data(), echo.data(), echo.size()) == 0 &&
         std::memcmp(rest.data() + echo.size(), time.data(), time.size()) == 0;
}

/// The AT line of a WHATSAT reply: header, then echo, then a time token.
inline bool check_whatsat_at(string_view line, string_view echo) {
  size_t i = at_header(line);
  if (i == 0)
    return false;
  string_view rest = line.substr(i);
  if (rest.size() <= echo.size() ||
      std::memcmp(rest.data(), echo.data(), echo.size()) != 0)
    return false;
  string_view t = rest.substr(echo.size());
  size_t k = 0;
  while (k < t.size() && is_digit(t[k]))
    ++k;
  if (k == 0)
    return false;
  if (k == t.size())
    return true;
  if (t[k] != '.' || k + 1 == t.size())
    return false;
  for (++k; k < t.size(); ++k)
    if (!is_digit(t[k]))
      return false;
  return true;
}

/// The first byte in [p, end) that is one of `chars` (N of them), or `end`.
/// The check below spends its time here: 16 bytes a step with SSE2.
template<size_t N>
inline const char* find_any(const char* p, const char* end,
                            const char (&chars)[N]) {
#if defined(__SSE2__)
  __m128i want[N - 1];
  for (size_t i = 0; i + 1 < N; ++i)
    want[i] = _mm_set1_epi8(chars[i]);
  for (; end - p >= 16; p += 16) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    __m128i hit = _mm_cmpeq_epi8(v, want[0]);
    for (size_t i = 1; i + 1 < N; ++i)
      hit = _mm_or_si128(hit, _mm_cmpeq_epi8(v, want[i]));
    if (int mask = _mm_movemask_epi8(hit); mask != 0)
      return p + __builtin_ctz(static_cast<unsigned>(mask));
  }
#endif
  for (; p < end; ++p)
    for (size_t i = 0; i + 1 < N; ++i)
      if (*p == chars[i])
        return p;
  return end;
}

/// A cheap structural check of the Places JSON: an object whose braces and
/// brackets balance outside strings, nothing after it but white space, and
/// a "status" key somewhere. It skips from one quote, backslash or bracket
/// to the next, so that validating every reply does not make the load
/// generator the bottleneck of a WHATSAT run.
inline bool check_json(string_view body) {
  if (body.empty() || body[0] != '{')
    return false;
  char stack[256];
  size_t depth = 0;
  const char* p = body.data();
  const char* end = p + body.size();
  while (p < end) {
    p = find_any(p, end, "\"{}[]");
    if (p == end)
      return false; // never closed
    char c = *p++;
    if (c == '"') {
      for (;;) { // to the closing quote, stepping over escapes
        p = find_any(p, end, "\"\\");
        if (p == end)
          return false;
        if (*p++ == '"')
          break;
        if (p == end)
          return false;
        ++p; // the escaped character
      }
      continue;
    }
    if (c == '{' || c == '[') {
      if (depth == sizeof stack)
        return false;
      stack[depth++] = c == '{' ? '}' : ']';
      continue;
    }
    if (depth == 0 || stack[depth - 1] != c)
      return false;
    if (--depth == 0)
      break;
  }
  if (depth != 0)
    return false;
  for (; p < end; ++p)
    if (!herd::proto::is_space(static_cast<unsigned char>(*p)))
      return false;
  // Places puts "status" last: search from the end.
  return body.rfind("\"status\"") != string_view::npos;
}

/// Finds the end of the reply that starts at `s` (`avail` bytes): a single
/// line, or for an AT line followed by JSON (`multi`), everything up to and
/// including the empty line. Returns 0 when incomplete; `first_line` gets
/// the length of the first line without its '\n'. `*scanned` (if given)
/// is how far an earlier call got without finding the end, so that a long
/// reply arriving in pieces is searched once, not once per piece; it is
/// updated when the reply is still incomplete.
inline size_t reply_length(const char* s, size_t avail, bool multi,
                           size_t* first_line = nullptr,
                           size_t* scanned = nullptr) {
  const void* nl = std::memchr(s, '\n', avail);
  if (nl == nullptr)
    return 0;
  auto line = static_cast<size_t>(static_cast<const char*>(nl) - s);
  if (first_line != nullptr)
    *first_line = line;
  if (!multi || line < 3 || std::memcmp(s, "AT ", 3) != 0)
    return line + 1;
  size_t from = std::max(line, scanned != nullptr ? *scanned : 0);
  while (from + 1 < avail) {
    const void* next = std::memchr(s + from, '\n', avail - from - 1);
    if (next == nullptr)
      break;
    from = static_cast<size_t>(static_cast<const char*>(next) - s);
    if (s[from + 1] == '\n')
      return from + 2;
    ++from;
  }
  if (scanned != nullptr)
    *scanned = avail == 0 ? 0 : avail - 1; // a '\n' at the end may be the first
  return 0;
}

} // namespace herd::bench
