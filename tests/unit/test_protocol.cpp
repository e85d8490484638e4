#include "net/protocol.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

using namespace std::string_literals;
using namespace std::string_view_literals;
using herd::proto::line_kind;
using herd::proto::parse_line;

namespace {

std::string timediff(int64_t diff_ns) {
  std::string out;
  herd::proto::append_timediff(out, diff_ns);
  return out;
}

std::string invalid_reply(std::string_view line) {
  std::string out;
  herd::proto::append_invalid(out, line);
  return out;
}

std::string at_reply(std::string_view server, int64_t diff_ns,
                     std::string_view line) {
  auto p = parse_line(line);
  REQUIRE(p.kind == line_kind::iamat);
  std::string out;
  herd::proto::append_at(out, server, diff_ns, p.iam);
  return out;
}

line_kind kind_of(std::string_view line) {
  return parse_line(line).kind;
}

std::optional<std::string> radius(std::string_view text) {
  return herd::proto::parse_radius_m(text);
}

bool time_ok(std::string_view text) {
  return herd::proto::parse_time_ns(text).has_value();
}

bool location_ok(std::string_view text) {
  return herd::proto::parse_location(text).has_value();
}

bool bound_ok(std::string_view text) {
  return herd::proto::parse_bound(text).has_value();
}

constexpr std::string_view kiwi_iamat =
    "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";

} // namespace

// -- IAMAT -------------------------------------------------------------------

TEST_CASE("a well-formed IAMAT is parsed into views of the line") {
  auto p = parse_line(kiwi_iamat);
  REQUIRE(p.kind == line_kind::iamat);
  CHECK(p.iam.client_id == "kiwi.cs.ucla.edu");
  CHECK(p.iam.where.text == "+34.068930-118.445127");
  CHECK(p.iam.where.latitude == "+34.068930");
  CHECK(p.iam.where.longitude == "-118.445127");
  CHECK(p.iam.time_text == "1621464827.959498503");
  CHECK(p.iam.time_ns == 1621464827959498503);
  CHECK(p.iam.client_id.data() == kiwi_iamat.data() + 6);
}

TEST_CASE("the AT reply echoes the client's location and time verbatim") {
  CHECK(at_reply("Clark", 263873386, kiwi_iamat) ==
        "AT Clark +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 "
        "1621464827.959498503");
  CHECK(at_reply("Bona", 0, "IAMAT c +34.068930-118.445127 1621464827.5") ==
        "AT Bona +0.000000000 c +34.068930-118.445127 1621464827.5");
  CHECK(at_reply("Bona", 0, "IAMAT c +034.50000+000.10 0001.000000000000") ==
        "AT Bona +0.000000000 c +034.50000+000.10 0001.000000000000");
}

TEST_CASE("append_at appends to what the buffer already holds") {
  std::string out = "previous\n";
  auto p = parse_line("IAMAT a +1-1 5");
  REQUIRE(p.kind == line_kind::iamat);
  herd::proto::append_at(out, "S", -1500000000, p.iam);
  CHECK(out == "previous\nAT S -1.500000000 a +1-1 5");
}

// -- time differences --------------------------------------------------------

TEST_CASE("a time difference of zero is printed as +0.000000000") {
  CHECK(timediff(0) == "+0.000000000");
}

TEST_CASE("a positive time difference has a plus sign and nine digits") {
  CHECK(timediff(263873386) == "+0.263873386");
  CHECK(timediff(1500000000) == "+1.500000000");
  CHECK(timediff(1) == "+0.000000001");
  CHECK(timediff(10) == "+0.000000010");
  CHECK(timediff(1000000000) == "+1.000000000");
  CHECK(timediff(86400123456789) == "+86400.123456789");
}

TEST_CASE("a negative time difference has a minus sign and nine digits") {
  CHECK(timediff(-1) == "-0.000000001");
  CHECK(timediff(-263873386) == "-0.263873386");
  CHECK(timediff(-1500000000) == "-1.500000000");
  CHECK(timediff(-999999999) == "-0.999999999");
}

TEST_CASE("tiny and huge time differences never use an exponent") {
  CHECK(timediff(10000) == "+0.000010000");
  CHECK(timediff(-10000) == "-0.000010000");
  CHECK(timediff(std::numeric_limits<int64_t>::max()) ==
        "+9223372036.854775807");
  CHECK(timediff(std::numeric_limits<int64_t>::min()) ==
        "-9223372036.854775808");
  CHECK(timediff(1621464827959498503) == "+1621464827.959498503");
}

TEST_CASE("append_timediff appends instead of overwriting") {
  std::string out = "x";
  herd::proto::append_timediff(out, 5);
  herd::proto::append_timediff(out, -5);
  CHECK(out == "x+0.000000005-0.000000005");
}

// -- white space -------------------------------------------------------------

TEST_CASE("the six ASCII white-space bytes separate fields") {
  for (char sep : {' ', '\t', '\v', '\f', '\r', '\n'}) {
    std::string line = "IAMAT"s + sep + "c" + sep + "+1+1" + sep + "7";
    auto p = parse_line(line);
    INFO("separator byte " << static_cast<int>(sep));
    REQUIRE(p.kind == line_kind::iamat);
    CHECK(p.iam.client_id == "c");
    CHECK(p.iam.time_ns == 7000000000);
  }
}

TEST_CASE("runs of mixed white space count as one separator") {
  auto p = parse_line("IAMAT \t\v\f\r  kiwi\t\t+1+1 \r 7");
  REQUIRE(p.kind == line_kind::iamat);
  CHECK(p.iam.client_id == "kiwi");
  CHECK(p.iam.where.text == "+1+1");
}

TEST_CASE("leading and trailing white space is ignored") {
  auto p = parse_line(" \t IAMAT kiwi +1+1 7 \t\r");
  REQUIRE(p.kind == line_kind::iamat);
  CHECK(p.iam.client_id == "kiwi");
  CHECK(p.iam.time_text == "7");
}

TEST_CASE("a line ending in CR or CRLF parses like one without") {
  auto crlf = parse_line("IAMAT kiwi +1+1 7\r\n");
  REQUIRE(crlf.kind == line_kind::iamat);
  CHECK(crlf.iam.time_text == "7");
  auto cr = parse_line("WHATSAT kiwi 10 5\r");
  REQUIRE(cr.kind == line_kind::whatsat);
  CHECK(cr.wh.bound == 5);
}

TEST_CASE("a no-break space U+00A0 does not separate fields") {
  auto p = parse_line("IAMAT kiwi\xC2\xA0pie +1+1 7");
  REQUIRE(p.kind == line_kind::iamat);
  CHECK(p.iam.client_id == "kiwi\xC2\xA0pie");
  CHECK(kind_of("IAMAT\xC2\xA0kiwi +1+1 7") == line_kind::invalid);
}

TEST_CASE("an ideographic space U+3000 does not separate fields") {
  auto p = parse_line("IAMAT \xE3\x80\x80kiwi\xE3\x80\x80 +1+1 7");
  REQUIRE(p.kind == line_kind::iamat);
  CHECK(p.iam.client_id == "\xE3\x80\x80kiwi\xE3\x80\x80");
  CHECK(kind_of("IAMAT kiwi +1+1\xE3\x80\x80 7") == line_kind::invalid);
}

TEST_CASE("other control bytes do not separate fields") {
  auto p = parse_line("IAMAT a\x1F\x7F\x1B"
                      "b +1+1 7");
  REQUIRE(p.kind == line_kind::iamat);
  CHECK(p.iam.client_id == "a\x1F\x7F\x1B"
                           "b");
}

TEST_CASE("is_space accepts exactly six bytes") {
  int count = 0;
  for (int c = 0; c < 256; ++c)
    if (herd::proto::is_space(static_cast<unsigned char>(c)))
      ++count;
  CHECK(count == 6);
  CHECK_FALSE(herd::proto::is_space(0x00));
  CHECK_FALSE(herd::proto::is_space(0x85));
  CHECK_FALSE(herd::proto::is_space(0xA0));
}

// -- client IDs --------------------------------------------------------------

TEST_CASE("a client ID with NUL bytes is kept byte for byte") {
  constexpr auto line = "IAMAT a\0b\0 +1+1 7"sv;
  auto p = parse_line(line);
  REQUIRE(p.kind == line_kind::iamat);
  CHECK(p.iam.client_id == "a\0b\0"sv);
  CHECK(p.iam.client_id.size() == 4);
  std::string out;
  herd::proto::append_at(out, "S", 0, p.iam);
  CHECK(out == "AT S +0.000000000 a\0b\0 +1+1 7"sv);
}

TEST_CASE("an emoji client ID is echoed byte for byte") {
  constexpr auto id = "\xF0\x9F\xA5\x9D\xF0\x9F\x8D\x8D"sv; // kiwi, pineapple
  std::string line = "IAMAT "s + std::string(id) + " +1+1 7";
  std::string expected = "AT S +0.000000000 "s + std::string(id) + " +1+1 7";
  CHECK(at_reply("S", 0, line) == expected);
}

TEST_CASE("an invalid UTF-8 client ID is echoed byte for byte") {
  constexpr auto id = "\xFF\xFE\xC0\x80\xED\xA0\x80\x80"sv;
  std::string line = "IAMAT "s + std::string(id) + " +1+1 7";
  std::string expected = "AT S +0.000000000 "s + std::string(id) + " +1+1 7";
  CHECK(at_reply("S", 0, line) == expected);
  std::string whatsat = "WHATSAT "s + std::string(id) + " 1 1";
  auto w = parse_line(whatsat);
  REQUIRE(w.kind == line_kind::whatsat);
  CHECK(w.wh.client_id == id);
}

// -- commands and field counts -----------------------------------------------

TEST_CASE("empty and white-space-only lines are blank") {
  CHECK(kind_of("") == line_kind::blank);
  CHECK(kind_of(" ") == line_kind::blank);
  CHECK(kind_of("\r") == line_kind::blank);
  CHECK(kind_of("\r\n") == line_kind::blank);
  CHECK(kind_of(" \t\v\f\r\n") == line_kind::blank);
}

TEST_CASE("a line of only non-ASCII space is invalid, not blank") {
  CHECK(kind_of("\xC2\xA0") == line_kind::invalid);
  CHECK(kind_of("\xE3\x80\x80") == line_kind::invalid);
  CHECK(kind_of("\0"sv) == line_kind::invalid);
}

TEST_CASE("IAMAT with missing or extra fields is invalid") {
  CHECK(kind_of("IAMAT") == line_kind::invalid);
  CHECK(kind_of("IAMAT kiwi") == line_kind::invalid);
  CHECK(kind_of("IAMAT kiwi +1+1") == line_kind::invalid);
  CHECK(kind_of("IAMAT kiwi +1+1 7 extra") == line_kind::invalid);
  CHECK(kind_of("IAMAT kiwi +1+1 7 8 9 10 11") == line_kind::invalid);
  CHECK(kind_of("IAMAT kiwi +1+1 7") == line_kind::iamat);
}

TEST_CASE("WHATSAT with missing or extra fields is invalid") {
  CHECK(kind_of("WHATSAT") == line_kind::invalid);
  CHECK(kind_of("WHATSAT kiwi") == line_kind::invalid);
  CHECK(kind_of("WHATSAT kiwi 10") == line_kind::invalid);
  CHECK(kind_of("WHATSAT kiwi 10 5 5") == line_kind::invalid);
  CHECK(kind_of("WHATSAT kiwi 10 5") == line_kind::whatsat);
}

TEST_CASE("AT with missing or extra fields is invalid") {
  CHECK(kind_of("AT") == line_kind::invalid);
  CHECK(kind_of("AT Clark +0.000000001 kiwi +1+1") == line_kind::invalid);
  CHECK(kind_of("AT Clark +0.000000001 kiwi +1+1 7 x") == line_kind::invalid);
  CHECK(kind_of("AT Clark kiwi +1+1 7") == line_kind::invalid);
  CHECK(kind_of("AT Clark +0.000000001 kiwi +1+1 7") == line_kind::at);
}

TEST_CASE("commands are case sensitive and must match exactly") {
  CHECK(kind_of("iamat kiwi +1+1 7") == line_kind::invalid);
  CHECK(kind_of("Iamat kiwi +1+1 7") == line_kind::invalid);
  CHECK(kind_of("whatsat kiwi 10 5") == line_kind::invalid);
  CHECK(kind_of("at Clark +0.000000001 kiwi +1+1 7") == line_kind::invalid);
  CHECK(kind_of("IAMATX kiwi +1+1 7") == line_kind::invalid);
  CHECK(kind_of("IAMA kiwi +1+1 7") == line_kind::invalid);
  CHECK(kind_of("HELLO kiwi +1+1 7") == line_kind::invalid);
}

TEST_CASE("IAMAT with a bad location or time is invalid") {
  CHECK(kind_of("IAMAT kiwi 34.068930-118.445127 7") == line_kind::invalid);
  CHECK(kind_of("IAMAT kiwi +91-118 7") == line_kind::invalid);
  CHECK(kind_of("IAMAT kiwi +1+1 -7") == line_kind::invalid);
  CHECK(kind_of("IAMAT kiwi +1+1 1e9") == line_kind::invalid);
  CHECK(kind_of("IAMAT kiwi 7 +1+1") == line_kind::invalid);
}

TEST_CASE("WHATSAT with a bad radius or bound is invalid") {
  CHECK(kind_of("WHATSAT kiwi 0 5") == line_kind::invalid);
  CHECK(kind_of("WHATSAT kiwi 51 5") == line_kind::invalid);
  CHECK(kind_of("WHATSAT kiwi 10 21") == line_kind::invalid);
  CHECK(kind_of("WHATSAT kiwi 10 -1") == line_kind::invalid);
  CHECK(kind_of("WHATSAT kiwi 5 10") == line_kind::whatsat);
}

TEST_CASE("a well-formed WHATSAT carries radius in metres and the bound") {
  auto p = parse_line("WHATSAT kiwi.cs.ucla.edu 10 5");
  REQUIRE(p.kind == line_kind::whatsat);
  CHECK(p.wh.client_id == "kiwi.cs.ucla.edu");
  CHECK(p.wh.radius_m == "10000");
  CHECK(p.wh.bound == 5);
  auto q = parse_line("WHATSAT k 0.0105 0");
  REQUIRE(q.kind == line_kind::whatsat);
  CHECK(q.wh.radius_m == "10.5");
  CHECK(q.wh.bound == 0);
}

// -- radius ------------------------------------------------------------------

TEST_CASE("radius is converted to metres as exact decimal text") {
  CHECK(radius("10") == "10000"s);
  CHECK(radius("0.5") == "500"s);
  CHECK(radius("1.2345") == "1234.5"s);
  CHECK(radius("0.0001") == "0.1"s);
  CHECK(radius("0.0105") == "10.5"s);
  CHECK(radius("50") == "50000"s);
  CHECK(radius("007") == "7000"s);
  CHECK(radius("1.5000") == "1500"s);
  CHECK(radius("0.001") == "1"s);
  CHECK(radius("12.30405060") == "12304.0506"s);
}

TEST_CASE("radius accepts the limits 0 < r <= 50 exactly") {
  CHECK(radius("50") == "50000"s);
  CHECK(radius("50.000") == "50000"s);
  CHECK(radius("050.0") == "50000"s);
  CHECK(radius("0.000000001") == "0.000001"s);
  CHECK(radius("49.9999") == "49999.9"s);
  CHECK_FALSE(radius("0"));
  CHECK_FALSE(radius("0.000"));
  CHECK_FALSE(radius("000"));
  CHECK_FALSE(radius("50.0001"));
  CHECK_FALSE(radius("50.000000000001"));
  CHECK_FALSE(radius("51"));
  CHECK_FALSE(radius("100"));
  CHECK_FALSE(radius("99999999999999999999999"));
  CHECK_FALSE(radius("4294967306"));
}

TEST_CASE("radius rejects anything but plain decimal digits") {
  for (auto bad : {"", "1e1", "nan", "NaN", "inf", "-5", "+5", "0x10", " 5",
                   "5 ", "5.", ".5", "1.2.3", "1,5", "\xEF\xBC\x95"}) {
    INFO("radius " << bad);
    CHECK_FALSE(radius(bad));
  }
}

// -- bound -------------------------------------------------------------------

TEST_CASE("bound accepts decimal integers from 0 to 20") {
  CHECK(herd::proto::parse_bound("0") == 0);
  CHECK(herd::proto::parse_bound("00") == 0);
  CHECK(herd::proto::parse_bound("5") == 5);
  CHECK(herd::proto::parse_bound("20") == 20);
  CHECK(herd::proto::parse_bound("020") == 20);
  CHECK(herd::proto::parse_bound("0000000000000000000000019") == 19);
}

TEST_CASE("bound rejects out-of-range values and non-numbers") {
  for (auto bad : {"", "21", "100", "-1", "+1", "1.0", "1e1", "0x10", " 5",
                   "nan", "inf", "99999999999999999999999999999999999",
                   "18446744073709551617", "4294967297"}) {
    INFO("bound " << bad);
    CHECK_FALSE(bound_ok(bad));
  }
}

// -- locations ---------------------------------------------------------------

TEST_CASE("a location splits into signed latitude and longitude") {
  auto loc = herd::proto::parse_location("-33.8670522+151.1957362");
  REQUIRE(loc);
  CHECK(loc->text == "-33.8670522+151.1957362");
  CHECK(loc->latitude == "-33.8670522");
  CHECK(loc->longitude == "+151.1957362");
  auto ints = herd::proto::parse_location("+1-2");
  REQUIRE(ints);
  CHECK(ints->latitude == "+1");
  CHECK(ints->longitude == "-2");
}

TEST_CASE("coordinates on the boundary are accepted") {
  CHECK(location_ok("+90+180"));
  CHECK(location_ok("-90-180"));
  CHECK(location_ok("+90.000000-180.0"));
  CHECK(location_ok("-90.0+180.000000000"));
  CHECK(location_ok("+0-0"));
  CHECK(location_ok("-0.0+0.0"));
  CHECK(location_ok("+034.5+0000179.99"));
  CHECK(location_ok("+89.999999999+179.999999999"));
}

TEST_CASE("coordinates just past the boundary are rejected") {
  CHECK_FALSE(location_ok("+90.0000001+0"));
  CHECK_FALSE(location_ok("-90.0000001+0"));
  CHECK_FALSE(location_ok("+0+180.00001"));
  CHECK_FALSE(location_ok("+0-180.00001"));
  CHECK_FALSE(location_ok("+91+0"));
  CHECK_FALSE(location_ok("+0+181"));
  CHECK_FALSE(location_ok("+900+0"));
  CHECK_FALSE(location_ok("+0+1800"));
  CHECK_FALSE(location_ok("+99999999999999999999999+0"));
  CHECK_FALSE(location_ok("+4294967341+0"));
  CHECK_FALSE(location_ok("+0-18446744073709551616"));
}

TEST_CASE("malformed locations are rejected") {
  for (auto bad : {"",
                   "+",
                   "+1",
                   "+1+",
                   "34.068930-118.445127",
                   "+34.068930118.445127",
                   "+34.068930 -118.445127",
                   "+34.068930,-118.445127",
                   "+34.-118.4",
                   "+34.0-118.",
                   "+.5+1",
                   "+1+.5",
                   "++1+1",
                   "+1++1",
                   "+1+1+1",
                   "+1-1x",
                   "+1e1+1",
                   "+nan+1",
                   "+inf+1",
                   "+0x10+1",
                   "+1.5.5+1",
                   "\xE2\x88\x92"
                   "1+1"}) {
    INFO("location " << bad);
    CHECK_FALSE(location_ok(bad));
  }
}

// -- times -------------------------------------------------------------------

TEST_CASE("times are exact integer nanoseconds") {
  using herd::proto::parse_time_ns;
  CHECK(parse_time_ns("1621464827") == 1621464827000000000);
  CHECK(parse_time_ns("1621464827.5") == 1621464827500000000);
  CHECK(parse_time_ns("1621464827.959498503") == 1621464827959498503);
  CHECK(parse_time_ns("0") == 0);
  CHECK(parse_time_ns("0.000000001") == 1);
  CHECK(parse_time_ns("000012.000") == 12000000000);
}

TEST_CASE("fraction digits past the ninth are truncated, not rounded") {
  using herd::proto::parse_time_ns;
  CHECK(parse_time_ns("1.123456789999") == 1123456789);
  CHECK(parse_time_ns("0.0000000009") == 0);
  CHECK(parse_time_ns("1621464827.959498503999") == 1621464827959498503);
}

TEST_CASE("the largest representable time is accepted and one past fails") {
  using herd::proto::parse_time_ns;
  CHECK(parse_time_ns("9223372036.854775807") ==
        std::numeric_limits<int64_t>::max());
  CHECK(parse_time_ns("9223372036.8547758079") ==
        std::numeric_limits<int64_t>::max());
  CHECK(parse_time_ns("09223372036") == 9223372036000000000);
  CHECK_FALSE(parse_time_ns("9223372036.854775808"));
  CHECK_FALSE(parse_time_ns("9223372037"));
  CHECK_FALSE(parse_time_ns("18446744073709551616"));
  CHECK_FALSE(parse_time_ns("99999999999999999999999999999"));
}

TEST_CASE("malformed times are rejected") {
  for (auto bad :
       {"", "1.", ".5", ".", "-1", "+1", "1e9", "1E9", "1.5e3", " 1", "1 ",
        "1.2.3", "nan", "inf", "0x10", "1,5", "\xEF\xBC\x91"}) {
    INFO("time " << bad);
    CHECK_FALSE(time_ok(bad));
  }
}

// -- AT lines between peers
// ----------------------------------------------------

TEST_CASE("an AT line from a peer is parsed into server, client and place") {
  auto p = parse_line("AT Clark +0.263873386 kiwi.cs.ucla.edu "
                      "+34.068930-118.445127 1621464827.959498503");
  REQUIRE(p.kind == line_kind::at);
  CHECK(p.at.server == "Clark");
  CHECK(p.at.client_id == "kiwi.cs.ucla.edu");
  CHECK(p.at.where.text == "+34.068930-118.445127");
  CHECK(p.at.where.latitude == "+34.068930");
  CHECK(p.at.where.longitude == "-118.445127");
  CHECK(p.at.time_ns == 1621464827959498503);
}

TEST_CASE("an AT line accepts negative and large time differences") {
  CHECK(kind_of("AT S -0.000000001 c +1+1 7") == line_kind::at);
  CHECK(kind_of("AT S -1621464827.959498503 c +1+1 7") == line_kind::at);
  CHECK(kind_of("AT S +0.000000000 c +1+1 7") == line_kind::at);
}

TEST_CASE("an AT line with a malformed time difference is invalid") {
  for (auto diff :
       {"0.000000001", "10.000000001", "*0.000000001", "+0.00000001",
        "+0.0000000001", "+0", "+.000000001", "+0.", "1e-05", "+1e-05", "-1.5",
        "+0.00000000x", "+a.000000000", "+-0.000000001", "+0,000000001"}) {
    std::string line = "AT S "s + diff + " c +1+1 7";
    INFO(line);
    CHECK(kind_of(line) == line_kind::invalid);
  }
}

TEST_CASE("an AT line with a bad location or time is invalid") {
  CHECK(kind_of("AT S +0.000000001 c +91+1 7") == line_kind::invalid);
  CHECK(kind_of("AT S +0.000000001 c +1+1 7.") == line_kind::invalid);
  CHECK(kind_of("AT S +0.000000001 c +1+1 -7") == line_kind::invalid);
}

TEST_CASE("an IAMAT survives the round trip through an AT line") {
  auto in = parse_line(kiwi_iamat);
  REQUIRE(in.kind == line_kind::iamat);
  for (int64_t diff : {int64_t{0}, int64_t{263873386}, int64_t{-1},
                       int64_t{-1500000000}, int64_t{10000}}) {
    std::string out;
    herd::proto::append_at(out, "Campbell", diff, in.iam);
    auto back = parse_line(out);
    INFO(out);
    REQUIRE(back.kind == line_kind::at);
    CHECK(back.at.server == "Campbell");
    CHECK(back.at.client_id == in.iam.client_id);
    CHECK(back.at.where.text == in.iam.where.text);
    CHECK(back.at.where.latitude == in.iam.where.latitude);
    CHECK(back.at.where.longitude == in.iam.where.longitude);
    CHECK(back.at.time_ns == in.iam.time_ns);
  }
}

TEST_CASE("an odd client ID survives the round trip through an AT line") {
  constexpr auto line = "IAMAT \xF0\x9F\xA5\x9D\0\xFF\xC2\xA0x +90-180 7.10"sv;
  auto in = parse_line(line);
  REQUIRE(in.kind == line_kind::iamat);
  std::string out;
  herd::proto::append_at(out, "Jaquez", -7, in.iam);
  auto back = parse_line(out);
  REQUIRE(back.kind == line_kind::at);
  CHECK(back.at.client_id == "\xF0\x9F\xA5\x9D\0\xFF\xC2\xA0x"sv);
  CHECK(back.at.where.text == "+90-180");
  CHECK(back.at.time_ns == 7100000000);
}

// -- invalid replies
// -----------------------------------------------------------

TEST_CASE("an invalid line is echoed after a question mark") {
  CHECK(invalid_reply("HELLO world") == "? HELLO world\n");
  CHECK(invalid_reply("") == "? \n");
}

TEST_CASE("an invalid reply drops one LF or CRLF terminator only") {
  CHECK(invalid_reply("HELLO\n") == "? HELLO\n");
  CHECK(invalid_reply("HELLO\r\n") == "? HELLO\n");
  CHECK(invalid_reply("HELLO\n\n") == "? HELLO\n\n");
  CHECK(invalid_reply("HELLO\r\r\n") == "? HELLO\r\n");
}

TEST_CASE("an invalid reply keeps inner and leading white space verbatim") {
  CHECK(invalid_reply("  iamat\tkiwi  +1+1 7 \n") ==
        "?   iamat\tkiwi  +1+1 7 \n");
  CHECK(invalid_reply("a\0b\xFF\n"sv) == "? a\0b\xFF\n"sv);
}

TEST_CASE("append_invalid appends to what the buffer already holds") {
  std::string out = "AT x\n";
  herd::proto::append_invalid(out, "bad\n");
  CHECK(out == "AT x\n? bad\n");
}
