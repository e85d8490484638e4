// The herd end to end: real herd-node processes on loopback flooding location
// updates, surviving partitions, catching up after a restart, and admitting
// only neighbours that prove the herd secret.
#include <catch2/catch.hpp>

#include "harness.hpp"
#include "net/peer_protocol.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace e2e;
namespace peer = ::herd::peer;

namespace {

using steady = std::chrono::steady_clock;

const std::string secret = "test-secret-1234";
const std::string secret_env = "HERD_PEER_SECRET";
const std::string ucla = "+34.068930-118.445127";

/// How long an update may take to reach a server, by the contract.
constexpr milliseconds propagation_bound = 500ms;

double ms_between(steady::time_point from, steady::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

double ms_since(steady::time_point from) {
  return ms_between(from, steady::now());
}

std::string without_newline(std::string line) {
  if (!line.empty() && line.back() == '\n')
    line.pop_back();
  return line;
}

// -- topology -----------------------------------------------------------------

struct topology {
  std::vector<std::string> names; ///< sorted
  std::vector<std::pair<std::string, std::string>> links;

  std::vector<std::string> neighbours(const std::string& name) const {
    std::vector<std::string> out;
    for (auto& [a, b] : links) {
      if (a == name)
        out.push_back(b);
      else if (b == name)
        out.push_back(a);
    }
    return out;
  }

  /// The servers of `alive` that `from` reaches over links between servers
  /// of `alive` (`from` included).
  std::set<std::string> reachable(const std::string& from,
                                  const std::set<std::string>& alive) const {
    std::set<std::string> seen{from};
    std::vector<std::string> todo{from};
    while (!todo.empty()) {
      auto current = todo.back();
      todo.pop_back();
      for (auto& next : neighbours(current))
        if (alive.count(next) != 0 && seen.insert(next).second)
          todo.push_back(next);
    }
    return seen;
  }

  /// Every directed link a->b (each link once per direction).
  std::vector<std::pair<std::string, std::string>> directed_links() const {
    std::vector<std::pair<std::string, std::string>> out;
    for (auto& [a, b] : links) {
      out.emplace_back(a, b);
      out.emplace_back(b, a);
    }
    return out;
  }
};

/// The reference herd of the contract.
topology reference_topology() {
  topology t;
  t.names = {"Bailey", "Bona", "Campbell", "Clark", "Jaquez"};
  t.links = {{"Clark", "Jaquez"},    {"Clark", "Bona"},
             {"Campbell", "Bailey"}, {"Campbell", "Bona"},
             {"Campbell", "Jaquez"}, {"Bona", "Bailey"}};
  return t;
}

config_spec herd_config(const topology& t) {
  config_spec spec;
  for (auto& name : t.names)
    spec.servers.emplace_back(name, 0);
  spec.links = t.links;
  spec.peer_secret_env = secret_env;
  return spec;
}

// -- logs ---------------------------------------------------------------------

using log_marks = std::map<std::string, std::size_t>;

/// The complete lines of the file, from byte `offset` on, that hold `needle`.
std::vector<std::string> log_lines_after(const std::string& path,
                                         std::size_t offset,
                                         std::string_view needle) {
  std::vector<std::string> out;
  auto text = read_file(path);
  if (offset > text.size())
    return out;
  std::istringstream in(text.substr(offset));
  std::string line;
  while (std::getline(in, line))
    if (contains(line, needle))
      out.push_back(line);
  return out;
}

/// What follows `needle` in `line` (the whole line when absent).
std::string after(const std::string& line, std::string_view needle) {
  auto at = line.find(needle);
  return at == std::string::npos ? line : line.substr(at + needle.size());
}

// -- a running herd -----------------------------------------------------------

struct running_herd {
  topology topo;
  temp_dir dir;
  e2e::herd h;
  /// One persistent client connection per server, opened on first use.
  std::map<std::string, std::unique_ptr<client>> conns;

  running_herd(topology t, config_spec spec)
      : topo(std::move(t)), h(dir, std::move(spec)) {
    h.env()[secret_env] = secret;
  }

  client& conn(const std::string& name) {
    auto& c = conns[name];
    if (!c)
      c = std::make_unique<client>(h.port(name));
    return *c;
  }

  log_marks marks() const {
    log_marks out;
    for (auto& name : topo.names)
      out[name] = read_file(h.log_path(name)).size();
    return out;
  }

  /// Waits until every link that touches a server of `servers` has logged a
  /// finished catch-up (in the dialer's log) after `since`.
  void wait_links_ready(const std::set<std::string>& servers,
                        const log_marks& since, milliseconds timeout = 5000ms) {
    for (auto& [from, to] : topo.directed_links()) {
      if (servers.count(from) == 0 && servers.count(to) == 0)
        continue;
      auto needle = "peer_link " + from + "->" + to + " catch-up done";
      auto it = since.find(from);
      std::size_t offset = it == since.end() ? 0 : it->second;
      INFO("waiting for \"" << needle << "\" in " << h.log_path(from));
      INFO("log of " << from << ":\n" << h.log_text(from));
      REQUIRE(wait_for_log_after(h.log_path(from), offset, needle, timeout));
    }
  }

  /// Starts every server and waits until each link has caught up.
  void start_all() {
    for (auto& name : topo.names)
      h.start(name);
    wait_links_ready({topo.names.begin(), topo.names.end()}, {});
  }
};

// -- requests -----------------------------------------------------------------

/// Sends an IAMAT and returns its AT reply line without '\n'.
std::string locate(client& c, const std::string& server, const std::string& id,
                   int64_t time_ns) {
  auto time = time_text(time_ns, 9);
  c.send(iamat(id, ucla, time));
  auto reply = without_newline(c.read_line());
  INFO("reply: \"" << printable(reply) << "\"");
  auto at = parse_at(reply);
  REQUIRE(at.has_value());
  REQUIRE(at->server == server);
  REQUIRE(at->client_id == id);
  REQUIRE(at->time == time);
  return reply;
}

std::string whatsat_line(const std::string& id) {
  return "WHATSAT " + id + " 10 0";
}

/// Reads one WHATSAT reply and returns its first line without '\n'; an AT
/// reply's JSON and final empty line are consumed too.
std::string read_whatsat_first_line(client& c) {
  auto first = c.read_line();
  if (first.rfind("AT ", 0) == 0)
    c.read_until("\n\n");
  return without_newline(first);
}

/// Sends a WHATSAT and returns the reply's first line without '\n'.
std::string whatsat_first_line(client& c, const std::string& id) {
  c.send(whatsat_line(id) + "\n");
  return read_whatsat_first_line(c);
}

struct agreement {
  std::map<std::string, double> arrived_ms; ///< server -> ms after `since`
  std::map<std::string, std::string> last;  ///< server -> last first line
};

/// Polls WHATSAT at every server of `servers` until each answers with
/// `expected` as its first line, or `timeout` after `since` has passed.
agreement await_agreement(running_herd& rh,
                          const std::vector<std::string>& servers,
                          const std::string& id, const std::string& expected,
                          steady::time_point since,
                          milliseconds timeout = propagation_bound) {
  agreement out;
  std::vector<std::string> pending = servers;
  auto deadline = since + timeout;
  while (!pending.empty()) {
    for (auto it = pending.begin(); it != pending.end();) {
      auto line = whatsat_first_line(rh.conn(*it), id);
      auto seen = steady::now();
      out.last[*it] = line;
      if (line == expected) {
        out.arrived_ms[*it] = ms_between(since, seen);
        it = pending.erase(it);
      } else {
        ++it;
      }
    }
    if (steady::now() >= deadline)
      break;
    if (!pending.empty())
      std::this_thread::sleep_for(1ms); // polling interval
  }
  return out;
}

/// Requires that every server of `servers` agreed within the bound.
double require_agreement(const agreement& a,
                         const std::vector<std::string>& servers,
                         const std::string& expected,
                         milliseconds bound = propagation_bound) {
  double worst = 0;
  for (auto& s : servers) {
    INFO("server " << s << ", expected first line \"" << printable(expected)
                   << "\"");
    auto last = a.last.find(s);
    INFO("its last answer: \""
         << (last == a.last.end() ? std::string("(none)")
                                  : printable(last->second))
         << "\"");
    auto got = a.arrived_ms.find(s);
    REQUIRE(got != a.arrived_ms.end());
    CHECK(got->second <= static_cast<double>(bound.count()));
    worst = std::max(worst, got->second);
  }
  return worst;
}

/// A valid AT line as a server would flood it, for a client of our own.
std::string at_line(const std::string& server, const std::string& id,
                    int64_t time_ns) {
  return "AT " + server + " +0.000100000 " + id + " " + ucla + " " +
         time_text(time_ns, 9);
}

std::vector<std::string> without(const std::vector<std::string>& all,
                                 const std::set<std::string>& drop) {
  std::vector<std::string> out;
  for (auto& s : all)
    if (drop.count(s) == 0)
      out.push_back(s);
  return out;
}

// -- the peer handshake, from the test's side ---------------------------------

struct handshake_lines {
  std::string hello; ///< without '\n'
  std::string auth;  ///< without '\n'
  peer::challenge challenge;
};

/// Sends HERD-HELLO as `dialer` and reads the acceptor's challenge, which
/// must prove the herd secret.
handshake_lines hello_and_challenge(client& c, const std::string& dialer,
                                    const std::string& acceptor,
                                    std::optional<std::string> hello = {}) {
  handshake_lines out;
  out.hello = hello ? *hello
                    : peer::format_hello({peer::protocol_version, dialer,
                                          acceptor, peer::make_nonce()});
  auto parsed_hello = peer::parse_hello(out.hello);
  REQUIRE(parsed_hello.has_value());
  c.send(out.hello + "\n");
  auto line = without_newline(c.read_line());
  INFO("challenge: \"" << printable(line) << "\"");
  auto ch = peer::parse_challenge(line);
  REQUIRE(ch.has_value());
  CHECK(ch->acceptor == acceptor);
  CHECK(ch->mac == peer::handshake_mac(secret, "accept", dialer, acceptor,
                                       parsed_hello->nonce, ch->nonce));
  out.challenge = *ch;
  out.auth =
      "HERD-AUTH " + peer::handshake_mac(secret, "dial", dialer, acceptor,
                                         parsed_hello->nonce, ch->nonce);
  return out;
}

// -- a raw socket for a fake neighbour ---------------------------------------

class socket_fd {
 public:
  explicit socket_fd(int fd = -1) : fd_(fd) {}
  ~socket_fd() { reset(); }
  socket_fd(const socket_fd&) = delete;
  socket_fd& operator=(const socket_fd&) = delete;
  socket_fd(socket_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  socket_fd& operator=(socket_fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

[[noreturn]] void fail_errno(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

/// A listening socket on 127.0.0.1:port whose accepted connections have a
/// small receive buffer (set before listen(), so they inherit it).
socket_fd listen_small_buffer(std::uint16_t port, int rcvbuf) {
  socket_fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (s.get() < 0)
    fail_errno("socket");
  int one = 1;
  ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::setsockopt(s.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) != 0)
    fail_errno("setsockopt(SO_RCVBUF)");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(s.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) !=
      0)
    fail_errno("bind 127.0.0.1:" + std::to_string(port));
  if (::listen(s.get(), 16) != 0)
    fail_errno("listen");
  return s;
}

/// One connection of a fake neighbour: blocking I/O bounded by poll().
class raw_peer {
 public:
  /// Accepts one connection on `listener` within `timeout`.
  raw_peer(const socket_fd& listener, milliseconds timeout) {
    pollfd p{listener.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1)
      throw std::runtime_error("no connection to the fake neighbour within " +
                               std::to_string(timeout.count()) + " ms");
    fd_ = socket_fd(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (fd_.get() < 0)
      fail_errno("accept");
  }

  std::string read_line(milliseconds timeout = default_wait) {
    auto deadline = steady::now() + timeout;
    std::size_t nl;
    while ((nl = buffer_.find('\n')) == std::string::npos) {
      auto left =
          std::chrono::duration_cast<milliseconds>(deadline - steady::now());
      pollfd p{fd_.get(), POLLIN, 0};
      if (left.count() <= 0 ||
          ::poll(&p, 1, static_cast<int>(left.count())) != 1)
        throw std::runtime_error("fake neighbour: no line within " +
                                 std::to_string(timeout.count()) +
                                 " ms; have \"" + printable(buffer_) + "\"");
      char buf[4096];
      ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
      if (n == 0)
        throw std::runtime_error("fake neighbour: connection closed");
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN)
          continue;
        fail_errno("recv");
      }
      buffer_.append(buf, static_cast<std::size_t>(n));
    }
    auto line = buffer_.substr(0, nl);
    buffer_.erase(0, nl + 1);
    return line;
  }

  void send_line(const std::string& line) {
    std::string bytes = line + "\n";
    std::string_view rest(bytes);
    while (!rest.empty()) {
      ssize_t n = ::send(fd_.get(), rest.data(), rest.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        fail_errno("send");
      }
      rest.remove_prefix(static_cast<std::size_t>(n));
    }
  }

 private:
  socket_fd fd_;
  std::string buffer_;
};

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM), or -1.
long proc_status_kib(pid_t pid, const std::string& field) {
  std::istringstream in(read_file("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0)
      return std::stol(line.substr(field.size() + 1));
  return -1;
}

} // namespace

TEST_CASE("an IAMAT at any server reaches every other server within half a "
          "second",
          "[herd]") {
  running_herd rh(reference_topology(), herd_config(reference_topology()));
  rh.start_all();

  double worst = 0;
  std::string worst_path;
  for (auto& origin : rh.topo.names) {
    auto id = "flood-from-" + origin;
    auto line = locate(rh.conn(origin), origin, id, now_ns());
    auto since = steady::now();
    auto others = without(rh.topo.names, {origin});
    auto agreed = await_agreement(rh, others, id, line, since);
    INFO("IAMAT at " << origin);
    double slowest = require_agreement(agreed, others, line);
    std::ostringstream detail;
    for (auto& [server, ms] : agreed.arrived_ms)
      detail << " " << server << "=" << ms << "ms";
    WARN("propagation from " << origin << ":" << detail.str());
    if (slowest >= worst) {
      worst = slowest;
      worst_path = origin;
    }
  }
  WARN("max propagation time: " << worst << " ms (IAMAT at " << worst_path
                                << ")");
  CHECK(worst <= static_cast<double>(propagation_bound.count()));
}

TEST_CASE("exactly the partitions that disconnect the survivors keep them "
          "from agreeing",
          "[herd]") {
  auto topo = reference_topology();
  std::set<std::string> everyone(topo.names.begin(), topo.names.end());

  std::vector<std::pair<std::string, std::string>> pairs;
  for (std::size_t i = 0; i < topo.names.size(); ++i)
    for (std::size_t j = i + 1; j < topo.names.size(); ++j)
      pairs.emplace_back(topo.names[i], topo.names[j]);
  REQUIRE(pairs.size() == 10);

  std::vector<std::string> partitioning;
  for (auto& [a, b] : pairs) {
    auto survivors = everyone;
    survivors.erase(a);
    survivors.erase(b);
    if (topo.reachable(*survivors.begin(), survivors) != survivors)
      partitioning.push_back("{" + a + "," + b + "}");
  }
  {
    std::ostringstream list;
    for (auto& p : partitioning)
      list << " " << p;
    INFO("removals that disconnect the survivors:" << list.str());
    REQUIRE(partitioning.size() == 3);
  }

  running_herd rh(topo, herd_config(topo));
  rh.start_all();
  auto test_started = steady::now();

  for (auto& [a, b] : pairs) {
    INFO("stopped: " << a << " and " << b);
    for (auto& gone : {a, b}) {
      rh.conns.erase(gone);
      auto status = rh.h.stop(gone);
      INFO(gone << " on SIGTERM: " << describe(status));
      // A node stopped by SIGTERM exits cleanly; when it does not, it is
      // gone all the same and the scenario goes on.
      REQUIRE(!status.timed_out);
      CHECK(status.exited);
      CHECK(status.code == 0);
    }
    auto survivors = everyone;
    survivors.erase(a);
    survivors.erase(b);
    auto origin = *survivors.begin();
    auto reached = topo.reachable(origin, survivors);
    std::vector<std::string> connected, cut_off;
    for (auto& s : survivors) {
      if (s == origin)
        continue;
      (reached.count(s) != 0 ? connected : cut_off).push_back(s);
    }
    CHECK(cut_off.empty() ==
          (std::find(partitioning.begin(), partitioning.end(),
                     "{" + a + "," + b + "}") == partitioning.end()));

    auto id = "split-" + a + "-" + b;
    auto first = locate(rh.conn(origin), origin, id, now_ns());
    auto since = steady::now();
    auto agreed = await_agreement(rh, connected, id, first, since);
    {
      INFO("IAMAT at " << origin << " while " << a << " and " << b
                       << " are down");
      require_agreement(agreed, connected, first);
    }
    // Absence cannot be awaited: the cut-off survivors get the same half
    // second that the connected ones had, then must still not know the
    // client.
    std::this_thread::sleep_until(since + propagation_bound);
    for (auto& s : cut_off) {
      INFO("cut-off survivor " << s << " (IAMAT at " << origin << ")");
      CHECK(whatsat_first_line(rh.conn(s), id) == "? " + whatsat_line(id));
    }

    auto marks = rh.marks();
    rh.h.start(a);
    rh.h.start(b);
    auto listening = steady::now();
    // The contract's scenario: an update sent half a second after the
    // neighbours restart must reach them (and everyone else).
    std::this_thread::sleep_until(listening + propagation_bound);
    auto second = locate(rh.conn(origin), origin, id, now_ns());
    auto since2 = steady::now();
    auto others = without(topo.names, {origin});
    auto agreed2 = await_agreement(rh, others, id, second, since2);
    {
      INFO("IAMAT at " << origin << " 0.5 s after " << a << " and " << b
                       << " restarted");
      require_agreement(agreed2, others, second);
    }
    // Every link is up again before the next pair goes down.
    rh.wait_links_ready({a, b}, marks);
  }
  auto total = ms_since(test_started);
  WARN("10 partition cases took " << total << " ms");
  CHECK(total < 60000);
}

TEST_CASE("a restarted server catches up on 1,000 updates it missed",
          "[herd]") {
  auto topo = reference_topology();
  running_herd rh(topo, herd_config(topo));
  rh.start_all();

  const std::string restarted = "Bailey";
  const std::string origin = "Clark";
  constexpr int clients = 1000;
  constexpr int chunk = 250;

  {
    auto status = rh.h.stop(restarted);
    INFO(restarted << " on SIGTERM: " << describe(status));
    REQUIRE(!status.timed_out);
    CHECK(status.exited);
    CHECK(status.code == 0);
  }

  // Two IAMATs per client, older then newer for even clients and newer
  // then older for odd ones (the older is answered but not stored).
  std::vector<std::string> ids, expected(clients);
  for (int i = 0; i < clients; ++i)
    ids.push_back("catchup-" + std::to_string(i));
  int64_t base = now_ns() - 10'000'000'000;
  auto& c = rh.conn(origin);
  for (int start = 0; start < clients; start += chunk / 2) {
    int end = std::min(clients, start + chunk / 2);
    std::string batch;
    std::vector<std::pair<int, bool>> order; // client, is the newer one
    for (int i = start; i < end; ++i) {
      int64_t older = base + i * 1000;
      int64_t newer = older + 5'000'000'000;
      bool newer_first = i % 2 == 1;
      for (bool is_newer : {newer_first, !newer_first}) {
        batch += iamat(ids[static_cast<std::size_t>(i)], ucla,
                       time_text(is_newer ? newer : older, 9));
        order.emplace_back(i, is_newer);
      }
    }
    c.send(batch);
    for (auto& [i, is_newer] : order) {
      auto reply = without_newline(c.read_line());
      auto at = parse_at(reply);
      INFO("reply: \"" << printable(reply) << "\"");
      REQUIRE(at.has_value());
      REQUIRE(at->client_id == ids[static_cast<std::size_t>(i)]);
      if (is_newer)
        expected[static_cast<std::size_t>(i)] = reply;
    }
  }

  // Pipelines a WHATSAT for every client at `server`; returns how many
  // answered with the newer line and the first one that did not.
  auto count_current = [&](client& conn, std::string& first_miss) {
    int matched = 0;
    first_miss.clear();
    for (int start = 0; start < clients; start += chunk) {
      int end = std::min(clients, start + chunk);
      std::string batch;
      for (int i = start; i < end; ++i)
        batch += whatsat_line(ids[static_cast<std::size_t>(i)]) + "\n";
      conn.send(batch);
      for (int i = start; i < end; ++i) {
        auto line = read_whatsat_first_line(conn);
        if (line == expected[static_cast<std::size_t>(i)])
          ++matched;
        else if (first_miss.empty())
          first_miss = ids[static_cast<std::size_t>(i)] + ": \"" +
                       printable(line) + "\"";
      }
    }
    return matched;
  };

  // The restarted server's neighbours hold every newer line before it
  // comes back, so what follows measures the catch-up alone.
  for (auto& n : topo.neighbours(restarted)) {
    auto deadline = steady::now() + default_wait;
    std::string miss;
    int matched = 0;
    while ((matched = count_current(rh.conn(n), miss)) < clients &&
           steady::now() < deadline)
      std::this_thread::sleep_for(10ms); // polling interval
    INFO("neighbour " << n << ", first mismatch: " << miss);
    REQUIRE(matched == clients);
  }

  auto marks = rh.marks();
  auto& node = rh.h.start(restarted);
  auto launched = node.proc().started();
  auto bound = 3000ms;
  int matched = 0;
  int rounds = 0;
  std::string miss;
  double caught_up_ms = 0;
  auto& rc = rh.conn(restarted);
  while (true) {
    matched = count_current(rc, miss);
    ++rounds;
    caught_up_ms = ms_since(launched);
    if (matched == clients || steady::now() >= launched + bound)
      break;
    std::this_thread::sleep_for(5ms); // polling interval
  }
  {
    INFO("after " << rounds << " rounds, " << matched << " of " << clients
                  << " current; first mismatch: " << miss);
    REQUIRE(matched == clients);
  }
  WARN(restarted << " answered all " << clients
                 << " clients with their newer line " << caught_up_ms
                 << " ms after its launch (" << rounds << " WHATSAT rounds)");
  CHECK(caught_up_ms <= static_cast<double>(bound.count()));

  rh.wait_links_ready({restarted}, marks);
  std::ostringstream report;
  for (auto& [from, to] : topo.directed_links()) {
    if (from != restarted && to != restarted)
      continue;
    auto needle = "peer_link " + from + "->" + to + " catch-up done";
    for (auto& line : log_lines_after(rh.h.log_path(from), marks[from], needle))
      report << "\n  " << from << "->" << to << ":" << after(line, needle);
  }
  WARN("catch-up summaries after the restart:" << report.str());
  auto own = log_lines_after(rh.h.log_path(restarted), marks[restarted],
                             "catch-up done");
  CHECK(!own.empty());
}

TEST_CASE("an AT line from a connection that has not done the handshake is "
          "refused and goes nowhere",
          "[herd]") {
  auto topo = reference_topology();
  running_herd rh(topo, herd_config(topo));
  rh.start_all();

  const std::string target = "Clark";
  auto id = "injected-" + std::to_string(now_ns());
  auto line = at_line(topo.neighbours(target).front(), id, now_ns());
  client c(rh.h.port(target));
  c.send(line + "\n");
  auto sent = steady::now();
  CHECK(c.read_line() == "? " + line + "\n");
  CHECK(whatsat_first_line(c, id) == "? " + whatsat_line(id));

  // Absence cannot be awaited: give a flood the full half second first.
  std::this_thread::sleep_until(sent + propagation_bound);
  for (auto& s : topo.names) {
    INFO("server " << s);
    CHECK(whatsat_first_line(rh.conn(s), id) == "? " + whatsat_line(id));
  }
}

TEST_CASE("a handshake with the wrong secret is refused and its updates are "
          "not stored",
          "[herd]") {
  auto topo = reference_topology();
  running_herd rh(topo, herd_config(topo));
  rh.start_all();

  const std::string target = "Clark";
  auto neighbours = topo.neighbours(target);
  REQUIRE(neighbours.size() >= 2);
  const std::string posing_as = neighbours.front();
  auto others = without(neighbours, {posing_as});

  SECTION("with the wrong secret") {
    auto log_mark = read_file(rh.h.log_path(target)).size();
    client c(rh.h.port(target));
    auto hs = hello_and_challenge(c, posing_as, target);
    auto parsed_hello = peer::parse_hello(hs.hello);
    REQUIRE(parsed_hello.has_value());
    auto wrong =
        peer::handshake_mac("wrong-secret-5678", "dial", posing_as, target,
                            parsed_hello->nonce, hs.challenge.nonce);
    REQUIRE(wrong != after(hs.auth, "HERD-AUTH "));
    auto id = "forged-" + std::to_string(now_ns());
    auto line = at_line(posing_as, id, now_ns());
    // The AT line follows the bad AUTH at once, as a dialer would send it.
    c.send("HERD-AUTH " + wrong + "\n" + line + "\n");
    auto sent = steady::now();
    auto reply = c.read_line();
    INFO("reply: \"" << printable(reply) << "\"");
    CHECK(reply.rfind("HERD-REFUSED ", 0) == 0);
    c.try_send(at_line(posing_as, id, now_ns()) + "\n");
    CHECK(c.read_until_closed().empty());
    CHECK(c.peer_closed());

    CHECK(whatsat_first_line(rh.conn(target), id) == "? " + whatsat_line(id));
    CHECK(wait_for_log_after(rh.h.log_path(target), log_mark,
                             "peer connection from " + posing_as +
                                 " refused: authentication failed",
                             default_wait));
    // Absence cannot be awaited: give a flood the full half second first.
    std::this_thread::sleep_until(sent + propagation_bound);
    for (auto& s : topo.names) {
      INFO("server " << s);
      CHECK(whatsat_first_line(rh.conn(s), id) == "? " + whatsat_line(id));
    }
  }

  SECTION("with the right secret (control)") {
    client c(rh.h.port(target));
    auto hs = hello_and_challenge(c, posing_as, target);
    c.send(hs.auth + "\n");
    CHECK(c.read_line() == "HERD-OK\n");
    auto id = "admitted-" + std::to_string(now_ns());
    auto line = at_line(posing_as, id, now_ns());
    c.send(line + "\n");
    auto since = steady::now();
    auto at_target = await_agreement(rh, {target}, id, line, since);
    require_agreement(at_target, {target}, line);
    auto flooded = await_agreement(rh, others, id, line, since);
    {
      INFO("flooded by " << target << " to its other neighbours");
      require_agreement(flooded, others, line);
    }
    // A neighbour's updates are never answered.
    CHECK(printable(c.peek_now()).empty());
  }
}

TEST_CASE("a replayed handshake is refused", "[herd]") {
  auto topo = reference_topology();
  running_herd rh(topo, herd_config(topo));
  rh.start_all();

  const std::string target = "Clark";
  const std::string posing_as = topo.neighbours(target).front();

  handshake_lines recorded;
  {
    client c(rh.h.port(target));
    recorded = hello_and_challenge(c, posing_as, target);
    c.send(recorded.auth + "\n");
    REQUIRE(c.read_line() == "HERD-OK\n");
  }

  client c(rh.h.port(target));
  auto replay = hello_and_challenge(c, posing_as, target, recorded.hello);
  CHECK(replay.challenge.nonce != recorded.challenge.nonce);
  CHECK(replay.auth != recorded.auth);
  auto id = "replayed-" + std::to_string(now_ns());
  auto line = at_line(posing_as, id, now_ns());
  c.send(recorded.auth + "\n" + line + "\n");
  auto sent = steady::now();
  auto reply = c.read_line();
  INFO("reply: \"" << printable(reply) << "\"");
  CHECK(reply.rfind("HERD-REFUSED ", 0) == 0);
  CHECK(c.read_until_closed().empty());

  CHECK(whatsat_first_line(rh.conn(target), id) == "? " + whatsat_line(id));
  // Absence cannot be awaited: give a flood the full half second first.
  std::this_thread::sleep_until(sent + propagation_bound);
  for (auto& s : topo.names) {
    INFO("server " << s);
    CHECK(whatsat_first_line(rh.conn(s), id) == "? " + whatsat_line(id));
  }
}

TEST_CASE("a neighbour that never reads is dropped while clients and other "
          "links keep working",
          "[herd]") {
  topology topo;
  topo.names = {"A", "B", "C"};
  topo.links = {{"A", "B"}, {"A", "C"}};
  auto spec = herd_config(topo);
  spec.log_messages = false;
  running_herd rh(topo, spec);
  constexpr unsigned peer_output_limit = 1u << 20;
  constexpr long rss_bound_kib = 150 * 1024;

  // limits.max_peer_output_bytes is not in the harness' limits_spec: patch
  // the written config before any node reads it.
  {
    auto root = boost::json::parse(read_file(rh.h.config_path())).as_object();
    auto* limits = root.if_contains("limits");
    if (limits == nullptr || !limits->is_object())
      root["limits"] = boost::json::object{};
    root["limits"].as_object()["max_peer_output_bytes"] = peer_output_limit;
    write_file(rh.h.config_path(), boost::json::serialize(root) + "\n");
  }

  // B is the test: it authenticates A's link correctly, then never reads.
  auto listener = listen_small_buffer(rh.h.port("B"), 4096);
  rh.h.start("C");
  auto& a = rh.h.start("A");
  raw_peer b(listener, default_wait);
  auto hello_line = b.read_line();
  auto hello = peer::parse_hello(hello_line);
  INFO("hello: \"" << printable(hello_line) << "\"");
  REQUIRE(hello.has_value());
  REQUIRE(hello->dialer == "A");
  REQUIRE(hello->acceptor == "B");
  auto nonce = peer::make_nonce();
  b.send_line(peer::format_challenge(
      {"B", nonce,
       peer::handshake_mac(secret, "accept", "A", "B", hello->nonce, nonce)}));
  auto auth = peer::parse_auth(b.read_line());
  REQUIRE(auth.has_value());
  REQUIRE(*auth ==
          peer::handshake_mac(secret, "dial", "A", "B", hello->nonce, nonce));
  b.send_line("HERD-OK");
  auto sync = peer::parse_sync(b.read_line());
  REQUIRE(sync.has_value());
  b.send_line(peer::format_sync_end(static_cast<uint32_t>(sync->size()), {}));
  // From here on B reads nothing.

  for (auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"A", "B"}, {"A", "C"}, {"C", "A"}}) {
    auto needle = "peer_link " + from + "->" + to + " catch-up done";
    INFO("waiting for \"" << needle << "\"");
    REQUIRE(wait_for_log_after(rh.h.log_path(from), 0, needle, 5000ms));
  }
  auto started = steady::now();

  constexpr int clients = 60000;
  constexpr int chunk = 250;
  const std::string pad(180, 'x');
  auto id_of = [&](int i) { return "slow-" + pad + "-" + std::to_string(i); };
  auto& c = rh.conn("A");
  int64_t t0 = now_ns();
  std::string last_line;
  long max_rss_kib = 0;
  std::size_t flood_bytes = 0;
  for (int start = 0; start < clients; start += chunk) {
    int end = std::min(clients, start + chunk);
    std::string batch;
    for (int i = start; i < end; ++i)
      batch += iamat(id_of(i), ucla, time_text(t0 + i, 9));
    c.send(batch);
    for (int i = start; i < end; ++i) {
      last_line = c.read_line();
      flood_bytes += last_line.size();
      if (i == start) {
        INFO("reply: \"" << printable(last_line) << "\"");
        REQUIRE(last_line.rfind("AT A ", 0) == 0);
      }
    }
    if ((start / chunk) % 20 == 0)
      max_rss_kib =
          std::max(max_rss_kib, proc_status_kib(a.proc().pid(), "VmRSS"));
  }
  last_line = without_newline(last_line);
  auto sent_ms = ms_since(started);

  auto dropped = "peer_link A->B connection dropped: slow reader (output "
                 "limit)";
  {
    INFO("log of A:\n" << rh.h.log_text("A"));
    REQUIRE(wait_for_log_after(rh.h.log_path("A"), 0, dropped, 10000ms));
  }
  REQUIRE(a.proc().running());

  // The other link kept working: C holds the last update.
  auto since = steady::now();
  auto at_c =
      await_agreement(rh, {"C"}, id_of(clients - 1), last_line, since, 5000ms);
  {
    INFO("the last IAMAT's line at C");
    require_agreement(at_c, {"C"}, last_line, 5000ms);
  }
  // And clients of A still get answers.
  {
    client fresh(rh.h.port("A"));
    auto id = "after-the-drop";
    auto line = locate(fresh, "A", id, now_ns());
    CHECK(whatsat_first_line(fresh, id) == line);
  }

  auto rss_kib = proc_status_kib(a.proc().pid(), "VmRSS");
  auto hwm_kib = proc_status_kib(a.proc().pid(), "VmHWM");
  max_rss_kib = std::max(max_rss_kib, rss_kib);
  auto total_ms = ms_since(started);
  WARN(clients << " IAMATs (" << flood_bytes / 1024
               << " KiB of AT lines to flood) answered by A in " << sent_ms
               << " ms; A's VmRSS now " << rss_kib / 1024
               << " MiB, highest sampled " << max_rss_kib / 1024
               << " MiB, VmHWM " << hwm_kib / 1024 << " MiB (bound "
               << rss_bound_kib / 1024 << " MiB); whole scenario " << total_ms
               << " ms");
  CHECK(rss_kib > 0);
  CHECK(hwm_kib > 0);
  CHECK(max_rss_kib < rss_bound_kib);
  CHECK(hwm_kib < rss_bound_kib);
}

// -- membership without a secret ---------------------------------------------

TEST_CASE("without a secret a herd beyond loopback refuses to start",
          "[herd]") {
  temp_dir dir;
  // A neighbour on a host that is not loopback (the .invalid name never
  // resolves, so nothing could leave the machine even if the node started).
  auto config = R"({"servers": {"Alpha": {"host": "127.0.0.1", "port": )" +
                std::to_string(free_port()) + R"(},
                     "Remote": {"host": "herd-remote.invalid", "port": 1}},
                    "links": [["Alpha", "Remote"]],
                    "log_dir": ")" +
                dir.file("logs") + R"("})";
  write_file(dir.file("herd.json"), config);
  auto err = refused_start(dir, {"Alpha", "--config", dir.file("herd.json")}, 2,
                           {{secret_env, std::nullopt}});
  CHECK(contains(err, "servers.Remote.host"));
  CHECK(contains(err, secret_env));
}

TEST_CASE("without a secret a loopback herd runs and says its peers are "
          "unauthenticated",
          "[herd]") {
  temp_dir dir;
  config_spec spec;
  spec.servers = {{"Alpha", 0}, {"Beta", 0}};
  spec.links = {{"Alpha", "Beta"}};
  e2e::herd h(dir, spec);
  launch_options no_secret;
  no_secret.env[secret_env] = std::nullopt;
  h.start("Alpha", no_secret);
  h.start("Beta", no_secret);
  CHECK(wait_for_file_containing(h.log_path("Alpha"),
                                 "peers are unauthenticated"));
  CHECK(wait_for_file_containing(h.log_path("Alpha"),
                                 "peer_link Alpha->Beta catch-up done"));
  client a(h.port("Alpha"));
  a.send(iamat("lonely", ucla, time_text(now_ns())));
  auto line = without_newline(a.read_line());
  client b(h.port("Beta"));
  auto deadline = steady::now() + propagation_bound;
  std::string seen;
  while (steady::now() < deadline) {
    b.send("WHATSAT lonely 1 0\n");
    seen = without_newline(b.read_line());
    if (seen.rfind("? ", 0) != 0) {
      b.read_reply_block();
      break;
    }
  }
  CHECK(seen == line);
}
