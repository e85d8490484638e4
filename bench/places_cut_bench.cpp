// places-cut-bench: what cutting a Places body to the bound costs, against
// the obvious alternative measured in the same run: parse the body into a
// Boost.JSON DOM, shorten "results", serialize it again.
//
//   places-cut-bench FILE [--bound N] [--seconds S]
//
// FILE is a legacy Nearby Search body (scripts/bench.sh fetches one from
// places-stub). Each method runs for about S seconds (default 2) after a
// warm-up; both must give the same JSON value. Prints a table and one
// RESULT line (JSON).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

#include <boost/json.hpp>

#include "net/places_json.hpp"

namespace {

namespace json = boost::json;
using clock_type = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "places-cut-bench: %s\n", what.c_str());
  std::exit(2);
}

std::string dom_cut(std::string_view body, std::size_t bound) {
  json::value v = json::parse(body);
  auto& results = v.as_object().at("results").as_array();
  if (results.size() > bound)
    results.resize(bound);
  return json::serialize(v);
}

/// Runs `f` for about `seconds`; returns nanoseconds per call.
template<class F> double time_per_call(F&& f, double seconds) {
  for (int i = 0; i < 50; ++i) // warm-up
    f();
  std::size_t calls = 0;
  auto start = clock_type::now();
  auto deadline = start + std::chrono::duration<double>(seconds);
  auto now = start;
  while (now < deadline) {
    for (int i = 0; i < 20; ++i)
      f();
    calls += 20;
    now = clock_type::now();
  }
  return std::chrono::duration<double, std::nano>(now - start).count() /
         static_cast<double>(calls);
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2)
    die("usage: places-cut-bench FILE [--bound N] [--seconds S]");
  std::string file = argv[1];
  int bound = 5;
  double seconds = 2.0;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string_view opt = argv[i];
    if (opt == "--bound")
      bound = std::atoi(argv[i + 1]);
    else if (opt == "--seconds")
      seconds = std::atof(argv[i + 1]);
    else
      die("unknown option " + std::string(opt));
  }
  if (bound < 0 || seconds <= 0)
    die("--bound must be >= 0 and --seconds > 0");
  std::ifstream in(file, std::ios::binary);
  if (!in)
    die("cannot read " + file);
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string body = buf.str();

  std::string why;
  auto cut = herd::places::cut_results(body, bound, why);
  if (!cut)
    die(file + ": " + why);
  // Both methods must agree on the value (not the bytes: the cut keeps
  // Google's formatting, the DOM does not).
  if (json::parse(*cut) != json::parse(dom_cut(body, bound)))
    die("the cut and the DOM disagree");

  std::size_t sink = 0;
  double cut_ns = time_per_call(
      [&] {
        auto r = herd::places::cut_results(body, bound, why);
        sink += r ? r->size() : 0;
      },
      seconds);
  double dom_ns = time_per_call(
      [&] { sink += dom_cut(body, static_cast<std::size_t>(bound)).size(); },
      seconds);
  if (sink == 0)
    die("nothing was produced");

  const double bytes = static_cast<double>(body.size());
  std::printf("body: %zu bytes, bound %d\n", body.size(), bound);
  std::printf("%-28s %12s %10s\n", "", "us/body", "ns/byte");
  std::printf("%-28s %12.2f %10.3f\n", "cut (validating scan)", cut_ns / 1e3,
              cut_ns / bytes);
  std::printf("%-28s %12.2f %10.3f\n", "Boost.JSON parse+serialize",
              dom_ns / 1e3, dom_ns / bytes);
  std::printf("DOM / cut: %.2f\n", dom_ns / cut_ns);
  std::printf("RESULT {\"body_bytes\":%zu,\"bound\":%d,\"cut_us\":%.3f,"
              "\"dom_us\":%.3f,\"dom_over_cut\":%.3f}\n",
              body.size(), bound, cut_ns / 1e3, dom_ns / 1e3, dom_ns / cut_ns);
  return 0;
}
