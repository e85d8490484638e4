// WHATSAT against a real herd-node in front of places-stub: the reply's
// framing, the stored AT line, request order, HTTP and HTTPS, and every way
// the upstream can fail.
#include <catch2/catch.hpp>

#include "harness.hpp"

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace e2e;

namespace {

const std::string kiwi = "kiwi.cs.ucla.edu";
const std::string ucla = "+34.068930-118.445127";
const std::string old_time = "1621464827.959498503";

/// One node "Alpha" whose Places endpoint is a places-stub.
struct stubbed_node {
  temp_dir dir;
  std::optional<places_stub> stub;
  std::optional<herd> h;

  explicit stubbed_node(const stub_options& opts = with_results(60),
                        const std::function<void(config_spec&)>& tweak = {},
                        const launch_options& launch = {}) {
    stub.emplace(dir, opts);
    auto spec = single_node_config(stub->endpoint());
    if (tweak)
      tweak(spec);
    h.emplace(dir, spec);
    h->start("Alpha", launch);
  }

  static stub_options with_results(int n) {
    stub_options o;
    o.results = n;
    return o;
  }

  std::uint16_t port() const { return h->port("Alpha"); }
};

/// Sends an IAMAT and returns its AT reply line (with '\n').
std::string locate(client& c, const std::string& id,
                   const std::string& location = ucla,
                   const std::string& time = old_time) {
  c.send(iamat(id, location, time));
  auto reply = c.read_line();
  INFO("reply: \"" << printable(reply) << "\"");
  REQUIRE(reply.rfind("AT Alpha ", 0) == 0);
  REQUIRE(contains(reply, " " + id + " " + location + " " + time + "\n"));
  return reply;
}

/// Reads one WHATSAT reply and requires its framing to be right.
whatsat_reply read_whatsat(client& c, milliseconds timeout = default_wait) {
  auto bytes = c.read_reply_block(timeout);
  auto r = parse_whatsat_reply(bytes);
  INFO("reply: \"" << printable(bytes) << "\"");
  REQUIRE(r.problem == "");
  return r;
}

/// What the stub answers directly for the search, with results cut.
boost::json::value direct_answer(std::uint16_t stub_port,
                                 const std::string& location,
                                 const std::string& radius_m,
                                 std::size_t bound) {
  int status = 0;
  auto body = http_get(stub_port,
                       std::string(places_path) + "?location=" + location +
                           "&radius=" + radius_m + "&key=" + test_api_key,
                       status);
  REQUIRE(status == 200);
  auto v = boost::json::parse(body);
  auto& results = v.at("results").as_array();
  if (results.size() > bound)
    results.resize(bound);
  return v;
}

/// The shape of an answer after an upstream failure.
void check_unknown_error(const whatsat_reply& r, const std::string& at_line) {
  INFO("JSON: " << r.json_text);
  CHECK(r.at_line + "\n" == at_line);
  CHECK(r.status() == "UNKNOWN_ERROR");
  CHECK(r.results().empty());
  auto* msg = r.json.as_object().if_contains("error_message");
  REQUIRE(msg != nullptr);
  REQUIRE(msg->is_string());
  CHECK(!msg->as_string().empty());
  CHECK_FALSE(contains(r.json_text, test_api_key));
}

/// Runs one WHATSAT against a failing upstream; checks the reply and that
/// the key appears neither in it nor in the log. Returns the reply.
whatsat_reply failing_upstream(stubbed_node& n,
                               milliseconds timeout = default_wait) {
  client c(n.port());
  auto at = locate(c, kiwi);
  c.send("WHATSAT " + kiwi + " 10 5\n");
  auto r = read_whatsat(c, timeout);
  check_unknown_error(r, at);
  // The connection stays usable.
  locate(c, "after.example");
  auto status = n.h->stop("Alpha");
  CHECK(describe(status) ==
        describe(exit_status{true, 0, 0, false, status.elapsed}));
  auto log = n.h->log_text("Alpha");
  CHECK_FALSE(contains(log, test_api_key));
  return r;
}

} // namespace

TEST_CASE("a WHATSAT returns the stored AT line, the Places JSON cut to the "
          "bound, and an empty line") {
  stubbed_node n;
  client c(n.port());
  auto at = locate(c, kiwi);
  c.send("WHATSAT " + kiwi + " 10 5\n");
  auto bytes = c.read_reply_block();
  INFO("reply: \"" << printable(bytes) << "\"");
  REQUIRE(bytes.rfind(at, 0) == 0);
  CHECK(bytes[at.size()] == '{');
  auto r = parse_whatsat_reply(bytes);
  REQUIRE(r.problem == "");
  CHECK(r.at_line + "\n" == at);
  CHECK(r.status() == "OK");
  CHECK(r.results().size() == 5);
  CHECK(r.json.as_object().contains("next_page_token"));
  CHECK(r.json ==
        direct_answer(n.stub->port(), "34.068930,-118.445127", "10000", 5));
  // Nothing else follows.
  c.shutdown_write();
  CHECK(printable(c.read_until_closed()).empty());
}

TEST_CASE("the radius reaches upstream in metres") {
  stubbed_node n;
  client c(n.port());
  locate(c, kiwi);
  c.send("WHATSAT " + kiwi + " 0.5 20\n");
  auto r = read_whatsat(c);
  CHECK(r.json ==
        direct_answer(n.stub->port(), "34.068930,-118.445127", "500", 20));
  c.send("WHATSAT " + kiwi + " 50 3\n");
  r = read_whatsat(c);
  CHECK(r.json ==
        direct_answer(n.stub->port(), "34.068930,-118.445127", "50000", 3));
}

TEST_CASE("a bound of 0 gives no results and a bound of 20 gives twenty") {
  stubbed_node n;
  client c(n.port());
  auto at = locate(c, kiwi);
  c.send("WHATSAT " + kiwi + " 10 0\n");
  auto none = read_whatsat(c);
  CHECK(none.at_line + "\n" == at);
  CHECK(none.status() == "OK");
  CHECK(none.results().empty());
  c.send("WHATSAT " + kiwi + " 10 20\n");
  auto all = read_whatsat(c);
  CHECK(all.at_line + "\n" == at);
  CHECK(all.results().size() == 20);
}

TEST_CASE("a bound above the number of results returns them all") {
  stubbed_node n(stubbed_node::with_results(3));
  client c(n.port());
  locate(c, kiwi);
  c.send("WHATSAT " + kiwi + " 10 20\n");
  auto r = read_whatsat(c);
  CHECK(r.status() == "OK");
  CHECK(r.results().size() == 3);
  CHECK_FALSE(r.json.as_object().contains("next_page_token"));
}

TEST_CASE("ZERO_RESULTS from upstream passes through") {
  stubbed_node n(stubbed_node::with_results(0));
  client c(n.port());
  auto at = locate(c, kiwi);
  c.send("WHATSAT " + kiwi + " 10 5\n");
  auto r = read_whatsat(c);
  CHECK(r.at_line + "\n" == at);
  CHECK(r.status() == "ZERO_RESULTS");
  CHECK(r.results().empty());
}

TEST_CASE("a WHATSAT on another connection later returns the identical AT "
          "line") {
  stubbed_node n;
  std::string at;
  {
    client a(n.port());
    at = locate(a, kiwi, ucla, time_text(now_ns() - 2000000000, 9));
  }
  client b(n.port());
  b.send("WHATSAT " + kiwi + " 10 2\n");
  auto r = read_whatsat(b);
  CHECK(r.at_line + "\n" == at);
  // And again: the stored line is not recomputed.
  b.send("WHATSAT " + kiwi + " 10 2\n");
  CHECK(read_whatsat(b).at_line + "\n" == at);
}

TEST_CASE("an IAMAT acknowledged on one connection is seen by a WHATSAT on "
          "another, and a newer one replaces it") {
  stubbed_node n;
  client a(n.port());
  client b(n.port());
  auto first = locate(a, kiwi, ucla, "1700000000.5");
  b.send("WHATSAT " + kiwi + " 10 1\n");
  CHECK(read_whatsat(b).at_line + "\n" == first);
  auto second = locate(a, kiwi, "-33.868820+151.209296", "1700000001.5");
  b.send("WHATSAT " + kiwi + " 10 1\n");
  auto r = read_whatsat(b);
  CHECK(r.at_line + "\n" == second);
  CHECK(r.json ==
        direct_answer(n.stub->port(), "-33.868820,151.209296", "10000", 1));
  // A third connection, opened later, sees the same.
  client c(n.port());
  c.send("WHATSAT " + kiwi + " 10 1\n");
  CHECK(read_whatsat(c).at_line + "\n" == second);
}

TEST_CASE("an older or equal IAMAT is answered but does not replace the "
          "stored AT line") {
  stubbed_node n;
  client a(n.port());
  auto stored = locate(a, kiwi, ucla, "1700000000.000000002");
  auto older = locate(a, kiwi, "+1.000000+2.000000", "1700000000.000000001");
  auto equal = locate(a, kiwi, "+3.000000+4.000000", "1700000000.000000002");
  CHECK(older != stored);
  CHECK(equal != stored);
  client b(n.port());
  b.send("WHATSAT " + kiwi + " 10 1\n");
  auto r = read_whatsat(b);
  CHECK(r.at_line + "\n" == stored);
  CHECK(r.json ==
        direct_answer(n.stub->port(), "34.068930,-118.445127", "10000", 1));
}

TEST_CASE("a WHATSAT on the same connection sees the IAMAT just before it "
          "in the same write") {
  stubbed_node n;
  client c(n.port());
  c.send(iamat(kiwi, ucla, old_time) + "WHATSAT " + kiwi + " 10 1\n");
  auto at = c.read_line();
  REQUIRE(at.rfind("AT Alpha ", 0) == 0);
  CHECK(read_whatsat(c).at_line + "\n" == at);
}

TEST_CASE("client IDs with emoji or invalid UTF-8 are found by WHATSAT") {
  stubbed_node n;
  for (std::string id : {"\xf0\x9f\xa5\x9d.example", "bad\xff\xfe\x80utf8\xc3",
                         "no\xc2\xa0space"}) {
    INFO("client ID " << printable(id));
    client a(n.port());
    auto at = locate(a, id);
    client b(n.port());
    b.send("WHATSAT " + id + " 10 1\n");
    auto r = read_whatsat(b);
    CHECK(printable(r.at_line + "\n") == printable(at));
  }
}

TEST_CASE("WHATSAT and IAMAT lines pipelined in one write are answered in "
          "order") {
  stubbed_node n;
  client c(n.port());
  c.send(iamat("a.example", ucla, old_time) + "WHATSAT a.example 10 2\n" +
         iamat("b.example", ucla, old_time) + "NOPE\n" +
         "WHATSAT b.example 5 1\n" + "WHATSAT a.example 10 0\n" +
         iamat("c.example", ucla, old_time));
  auto at_a = c.read_line();
  CHECK(contains(at_a, " a.example "));
  auto r1 = read_whatsat(c);
  CHECK(r1.at_line + "\n" == at_a);
  CHECK(r1.results().size() == 2);
  auto at_b = c.read_line();
  CHECK(contains(at_b, " b.example "));
  CHECK(c.read_line() == "? NOPE\n");
  auto r2 = read_whatsat(c);
  CHECK(r2.at_line + "\n" == at_b);
  CHECK(r2.results().size() == 1);
  auto r3 = read_whatsat(c);
  CHECK(r3.at_line + "\n" == at_a);
  CHECK(r3.results().empty());
  CHECK(contains(c.read_line(), " c.example "));
}

TEST_CASE("every thread layout answers the same: sockets on the scheduler "
          "threads (one or four) or on io threads of their own") {
  struct layout {
    unsigned threads, io_threads;
  };
  for (auto l : {layout{1, 0}, layout{4, 0}, layout{2, 2}}) {
    INFO("threads " << l.threads << ", io_threads " << l.io_threads);
    stubbed_node n(stubbed_node::with_results(60), [&](config_spec& spec) {
      spec.threads = l.threads;
      spec.io_threads = l.io_threads;
    });
    // Several connections at once, so sessions land on different workers
    // (and, with four, get stolen) while each keeps its reply order.
    std::vector<std::unique_ptr<client>> conns;
    for (int i = 0; i < 8; ++i)
      conns.push_back(std::make_unique<client>(n.port()));
    for (size_t i = 0; i < conns.size(); ++i) {
      std::string id = "layout" + std::to_string(i) + ".example";
      std::string batch;
      for (int k = 0; k < 50; ++k)
        batch += iamat(id, ucla, "1621464827." + std::to_string(100 + k));
      batch += "WHATSAT " + id + " 10 2\nNOPE\n";
      conns[i]->send(batch);
    }
    for (size_t i = 0; i < conns.size(); ++i) {
      std::string id = "layout" + std::to_string(i) + ".example";
      std::string last;
      for (int k = 0; k < 50; ++k) {
        last = conns[i]->read_line();
        REQUIRE(contains(last, " " + id + " "));
        REQUIRE(contains(last, " 1621464827." + std::to_string(100 + k)));
      }
      auto r = read_whatsat(*conns[i]);
      CHECK(r.at_line + "\n" == last);
      CHECK(r.results().size() == 2);
      CHECK(conns[i]->read_line() == "? NOPE\n");
    }
    auto status = n.h->stop("Alpha");
    CHECK(describe(status) ==
          describe(exit_status{true, 0, 0, false, status.elapsed}));
  }
}

TEST_CASE("IAMATs behind a slow WHATSAT wait for it while another connection "
          "is answered at once") {
  stub_options slow = stubbed_node::with_results(60);
  slow.delay_ms = 400;
  stubbed_node n(slow);
  client a(n.port());
  auto at = locate(a, kiwi);
  auto start = std::chrono::steady_clock::now();
  a.send("WHATSAT " + kiwi + " 10 3\n" + iamat("x.example", ucla, old_time) +
         iamat("y.example", ucla, old_time) + "NOPE\n");

  client b(n.port());
  b.send(iamat("z.example", ucla, old_time));
  auto b_reply = b.read_line();
  auto b_took = std::chrono::steady_clock::now() - start;
  CHECK(contains(b_reply, " z.example "));
  // b was answered while a's WHATSAT still waits for upstream...
  CHECK(b_took < 300ms);
  CHECK(printable(a.peek_now()).empty());

  // ...and a's replies come in request order: the WHATSAT first.
  auto r = read_whatsat(a);
  CHECK(std::chrono::steady_clock::now() - start >= 400ms);
  CHECK(r.at_line + "\n" == at);
  CHECK(r.results().size() == 3);
  CHECK(contains(a.read_line(), " x.example "));
  CHECK(contains(a.read_line(), " y.example "));
  CHECK(a.read_line() == "? NOPE\n");
}

namespace {

/// One series from the node's /metrics.
long metric(std::uint16_t admin_port, const std::string& series) {
  return prometheus_value(scrape_metrics(admin_port), series);
}

const std::string fast_path_series =
    "herd_fast_path_batches_total{server=\"Alpha\"}";

} // namespace

TEST_CASE("an IAMAT read while a slow WHATSAT is pending on its connection "
          "is answered after it") {
  // The first IAMATs find the session idle and are answered on the fast
  // path; the one read while the WHATSAT waits for upstream must go to the
  // session, behind the WHATSAT, and the fast path resumes afterwards.
  stub_options slow = stubbed_node::with_results(3);
  slow.delay_ms = 400;
  auto admin_port = free_port();
  stubbed_node n(slow,
                 [&](config_spec& spec) { enable_admin(spec, admin_port); });
  REQUIRE(wait_listening(admin_port, default_wait, &n.h->at("Alpha").proc()));
  client a(n.port());
  auto at = locate(a, kiwi);
  // The session goes idle just after its reply is written: one of these
  // finds it so.
  for (int i = 0; i < 20 && metric(admin_port, fast_path_series) == 0; ++i)
    locate(a, "before.example", ucla, std::to_string(1621464828 + i) + ".5");
  auto fast = metric(admin_port, fast_path_series);
  REQUIRE(fast > 0);

  a.send("WHATSAT " + kiwi + " 10 3\n");
  // The IAMAT goes out once the node has read the WHATSAT, so that the two
  // are separate reads.
  auto deadline = std::chrono::steady_clock::now() + default_wait;
  while (metric(admin_port, "herd_in_whatsat_total{server=\"Alpha\"}") < 1 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms); // polling the counter, not a guess
  a.send(iamat("behind.example", ucla, old_time));
  auto r = read_whatsat(a);
  CHECK(r.at_line + "\n" == at);
  CHECK(r.results().size() == 3);
  CHECK(contains(a.read_line(), " behind.example "));
  CHECK(metric(admin_port, fast_path_series) == fast);

  for (int i = 0; i < 20 && metric(admin_port, fast_path_series) == fast; ++i)
    locate(a, "after.example", ucla, std::to_string(1621464828 + i) + ".5");
  CHECK(metric(admin_port, fast_path_series) > fast);
  // Every update was stored, whichever way it went.
  client b(n.port());
  b.send("WHATSAT behind.example 10 1\n");
  CHECK(contains(read_whatsat(b).at_line, " behind.example "));
}

TEST_CASE("IAMATs then a WHATSAT then IAMATs in one write larger than a "
          "read are answered in order") {
  // With room for every line, one round of reads takes the whole write:
  // the first read, IAMATs only, is answered on the fast path with its
  // replies held for the end of the round; the next, with the WHATSAT, goes
  // to the session (the replies held are written first), and the IAMATs
  // behind the WHATSAT wait for it there.
  stubbed_node n(stubbed_node::with_results(3), [](config_spec& spec) {
    spec.limits = limits_spec{};
    spec.limits->max_pending_lines = 4096;
  });
  client c(n.port());
  locate(c, kiwi);
  constexpr int before = 1500; // about 120 KB: more than one 64 KiB read
  constexpr int after = 50;
  std::string burst;
  for (int i = 0; i < before; ++i)
    burst += iamat("c" + std::to_string(i) + ".example", ucla, old_time);
  burst += "WHATSAT " + kiwi + " 10 2\n";
  for (int i = 0; i < after; ++i)
    burst += iamat("d" + std::to_string(i) + ".example", ucla, old_time);
  bool sent = false;
  scoped_thread writer([&] { sent = c.try_send(burst); });
  for (int i = 0; i < before; ++i)
    REQUIRE(contains(c.read_line(), " c" + std::to_string(i) + ".example "));
  auto r = read_whatsat(c);
  CHECK(contains(r.at_line, " " + kiwi + " "));
  CHECK(r.results().size() == 2);
  for (int i = 0; i < after; ++i)
    REQUIRE(contains(c.read_line(), " d" + std::to_string(i) + ".example "));
  writer.join();
  CHECK(sent);
}

TEST_CASE("iamat_fast_path off sends every IAMAT through the session, with "
          "the same replies") {
  for (bool on : {true, false}) {
    INFO("iamat_fast_path " << on);
    auto admin_port = free_port();
    stubbed_node n(stubbed_node::with_results(3), [&](config_spec& spec) {
      enable_admin(spec, admin_port);
      spec.extra["iamat_fast_path"] = on;
    });
    REQUIRE(wait_listening(admin_port, default_wait, &n.h->at("Alpha").proc()));
    client c(n.port());
    std::string last;
    for (int i = 0; i < 20; ++i)
      last = locate(c, kiwi, ucla, std::to_string(1621464828 + i) + ".5");
    client d(n.port());
    d.send("WHATSAT " + kiwi + " 10 1\n");
    CHECK(read_whatsat(d).at_line + "\n" == last);
    auto fast = metric(admin_port, fast_path_series);
    if (on)
      CHECK(fast > 0);
    else
      CHECK(fast == 0);
    CHECK(metric(admin_port, "herd_in_iamat_total{server=\"Alpha\"}") == 20);
    // Logged alike, an IAMAT and its AT on one line, the last one too.
    CHECK(wait_for_file_containing(n.h->log_path("Alpha"),
                                   "in: IAMAT " + kiwi + " " + ucla + " " +
                                       std::to_string(1621464828 + 19) +
                                       ".5 out: AT Alpha +"));
  }
}

TEST_CASE("a WHATSAT behind a slow one on another connection is not held "
          "back") {
  stub_options slow = stubbed_node::with_results(60);
  slow.delay_ms = 600;
  stubbed_node n(slow);
  client a(n.port());
  client b(n.port());
  locate(a, kiwi);
  locate(b, "other.example");
  auto start = std::chrono::steady_clock::now();
  a.send("WHATSAT " + kiwi + " 10 1\n");
  b.send("WHATSAT other.example 10 1\n");
  auto rb = read_whatsat(b);
  auto b_took = std::chrono::steady_clock::now() - start;
  auto ra = read_whatsat(a);
  CHECK(rb.status() == "OK");
  CHECK(ra.status() == "OK");
  // Served one after the other, b would take two delays.
  CHECK(b_took < 1100ms);
}

TEST_CASE("after the client half-closes, a pending slow WHATSAT is still "
          "answered before the close") {
  stub_options slow = stubbed_node::with_results(60);
  slow.delay_ms = 300;
  stubbed_node n(slow);
  client c(n.port());
  c.send(iamat(kiwi, ucla, old_time) + "WHATSAT " + kiwi + " 10 4\n" +
         iamat("late.example", ucla, old_time));
  c.shutdown_write();
  auto all = c.read_until_closed();
  CHECK_FALSE(c.was_reset());
  auto first_nl = all.find('\n');
  REQUIRE(first_nl != std::string::npos);
  auto at = all.substr(0, first_nl + 1);
  auto block_end = all.find("\n\n");
  REQUIRE(block_end != std::string::npos);
  auto r = parse_whatsat_reply(
      all.substr(first_nl + 1, block_end + 2 - (first_nl + 1)));
  INFO("received: \"" << printable(all) << "\"");
  REQUIRE(r.problem == "");
  CHECK(r.at_line + "\n" == at);
  CHECK(r.results().size() == 4);
  auto rest = all.substr(block_end + 2);
  CHECK(count_lines(rest) == 1);
  CHECK(contains(rest, " late.example "));
}

TEST_CASE("a client that vanishes right after its WHATSAT does not disturb "
          "others") {
  stub_options slow = stubbed_node::with_results(60);
  slow.delay_ms = 200;
  stubbed_node n(slow);
  {
    client gone(n.port());
    locate(gone, kiwi);
    gone.send("WHATSAT " + kiwi + " 10 5\n");
  }
  {
    client gone(n.port());
    gone.send(iamat("g.example", ucla, old_time) + "WHATSAT g.example 10 5\n");
    gone.shutdown_write();
  }
  client c(n.port());
  auto at = locate(c, "stays.example");
  c.send("WHATSAT stays.example 10 2\n");
  auto r = read_whatsat(c);
  CHECK(r.at_line + "\n" == at);
  CHECK(r.results().size() == 2);
  c.send("WHATSAT " + kiwi + " 10 1\n");
  CHECK(read_whatsat(c).status() == "OK");
}

TEST_CASE("a burst of WHATSATs in one write keeps no more Places requests "
          "in flight than the pending-line limit") {
  // 600 WHATSATs (about 20 KB) arrive in one read. Handed over all at once,
  // each would start its own upstream call; the node hands over only as
  // many lines as max_pending_lines has room for and keeps the rest of the
  // read until replies make room.
  constexpr int limit = 32;
  constexpr int lines = 600;
  stub_options slow = stubbed_node::with_results(20);
  slow.delay_ms = 50;
  auto admin_port = free_port();
  stubbed_node n(slow, [&](config_spec& spec) {
    spec.limits = limits_spec{};
    spec.limits->max_pending_lines = limit;
    enable_admin(spec, admin_port);
  });
  REQUIRE(wait_listening(admin_port, default_wait, &n.h->at("Alpha").proc()));
  client c(n.port());
  auto at = locate(c, kiwi);

  // Samples the Places requests alive until the replies are all read.
  std::atomic<long> most{0};
  metrics_sampler sampler(admin_port, [&](const std::string& text) {
    most.store(std::max(
        most.load(),
        prometheus_value(
            text,
            "herd_actors_alive{server=\"Alpha\",kind=\"places_request\"}")));
  });

  std::string burst;
  for (int i = 0; i < lines; ++i)
    burst += "WHATSAT " + kiwi + " 10 1\n";
  c.send(burst);
  for (int i = 0; i < lines; ++i) {
    auto r = read_whatsat(c);
    INFO("reply " << i);
    REQUIRE(r.at_line + "\n" == at);
    REQUIRE(r.status() == "OK");
  }
  sampler.stop();
  INFO(sampler.samples() << " samples of /metrics");
  REQUIRE(sampler.samples() > 0);
  // A request's actor ends just after its reply makes room for the next
  // line, so the count may pass the limit by the few ending at that moment;
  // handed over at once, the burst would have had hundreds alive.
  CHECK(most.load() > 0);
  CHECK(most.load() <= limit + limit / 2);
}

TEST_CASE("places.max_in_flight keeps the node's upstream calls at the "
          "limit, and /metrics shows the ones that wait") {
  constexpr int limit = 2;
  constexpr int connections = 4;
  constexpr int per_connection = 3;
  stub_options slow = stubbed_node::with_results(20);
  slow.delay_ms = 100;
  auto admin_port = free_port();
  stubbed_node n(slow, [&](config_spec& spec) {
    REQUIRE(spec.places.has_value());
    spec.places->max_in_flight = limit;
    enable_admin(spec, admin_port);
  });
  REQUIRE(wait_listening(admin_port, default_wait, &n.h->at("Alpha").proc()));
  std::vector<std::unique_ptr<client>> clients;
  for (int i = 0; i < connections; ++i)
    clients.push_back(std::make_unique<client>(n.port()));
  auto at = locate(*clients[0], kiwi);

  const std::string in_flight = "herd_places_in_flight{server=\"Alpha\"}";
  const std::string waiting = "herd_places_waiting{server=\"Alpha\"}";
  std::atomic<long> most_in_flight{0}, most_waiting{0};
  metrics_sampler sampler(admin_port, [&](const std::string& text) {
    most_in_flight.store(
        std::max(most_in_flight.load(), prometheus_value(text, in_flight)));
    most_waiting.store(
        std::max(most_waiting.load(), prometheus_value(text, waiting)));
  });

  std::string burst;
  for (int i = 0; i < per_connection; ++i)
    burst += "WHATSAT " + kiwi + " 10 1\n";
  for (auto& c : clients)
    c->send(burst);
  for (auto& c : clients)
    for (int i = 0; i < per_connection; ++i) {
      auto r = read_whatsat(*c);
      REQUIRE(r.at_line + "\n" == at);
      REQUIRE(r.status() == "OK");
    }
  sampler.stop();
  auto text = scrape_metrics(admin_port);
  INFO(sampler.samples() << " samples; last /metrics:\n" << text);
  REQUIRE(sampler.samples() > 0);
  CHECK(most_in_flight.load() <= limit);
  CHECK(most_waiting.load() > 0);
  CHECK(prometheus_value(text, in_flight) == 0);
  CHECK(prometheus_value(text, waiting) == 0);
  CHECK(prometheus_value(text, "herd_places_waited_total{server=\"Alpha\"}") >
        0);
}

TEST_CASE("WHATSAT works over HTTPS with the certificate from places.ca_file") {
  temp_dir dir;
  auto cert = make_self_signed_cert(dir, "stub");
  stub_options opts = stubbed_node::with_results(60);
  opts.tls = cert;
  opts.valid_key = test_api_key;
  places_stub stub(dir, opts);
  auto spec = single_node_config(stub.endpoint());
  spec.places->ca_file = cert.cert;
  herd h(dir, spec);
  h.start("Alpha");
  client c(h.port("Alpha"));
  auto at = locate(c, kiwi);
  c.send("WHATSAT " + kiwi + " 10 5\n");
  auto r = read_whatsat(c);
  INFO("JSON: " << r.json_text);
  CHECK(r.at_line + "\n" == at);
  CHECK(r.status() == "OK");
  CHECK(r.results().size() == 5);
}

TEST_CASE("a certificate from another CA gives UNKNOWN_ERROR naming the TLS "
          "failure") {
  temp_dir dir;
  auto cert = make_self_signed_cert(dir, "stub");
  auto other = make_self_signed_cert(dir, "other-ca");
  stub_options opts = stubbed_node::with_results(60);
  opts.tls = cert;
  places_stub stub(dir, opts);
  auto spec = single_node_config(stub.endpoint());
  spec.places->ca_file = other.cert;
  herd h(dir, spec);
  h.start("Alpha");
  client c(h.port("Alpha"));
  auto at = locate(c, kiwi);
  c.send("WHATSAT " + kiwi + " 10 5\n");
  auto r = read_whatsat(c);
  check_unknown_error(r, at);
  auto msg = std::string(r.json.at("error_message").as_string());
  INFO("error_message: " << msg);
  CHECK((contains_nocase(msg, "tls") || contains_nocase(msg, "certificate")));
}

TEST_CASE("an upstream that refuses connections gives UNKNOWN_ERROR") {
  temp_dir dir;
  herd h(dir, single_node_config(closed_endpoint()));
  h.start("Alpha");
  client c(h.port("Alpha"));
  auto at = locate(c, kiwi);
  c.send("WHATSAT " + kiwi + " 10 5\n");
  check_unknown_error(read_whatsat(c), at);
  h.stop("Alpha");
  CHECK_FALSE(contains(h.log_text("Alpha"), test_api_key));
}

TEST_CASE("an upstream slower than places.timeout_ms gives UNKNOWN_ERROR "
          "after the timeout") {
  stub_options opts = stubbed_node::with_results(60);
  opts.delay_ms = 3000;
  stubbed_node n(opts, [](config_spec& s) { s.places->timeout_ms = 300; });
  client c(n.port());
  auto at = locate(c, kiwi);
  auto start = std::chrono::steady_clock::now();
  c.send("WHATSAT " + kiwi + " 10 5\n");
  auto r = read_whatsat(c, 2500ms);
  auto took = std::chrono::steady_clock::now() - start;
  check_unknown_error(r, at);
  CHECK(took >= 250ms);
  CHECK(took < 2000ms);
}

TEST_CASE("an upstream that closes without answering gives UNKNOWN_ERROR") {
  stub_options opts;
  opts.drop = true;
  stubbed_node n(opts);
  failing_upstream(n);
}

TEST_CASE("an upstream answering invalid JSON gives UNKNOWN_ERROR") {
  stub_options opts;
  opts.invalid_json = true;
  stubbed_node n(opts);
  failing_upstream(n);
}

TEST_CASE("an upstream answering HTTP 503 gives UNKNOWN_ERROR") {
  stub_options opts;
  opts.http_status = 503;
  stubbed_node n(opts);
  failing_upstream(n);
}

TEST_CASE("an upstream answering HTTP 404 with HTML gives UNKNOWN_ERROR") {
  stub_options opts;
  opts.http_status = 404;
  stubbed_node n(opts);
  failing_upstream(n);
}

TEST_CASE("a Places status such as OVER_QUERY_LIMIT passes through") {
  stub_options opts;
  opts.fail_status = "OVER_QUERY_LIMIT";
  stubbed_node n(opts);
  client c(n.port());
  auto at = locate(c, kiwi);
  c.send("WHATSAT " + kiwi + " 10 5\n");
  auto r = read_whatsat(c);
  INFO("JSON: " << r.json_text);
  CHECK(r.at_line + "\n" == at);
  CHECK(r.status() == "OVER_QUERY_LIMIT");
  CHECK(r.results().empty());
  CHECK(r.json.as_object().contains("error_message"));
}

TEST_CASE("a node without an API key passes on REQUEST_DENIED from "
          "upstream") {
  launch_options no_key;
  no_key.env["GOOGLE_PLACES_API_KEY"] = std::nullopt;
  stubbed_node n(stubbed_node::with_results(60), {}, no_key);
  client c(n.port());
  auto at = locate(c, kiwi);
  c.send("WHATSAT " + kiwi + " 10 5\n");
  auto r = read_whatsat(c);
  INFO("JSON: " << r.json_text);
  CHECK(r.at_line + "\n" == at);
  CHECK(r.status() == "REQUEST_DENIED");
  CHECK(r.results().empty());
  CHECK(r.json.as_object().contains("error_message"));
}

namespace {

/// A WHATSAT through a stub that accepts only `valid_key`; checks that
/// `key` (what the node sends) is in neither the reply nor the log, and
/// returns the reply's status.
std::string status_with_key(const std::string& valid_key,
                            const std::string& key,
                            const std::function<void(config_spec&)>& tweak = {},
                            const launch_options& launch = {}) {
  stub_options opts = stubbed_node::with_results(60);
  opts.valid_key = valid_key;
  stubbed_node n(opts, tweak, launch);
  client c(n.port());
  locate(c, kiwi);
  c.send("WHATSAT " + kiwi + " 10 5\n");
  auto r = read_whatsat(c);
  CHECK_FALSE(contains(r.json_text, key));
  n.h->stop("Alpha");
  CHECK_FALSE(contains(n.h->log_text("Alpha"), key));
  return r.status();
}

} // namespace

TEST_CASE("the API key reaches upstream but never a reply or the log") {
  SECTION("the right key") {
    CHECK(status_with_key(test_api_key, test_api_key) == "OK");
  }
  SECTION("a key that upstream rejects") {
    CHECK(status_with_key("some-other-key", test_api_key) == "REQUEST_DENIED");
  }
  SECTION("a key in a variable named by places.key_env") {
    launch_options launch;
    launch.env["HERD_TEST_PLACES_KEY"] = "custom-key-4c3b2a";
    CHECK(
        status_with_key(
            "custom-key-4c3b2a", "custom-key-4c3b2a",
            [](config_spec& s) { s.places->key_env = "HERD_TEST_PLACES_KEY"; },
            launch) == "OK");
  }
}

TEST_CASE("a reader paused at the pending-line limit resumes in batches, "
          "not one line per answer") {
  // 600 WHATSATs in one write at a limit of 64, and one Places call at a
  // time, so the replies come back one by one and each answers one line: a
  // reader resumed on every answer handed the session one line (one actor
  // message) at a time, over 500 batches. Resumed when half the limit is
  // free, it hands over at least 32 lines a time.
  constexpr int lines = 600;
  auto admin_port = free_port();
  stubbed_node n(stubbed_node::with_results(3), [&](config_spec& spec) {
    REQUIRE(spec.places.has_value());
    spec.places->max_in_flight = 1;
    spec.limits = limits_spec{};
    spec.limits->max_pending_lines = 64;
    enable_admin(spec, admin_port);
  });
  REQUIRE(wait_listening(admin_port, default_wait, &n.h->at("Alpha").proc()));
  client c(n.port());
  auto at = locate(c, kiwi);
  std::string burst;
  for (int i = 0; i < lines; ++i)
    burst += "WHATSAT " + kiwi + " 10 1\n";
  bool sent = false;
  scoped_thread writer([&] { sent = c.try_send(burst); });
  for (int i = 0; i < lines; ++i) {
    auto r = read_whatsat(c);
    REQUIRE(r.at_line + "\n" == at);
  }
  writer.join();
  CHECK(sent);
  auto text = scrape_metrics(admin_port);
  auto messages = prometheus_value(
      text,
      "herd_actor_messages_total{server=\"Alpha\",kind=\"client_session\"}");
  // The session's messages: one per batch of lines, one per Places reply.
  auto batches = messages - lines;
  INFO("client_session messages: " << messages);
  CHECK(batches > 0);
  CHECK(batches <= lines / 8);
}
