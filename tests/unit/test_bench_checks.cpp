// herd-bench counts only replies these checks accept: they must accept
// every valid reply and refuse broken ones, wherever the interesting bytes
// fall relative to the 16-byte steps of the fast path.
#include "bench/reply_check.hpp"

#include <random>
#include <string>
#include <string_view>

#include <catch2/catch.hpp>

using namespace herd::bench;

namespace {

/// The byte-at-a-time check the fast one replaced: the reference.
bool reference_check_json(std::string_view body) {
  if (body.empty() || body[0] != '{')
    return false;
  std::string stack;
  bool in_string = false, escaped = false, closed = false;
  for (char c : body) {
    if (closed) {
      if (!herd::proto::is_space(static_cast<unsigned char>(c)))
        return false;
      continue;
    }
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (stack.size() == 256)
        return false;
      stack += c == '{' ? '}' : ']';
    } else if (c == '}' || c == ']') {
      if (stack.empty() || stack.back() != c)
        return false;
      stack.pop_back();
      if (stack.empty())
        closed = true;
    }
  }
  return closed && body.find("\"status\"") != std::string_view::npos;
}

} // namespace

TEST_CASE("check_json accepts Places bodies and refuses broken ones",
          "[bench]") {
  CHECK(check_json(R"({"status":"OK"})"));
  CHECK(check_json("{\"results\":[{\"name\":\"a]}\\\"[{\"}],\"status\":\"OK\"}"
                   " \n"));
  CHECK(check_json(R"({"a":"\\","b":["{"],"status":"ZERO_RESULTS"})"));

  CHECK_FALSE(check_json(""));
  CHECK_FALSE(check_json(R"(["status"])"));
  CHECK_FALSE(check_json(R"({"status":"OK")"));         // not closed
  CHECK_FALSE(check_json(R"({"status":"OK"]})"));       // mismatched
  CHECK_FALSE(check_json(R"({"status":"OK"} x)"));      // trailing bytes
  CHECK_FALSE(check_json(R"({"results":[]})"));         // no status
  CHECK_FALSE(check_json(R"({"status":"OK\"})"));       // string not closed
  CHECK_FALSE(check_json("{\"status\":\"OK\\"));        // ends in an escape
  CHECK_FALSE(check_json(std::string(300, '[') + "}")); // too deep
}

TEST_CASE("check_json agrees with a byte-at-a-time check at every offset",
          "[bench]") {
  // Quotes, escapes and brackets at each position of a 16-byte step, inside
  // and outside strings, in valid and broken bodies.
  const std::string fillers[] = {"", "x", "xxxxxxx", "xxxxxxxxxxxxxxx",
                                 std::string(33, 'y')};
  const std::string middles[] = {
      R"("a\"b")", R"("\\")", R"("]}")", R"(["x",{"y":[]}])",
      R"("\\\"")", R"("a\")", R"(]})",   R"({[)",
      R"("\)"};
  for (auto& pad : fillers)
    for (auto& mid : middles)
      for (auto& tail : fillers) {
        std::string body = "{\"" + pad + "\":" + mid + ",\"" + tail +
                           "\":1,\"status\":\"OK\"}";
        INFO(body);
        CHECK(check_json(body) == reference_check_json(body));
        for (size_t cut = 0; cut < body.size(); ++cut)
          CHECK(check_json(std::string_view(body).substr(0, cut)) ==
                reference_check_json(std::string_view(body).substr(0, cut)));
      }

  // Random bodies over the bytes that matter.
  std::mt19937 rng(7);
  const char alphabet[] = "{}[]\"\\ a:,";
  std::uniform_int_distribution<int> pick(0, sizeof alphabet - 2);
  std::uniform_int_distribution<int> len(1, 80);
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string body = "{";
    for (int k = len(rng); k > 0; --k)
      body += alphabet[pick(rng)];
    body += i % 2 == 0 ? "\"status\"}" : "}";
    INFO(body);
    bool ok = reference_check_json(body);
    accepted += ok;
    REQUIRE(check_json(body) == ok);
  }
  CHECK(accepted > 0); // the random bodies reach the accepting path too
}

TEST_CASE("reply_length finds a reply's end, also when it arrives in pieces",
          "[bench]") {
  const std::string iamat = "AT Clark +0.1 bench-1 +1+2 3.0\n";
  CHECK(reply_length(iamat.data(), iamat.size(), false) == iamat.size());
  CHECK(reply_length(iamat.data(), iamat.size() - 1, false) == 0);

  const std::string whatsat = "AT Clark +0.1 bench-1 +1+2 "
                              "3.0\n{\"a\":\"x\ny\",\n\"status\":\"OK\"}\n\n";
  size_t line = 0;
  CHECK(reply_length(whatsat.data(), whatsat.size(), true, &line) ==
        whatsat.size());
  CHECK(line == iamat.size() - 1);
  // Followed by the next reply: the end is still the first empty line.
  std::string two = whatsat + iamat;
  CHECK(reply_length(two.data(), two.size(), true) == whatsat.size());
  // A '?' reply is one line even where JSON replies are expected.
  CHECK(reply_length("? x\n", 4, true) == 4);

  // Every split into two pieces, resuming from what the first call scanned.
  for (size_t cut = 0; cut <= whatsat.size(); ++cut) {
    size_t scanned = 0;
    size_t first = reply_length(whatsat.data(), cut, true, nullptr, &scanned);
    INFO("cut at " << cut);
    if (cut < whatsat.size()) {
      CHECK(first == 0);
      CHECK(scanned <= cut);
    }
    CHECK(reply_length(whatsat.data(), whatsat.size(), true, nullptr,
                       &scanned) == whatsat.size());
  }
  // Byte by byte.
  size_t scanned = 0, found = 0;
  for (size_t n = 1; n <= whatsat.size() && found == 0; ++n)
    found = reply_length(whatsat.data(), n, true, nullptr, &scanned);
  CHECK(found == whatsat.size());
}
