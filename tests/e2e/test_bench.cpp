// herd-bench, the load generator the benchmarks are measured with: it must
// count a real node's replies as valid and refuse wrong ones, or its numbers
// mean nothing.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace e2e;

namespace {

struct bench_run {
  exit_status status;
  std::string out, err;
  boost::json::object result; ///< the RESULT line's object (empty if none)
};

bench_run run_bench(const temp_dir& dir, std::uint16_t port,
                    const std::vector<std::string>& args) {
  std::vector<std::string> argv = {HERD_BENCH_BIN, "--target",
                                   "127.0.0.1:" + std::to_string(port)};
  argv.insert(argv.end(), args.begin(), args.end());
  static int runs = 0;
  auto stem = dir.file("bench-" + std::to_string(++runs));
  process p(argv, {}, stem + ".out", stem + ".err");
  bench_run r;
  r.status = p.wait_exit(30000ms);
  r.out = p.stdout_text();
  r.err = p.stderr_text();
  auto at = r.out.rfind("RESULT ");
  if (at != std::string::npos) {
    auto line = r.out.substr(at + 7, r.out.find('\n', at) - at - 7);
    r.result = boost::json::parse(line).as_object();
  }
  return r;
}

/// Requires a run that exited 0 with a RESULT line and no errors.
void require_clean(const bench_run& r) {
  INFO(describe(r.status) << "\nstdout:\n" << r.out << "\nstderr:\n" << r.err);
  REQUIRE(r.status.exited);
  CHECK(r.status.code == 0);
  REQUIRE_FALSE(r.result.empty());
  CHECK(r.result.at("errors").as_int64() == 0);
}

/// Node "Alpha" from `spec`, started, with its admin endpoint on.
struct admin_node {
  std::uint16_t admin_port;
  herd h;

  admin_node(const temp_dir& dir, config_spec spec)
      : admin_port(free_port()), h(dir, with_admin(spec, admin_port)) {
    h.start("Alpha");
    REQUIRE(wait_listening(admin_port, default_wait, &h.at("Alpha").proc()));
  }

  /// The node's /metrics now.
  std::string metrics() const { return scrape_metrics(admin_port); }

 private:
  static config_spec& with_admin(config_spec& spec, std::uint16_t port) {
    enable_admin(spec, port);
    return spec;
  }
};

/// A server that answers like a node, except that a WHATSAT reply carries
/// `body` as its JSON: enough to see herd-bench judge the JSON.
class fake_node {
 public:
  explicit fake_node(std::string body) : body_(std::move(body)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~fake_node() {
    ::shutdown(fd_, SHUT_RDWR);
    acceptor_.join();
    ::close(fd_);
    std::lock_guard<std::mutex> g(mtx_);
    for (int c : conns_)
      ::shutdown(c, SHUT_RDWR);
    for (auto& t : workers_)
      t.join();
    for (int c : conns_)
      ::close(c);
  }
  std::uint16_t port() const { return port_; }

 private:
  void accept_loop() {
    for (;;) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0)
        return;
      std::lock_guard<std::mutex> g(mtx_);
      conns_.push_back(c);
      workers_.emplace_back([this, c] { serve(c); });
    }
  }
  void serve(int c) {
    std::string buf;
    char chunk[4096];
    for (;;) {
      ssize_t n = ::recv(c, chunk, sizeof chunk, 0);
      if (n <= 0)
        return;
      buf.append(chunk, static_cast<size_t>(n));
      std::string out;
      for (size_t nl; (nl = buf.find('\n')) != std::string::npos;) {
        std::string line = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        out += answer(line);
      }
      if (!out.empty() && ::send(c, out.data(), out.size(), MSG_NOSIGNAL) < 0)
        return;
    }
  }
  std::string answer(const std::string& line) {
    // "IAMAT <client> <location> <time>" -> "AT Fake +0.000000001 <rest>"
    auto first = line.find(' ');
    auto second = line.find(' ', first + 1);
    std::string client = line.substr(first + 1, second - first - 1);
    std::lock_guard<std::mutex> g(mtx_);
    if (line.rfind("IAMAT ", 0) == 0) {
      std::string at = "AT Fake +0.000000001 " + line.substr(first + 1);
      stored_[client] = at;
      return at + "\n";
    }
    auto it = stored_.find(client);
    if (it == stored_.end())
      return "? " + line + "\n";
    return it->second + "\n" + body_ + "\n\n";
  }

  std::string body_;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::thread acceptor_;
  std::mutex mtx_;
  std::vector<int> conns_;
  std::vector<std::thread> workers_;
  std::map<std::string, std::string> stored_;
};

const std::vector<std::string> small_mixed_run = {
    "--connections",  "2",  "--depth",    "2",
    "--clients",      "20", "--mix",      "iamat=1,whatsat=1",
    "--warmup",       "0",  "--duration", "10",
    "--max-requests", "400"};

} // namespace

TEST_CASE("herd-bench counts a node's IAMAT and WHATSAT replies as valid") {
  temp_dir dir;
  stub_options so;
  so.results = 20;
  places_stub stub(dir, so);
  herd h(dir, single_node_config(stub.endpoint()));
  h.start("Alpha");

  auto r = run_bench(dir, h.port("Alpha"), small_mixed_run);
  INFO(describe(r.status) << "\nstdout:\n" << r.out << "\nstderr:\n" << r.err);
  REQUIRE(r.status.exited);
  CHECK(r.status.code == 0);
  REQUIRE_FALSE(r.result.empty());
  CHECK(r.result.at("errors").as_int64() == 0);
  CHECK(r.result.at("validated").as_bool());
  // Every capped request was answered (the first IAMAT of each client,
  // sent before the run, is not counted).
  CHECK(r.result.at("total_requests").as_int64() == 400);
}

TEST_CASE("a registry that falls behind holds its senders' replies, and every "
          "reply still comes, right and in order") {
  temp_dir dir;
  stub_options so;
  so.results = 20;
  places_stub stub(dir, so);
  auto spec = single_node_config(stub.endpoint());
  // Busy as soon as more than one message waits: the hold is taken all the
  // time under a pipelined load.
  limits_spec limits;
  limits.max_registry_backlog = 1;
  spec.limits = limits;
  spec.threads = 2;
  admin_node n(dir, spec);

  auto r = run_bench(dir, n.h.port("Alpha"),
                     {"--connections", "32", "--depth", "16", "--clients",
                      "200", "--mix", "iamat=4,whatsat=1", "--warmup", "0",
                      "--duration", "10", "--max-requests", "40000"});
  require_clean(r);
  CHECK(r.result.at("total_requests").as_int64() == 40000);

  auto metrics = n.metrics();
  INFO("metrics:\n" << metrics);
  // The hold was taken.
  CHECK(prometheus_value(metrics, "herd_updates_held_total{server=\"Alpha\"}") >
        0);
}

TEST_CASE("IAMATs and WHATSATs pipelined on four threads hand connections "
          "between the fast path and the sessions with every reply right and "
          "in order") {
  // One WHATSAT in five: each takes its connection from the fast path to
  // its session until the Places reply is written, and back. herd-bench
  // checks every reply against its request, in order, per connection.
  temp_dir dir;
  stub_options so;
  so.results = 5;
  places_stub stub(dir, so);
  auto spec = single_node_config(stub.endpoint());
  spec.threads = 4;
  admin_node n(dir, spec);

  auto r = run_bench(dir, n.h.port("Alpha"),
                     {"--connections", "32", "--depth", "4", "--clients", "100",
                      "--mix", "iamat=4,whatsat=1", "--warmup", "0",
                      "--duration", "10", "--max-requests", "40000"});
  require_clean(r);
  CHECK(r.result.at("total_requests").as_int64() == 40000);

  auto metrics = n.metrics();
  INFO("metrics:\n" << metrics);
  CHECK(prometheus_value(metrics,
                         "herd_fast_path_batches_total{server=\"Alpha\"}") > 0);
  CHECK(prometheus_value(metrics, "herd_actor_messages_total{server=\"Alpha\","
                                  "kind=\"client_session\"}") > 0);
  CHECK(prometheus_value(metrics, "herd_in_whatsat_total{server=\"Alpha\"}") >
        0);
}

TEST_CASE("under a steady pipelined IAMAT load the registry keeps its turn: "
          "no reply is held for it") {
  // Socket handlers answer these IAMATs themselves (the fast path), so
  // under a steady load there is always a socket ready; a worker that ran
  // every ready socket handler before its next job left the registry's
  // turn waiting for as long as the load lasted (tens of thousands of
  // batches in its inbox, replies held for it, stalls of half a second).
  temp_dir dir;
  auto spec = single_node_config();
  spec.threads = 1;
  admin_node n(dir, spec);

  auto r = run_bench(dir, n.h.port("Alpha"),
                     {"--connections", "64", "--depth", "16", "--warmup", "0",
                      "--duration", "20", "--max-requests", "600000"});
  require_clean(r);

  auto metrics = n.metrics();
  INFO("metrics:\n" << metrics);
  CHECK(prometheus_value(metrics,
                         "herd_fast_path_batches_total{server=\"Alpha\"}") > 0);
  CHECK(prometheus_value(metrics,
                         "herd_updates_held_total{server=\"Alpha\"}") == 0);
  // At most a round of reads (one batch per connection) waits for it.
  CHECK(prometheus_value(metrics, "herd_actor_max_mailbox{server=\"Alpha\","
                                  "kind=\"location_registry\"}") <= 2 * 64);
}

TEST_CASE("herd-bench refuses a WHATSAT reply whose JSON is broken") {
  temp_dir dir;
  // The fake's framing is right: with a sound body the run is clean...
  {
    fake_node good(R"({"results":[{"name":"a]\"{"}],"status":"OK"})");
    auto r = run_bench(dir, good.port(), small_mixed_run);
    INFO(describe(r.status) << "\nstdout:\n"
                            << r.out << "\nstderr:\n"
                            << r.err);
    CHECK(r.status.exited);
    CHECK(r.status.code == 0);
    CHECK(r.result.at("errors").as_int64() == 0);
  }
  // ...and each kind of broken body makes it fail.
  for (std::string body : {R"({"results":[{"name":"a"]},"status":"OK"})",
                           R"({"results":[{"name":"a}],"status":"OK"})",
                           R"({"results":[]})", R"({"status":"OK"} x)"}) {
    fake_node bad(body);
    auto r = run_bench(dir, bad.port(), small_mixed_run);
    INFO("body " << body << "\n"
                 << describe(r.status) << "\nstderr:\n"
                 << r.err);
    CHECK(r.status.exited);
    CHECK(r.status.code == 1);
    REQUIRE_FALSE(r.result.empty());
    CHECK(r.result.at("errors").as_int64() > 0);
    CHECK(contains(r.err, "invalid reply"));
  }
}
