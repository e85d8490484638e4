#include "net/protocol.hpp"

#include <charconv>
#include <cstddef>
#include <limits>
#include <utility>

namespace herd::proto {

namespace {

constexpr bool is_digit(char c) noexcept {
  return c >= '0' && c <= '9';
}

constexpr int digit_value(char c) noexcept {
  return c - '0';
}

/// True when every byte of `s` is a decimal digit (true for empty `s`).
constexpr bool all_digits(std::string_view s) noexcept {
  for (char c : s)
    if (!is_digit(c))
      return false;
  return true;
}

/// True when every byte of `s` is '0' (true for empty `s`).
constexpr bool all_zeros(std::string_view s) noexcept {
  for (char c : s)
    if (c != '0')
      return false;
  return true;
}

/// Drops leading '0' bytes (may leave an empty view).
constexpr std::string_view strip_leading_zeros(std::string_view s) noexcept {
  std::size_t i = 0;
  while (i < s.size() && s[i] == '0')
    ++i;
  return s.substr(i);
}

/// Splits an unsigned decimal "digits[.digits]" into its two digit runs.
/// Fails on an empty integer part, a dangling '.', or any other byte.
struct decimal_parts {
  std::string_view whole;
  std::string_view frac; ///< empty when there is no '.'
};

constexpr std::optional<decimal_parts>
split_decimal(std::string_view s) noexcept {
  std::size_t i = 0;
  while (i < s.size() && is_digit(s[i]))
    ++i;
  if (i == 0)
    return std::nullopt;
  decimal_parts parts{s.substr(0, i), {}};
  if (i == s.size())
    return parts;
  if (s[i] != '.')
    return std::nullopt;
  std::string_view frac = s.substr(i + 1);
  if (frac.empty() || !all_digits(frac))
    return std::nullopt;
  parts.frac = frac;
  return parts;
}

/// Exact check that the unsigned decimal `whole.frac` is at most `limit`.
constexpr bool at_most(const decimal_parts& d, unsigned limit) noexcept {
  std::string_view whole = strip_leading_zeros(d.whole);
  if (whole.size() > 3)
    return false;
  unsigned value = 0;
  for (char c : whole)
    value = value * 10 + static_cast<unsigned>(digit_value(c));
  if (value < limit)
    return true;
  return value == limit && all_zeros(d.frac);
}

/// One signed coordinate at the start of `s`: [+-] digits [. digits], with
/// a magnitude of at most `limit` degrees (compared exactly, no float).
/// Returns its length, or 0 when there is none or it is out of range. Stops
/// at the first byte that cannot continue the number.
constexpr std::size_t scan_coordinate(std::string_view s,
                                      unsigned limit) noexcept {
  if (s.empty() || (s[0] != '+' && s[0] != '-'))
    return 0;
  std::size_t i = 1;
  unsigned whole = 0; // saturates above any limit
  while (i < s.size() && is_digit(s[i])) {
    if (whole <= limit)
      whole = whole * 10 + static_cast<unsigned>(digit_value(s[i]));
    ++i;
  }
  if (i == 1)
    return 0;
  bool frac_nonzero = false;
  if (i < s.size() && s[i] == '.') {
    std::size_t j = i + 1;
    while (j < s.size() && is_digit(s[j])) {
      frac_nonzero |= s[j] != '0';
      ++j;
    }
    if (j == i + 1)
      return 0;
    i = j;
  }
  if (whole > limit || (whole == limit && frac_nonzero))
    return 0;
  return i;
}

/// `[+-]digits.ddddddddd`: a time difference as the AT reply prints it.
constexpr bool is_timediff(std::string_view s) noexcept {
  if (s.size() < 12 || (s[0] != '+' && s[0] != '-'))
    return false;
  std::string_view whole = s.substr(1, s.size() - 11);
  std::string_view frac = s.substr(s.size() - 9);
  return !whole.empty() && all_digits(whole) && s[s.size() - 10] == '.' &&
         all_digits(frac);
}

constexpr std::size_t max_fields = 6;

/// Splits `line` into at most max_fields + 1 fields (one more than any
/// command takes, so that extra fields are seen). Returns the field count.
std::size_t split_fields(std::string_view line,
                         std::string_view (&fields)[max_fields + 1]) noexcept {
  const char* p = line.data();
  const char* const end = p + line.size();
  std::size_t n = 0;
  while (n < max_fields + 1) {
    while (p != end && is_space(static_cast<unsigned char>(*p)))
      ++p;
    if (p == end)
      break;
    const char* start = p;
    while (p != end && !is_space(static_cast<unsigned char>(*p)))
      ++p;
    fields[n++] = std::string_view(start, static_cast<std::size_t>(p - start));
  }
  return n;
}

void append_digits(std::string& out, uint64_t value) {
  char buf[20];
  auto res = std::to_chars(buf, buf + sizeof buf, value);
  out.append(buf, static_cast<std::size_t>(res.ptr - buf));
}

} // namespace

std::optional<int64_t> parse_time_ns(std::string_view text) {
  constexpr uint64_t max_ns =
      static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  constexpr uint64_t ns_per_s = 1'000'000'000;
  constexpr uint64_t max_s = max_ns / ns_per_s;

  const char* p = text.data();
  const char* const end = p + text.size();
  uint64_t seconds = 0;
  const char* const whole_begin = p;
  for (; p != end && is_digit(*p); ++p) {
    seconds = seconds * 10 + static_cast<uint64_t>(digit_value(*p));
    if (seconds > max_s)
      return std::nullopt;
  }
  if (p == whole_begin)
    return std::nullopt;

  uint64_t frac_ns = 0;
  if (p != end) {
    if (*p != '.')
      return std::nullopt;
    const char* const frac_begin = ++p;
    const char* const frac_kept = end - p > 9 ? p + 9 : end;
    for (; p != frac_kept && is_digit(*p); ++p)
      frac_ns = frac_ns * 10 + static_cast<uint64_t>(digit_value(*p));
    if (p == frac_begin)
      return std::nullopt;
    constexpr uint32_t scale[10] = {
        1'000'000'000, 100'000'000, 10'000'000, 1'000'000, 100'000,
        10'000,        1'000,       100,        10,        1};
    frac_ns *= scale[p - frac_begin];
    for (; p != end; ++p) // truncated digits must still be digits
      if (!is_digit(*p))
        return std::nullopt;
  }

  if (seconds == max_s && frac_ns > max_ns % ns_per_s)
    return std::nullopt;
  return static_cast<int64_t>(seconds * ns_per_s + frac_ns);
}

std::optional<location> parse_location(std::string_view text) {
  std::size_t lat_len = scan_coordinate(text, 90);
  if (lat_len == 0)
    return std::nullopt;
  std::string_view rest = text.substr(lat_len);
  if (rest.empty() || scan_coordinate(rest, 180) != rest.size())
    return std::nullopt;
  return location{text, text.substr(0, lat_len), rest};
}

std::optional<std::string> parse_radius_m(std::string_view text) {
  auto parts = split_decimal(text);
  if (!parts || !at_most(*parts, 50))
    return std::nullopt;
  if (all_zeros(parts->whole) && all_zeros(parts->frac))
    return std::nullopt;

  // Metres: the same digits with the decimal point three places right.
  std::string_view whole = strip_leading_zeros(parts->whole);
  std::string_view frac = parts->frac;
  std::string_view shifted = frac.substr(0, frac.size() < 3 ? frac.size() : 3);
  std::string_view rest = frac.substr(shifted.size());
  while (!rest.empty() && rest.back() == '0')
    rest.remove_suffix(1);

  std::string metres;
  metres.reserve(whole.size() + 3 + (rest.empty() ? 0 : 1 + rest.size()));
  metres.append(whole);
  metres.append(shifted);
  metres.append(3 - shifted.size(), '0');
  std::size_t zeros = metres.find_first_not_of('0');
  if (zeros == std::string::npos)
    metres.assign(1, '0');
  else
    metres.erase(0, zeros);
  if (!rest.empty()) {
    metres.push_back('.');
    metres.append(rest);
  }
  return metres;
}

std::optional<int> parse_bound(std::string_view text) {
  if (text.empty())
    return std::nullopt;
  int value = 0;
  for (char c : text) {
    if (!is_digit(c))
      return std::nullopt;
    value = value * 10 + digit_value(c);
    if (value > 20)
      return std::nullopt;
  }
  return value;
}

parsed_line parse_line(std::string_view line) {
  parsed_line out;
  std::string_view f[max_fields + 1];
  const std::size_t n = split_fields(line, f);

  if (n == 0) {
    out.kind = line_kind::blank;
    return out;
  }

  if (n == 4 && f[0] == "IAMAT") {
    auto loc = parse_location(f[2]);
    auto time = parse_time_ns(f[3]);
    if (loc && time) {
      out.kind = line_kind::iamat;
      out.iam.client_id = f[1];
      out.iam.where = *loc;
      out.iam.time_text = f[3];
      out.iam.time_ns = *time;
    }
    return out;
  }

  if (n == 4 && f[0] == "WHATSAT") {
    auto bound = parse_bound(f[3]);
    if (!bound)
      return out;
    auto radius = parse_radius_m(f[2]);
    if (!radius)
      return out;
    out.kind = line_kind::whatsat;
    out.wh.client_id = f[1];
    out.wh.radius_m = std::move(*radius);
    out.wh.bound = *bound;
    return out;
  }

  if (n == 6 && f[0] == "AT") {
    if (!is_timediff(f[2]))
      return out;
    auto loc = parse_location(f[4]);
    auto time = parse_time_ns(f[5]);
    if (loc && time) {
      out.kind = line_kind::at;
      out.at.server = f[1];
      out.at.client_id = f[3];
      out.at.where = *loc;
      out.at.time_ns = *time;
    }
    return out;
  }

  return out;
}

void append_timediff(std::string& out, int64_t diff_ns) {
  constexpr uint64_t ns_per_s = 1'000'000'000;
  // Magnitude in unsigned arithmetic, so that INT64_MIN is safe.
  const uint64_t magnitude = diff_ns < 0
                                 ? uint64_t{0} - static_cast<uint64_t>(diff_ns)
                                 : static_cast<uint64_t>(diff_ns);
  out.push_back(diff_ns < 0 ? '-' : '+');
  append_digits(out, magnitude / ns_per_s);

  char frac[10];
  frac[0] = '.';
  uint64_t rem = magnitude % ns_per_s;
  for (int i = 9; i >= 1; --i) {
    frac[i] = static_cast<char>('0' + rem % 10);
    rem /= 10;
  }
  out.append(frac, sizeof frac);
}

void append_at(std::string& out, std::string_view server, int64_t diff_ns,
               const iamat& msg) {
  out.reserve(out.size() + 3 + server.size() + 1 + 30 + 1 +
              msg.client_id.size() + 1 + msg.where.text.size() + 1 +
              msg.time_text.size());
  out.append("AT ");
  out.append(server);
  out.push_back(' ');
  append_timediff(out, diff_ns);
  out.push_back(' ');
  out.append(msg.client_id);
  out.push_back(' ');
  out.append(msg.where.text);
  out.push_back(' ');
  out.append(msg.time_text);
}

void append_invalid(std::string& out, std::string_view line) {
  line = strip_terminator(line);
  out.reserve(out.size() + 2 + line.size() + 1);
  out.append("? ");
  out.append(line);
  out.push_back('\n');
}

} // namespace herd::proto
