// The client protocol of shared/protocol.md as pure functions: parsing of
// IAMAT, WHATSAT and AT lines, and formatting of the replies. No sockets, no
// actors, no allocation beyond the output strings: this is what the unit tests
// hit hardest and what every line on the hot path goes through.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace herd::proto {

/// The six white-space bytes of the protocol: space, \t, \n, \v, \f, \r.
/// No locale and no Unicode space changes this.
constexpr bool is_space(unsigned char c) noexcept {
  return c == ' ' || (c >= '\t' && c <= '\r');
}

/// A location as sent by the client, kept verbatim, plus the two coordinates
/// as decimal text with their signs (the Places client drops a '+').
struct location {
  std::string_view text;      ///< e.g. "+34.068930-118.445127", verbatim
  std::string_view latitude;  ///< e.g. "+34.068930" (sign included)
  std::string_view longitude; ///< e.g. "-118.445127" (sign included)
};

/// `IAMAT <client> <location> <time>`; every view points into the line.
struct iamat {
  std::string_view client_id;
  location where;
  std::string_view time_text; ///< verbatim, echoed in the AT reply
  int64_t time_ns = 0;        ///< exact, extra fraction digits truncated
};

/// `WHATSAT <client> <radius km> <bound>`.
struct whatsat {
  std::string_view client_id;
  std::string radius_m; ///< radius times 1000 as exact decimal text
  int bound = 0;        ///< 0..20
};

/// `AT <server> <diff> <client> <location> <time>`, as flooded between peers.
struct at_line {
  std::string_view server;
  std::string_view client_id;
  location where;
  int64_t time_ns = 0;
};

enum class line_kind {
  blank,   ///< empty or only white space: no reply at all
  iamat,   ///< a well-formed IAMAT
  whatsat, ///< a well-formed WHATSAT (the client may still be unknown)
  at,      ///< a well-formed AT line (valid from authenticated peers only)
  invalid, ///< anything else: answered with "? <line>"
};

struct parsed_line {
  line_kind kind = line_kind::invalid;
  iamat iam;  ///< set when kind == iamat
  whatsat wh; ///< set when kind == whatsat
  at_line at; ///< set when kind == at
};

/// Parses one line without its terminator. A trailing '\r' (or any other
/// white space) is ignored, as is leading white space.
parsed_line parse_line(std::string_view line);

// -- field parsers (exposed for tests) -------------------------------------

/// POSIX seconds with an optional fraction of any length: digits, optionally
/// '.' and at least one digit. Exact: no binary float. Digits past the ninth
/// fraction digit are truncated. Fails on signs, exponents, overflow.
std::optional<int64_t> parse_time_ns(std::string_view text);

/// ISO 6709 `+DD.DDD-DDD.DDD`: explicit signs, latitude in [-90, 90] and
/// longitude in [-180, 180], compared exactly.
std::optional<location> parse_location(std::string_view text);

/// Radius in km, 0 < r <= 50, as plain decimal digits with an optional
/// fraction; returns metres as exact decimal text ("10" -> "10000",
/// "0.0105" -> "10.5").
std::optional<std::string> parse_radius_m(std::string_view text);

/// An integer bound 0..20 written with decimal digits only.
std::optional<int> parse_bound(std::string_view text);

// -- formatting ------------------------------------------------------------

/// Appends a time difference in ns as `+S.NNNNNNNNN` / `-S.NNNNNNNNN`: an
/// explicit sign ('+' for zero), exactly nine fraction digits, no exponent.
void append_timediff(std::string& out, int64_t diff_ns);

/// Appends `AT <server> <diff> <client> <location> <time>` (no newline).
void append_at(std::string& out, std::string_view server, int64_t diff_ns,
               const iamat& msg);

/// Appends `? <line>\n` with the line exactly as received minus terminator.
void append_invalid(std::string& out, std::string_view line);

/// Strips one line terminator ("\n" or "\r\n") from the end of `line`.
/// A lone '\r' is not a terminator and stays.
constexpr std::string_view strip_terminator(std::string_view line) noexcept {
  if (!line.empty() && line.back() == '\n') {
    line.remove_suffix(1);
    if (!line.empty() && line.back() == '\r')
      line.remove_suffix(1);
  }
  return line;
}

} // namespace herd::proto
