// herd-bench: load and propagation benchmarks for servers that speak the
// herd client protocol (IAMAT / WHATSAT, see shared/protocol.md).
//
// Load mode keeps a fixed number of requests in flight on every connection,
// validates every reply against a per-connection FIFO of what was sent, and
// records latencies in a log-linear histogram. The hot path is one epoll loop
// per thread: non-blocking sockets, one write per batch of requests, large
// reads, no allocation and no iostreams. With --rate the requests are paced
// instead: a timerfd wakes each loop when the next request is due.
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench/reply_check.hpp"
#include "net/protocol.hpp"

namespace {

using std::string_view;
using namespace herd::bench;

constexpr const char* usage =
    R"(usage: herd-bench --target HOST:PORT [--target HOST:PORT ...] [options]
       herd-bench --propagation --origin HOST:PORT --target HOST:PORT ...
                  [options]

Load mode (the default) keeps --depth requests in flight on each of
--connections TCP connections for --warmup + --duration seconds, validates
every reply and reports throughput and latency. Propagation mode measures how
long an IAMAT sent to --origin takes until every --target answers WHATSAT for
it with the origin's AT line.

common options:
  --target HOST:PORT   a server (repeatable). Load mode spreads connections
                       round-robin over the targets; propagation mode polls
                       every target.
  --seed N             seed of the request mix and client choice (default 1)
  --help               this text

load mode:
  --connections N      TCP connections (default 64)
  --depth N            requests in flight per connection (default 1)
  --duration SECONDS   measured window (default 10)
  --warmup SECONDS     load before the measured window, not measured
                       (default 2)
  --mix iamat=W,whatsat=W
                       relative weights of IAMAT and WHATSAT requests
                       (default iamat=1,whatsat=0); either key may be left out
  --clients N          distinct client IDs bench-0 .. bench-<N-1>
                       (default 1000)
  --radius KM          WHATSAT radius in km, 0 < KM <= 50 (default 10)
  --bound N            WHATSAT bound, 0..20 (default 5)
  --max-requests N     send at most N requests in all, warm-up included
                       (default: no cap); the run ends once their replies
                       are in
  --threads N          event-loop threads, each driving its share of the
                       connections (default 1)
  --rate N             open-loop pacing: send N requests per second in all,
                       spaced evenly and spread round-robin over the
                       connections, instead of keeping --depth in flight;
                       --depth then caps the requests in flight per
                       connection (a due request waits for a free slot)
  --no-validate        only count reply lines, one per request, without
                       checking them: for the epoll-reference server, whose
                       reply is fixed (IAMAT-only mixes)

propagation mode:
  --propagation        select this mode
  --origin HOST:PORT   the server that receives the IAMATs
  --samples N          IAMATs to send, one at a time (default 100)
  --interval-ms M      time from the start of one sample to the start of the
                       next (default 20)

Requests. IAMAT lines are "IAMAT bench-<i> <location> <now>", the location
fixed per client (a deterministic variation of +34.068930-118.445127) and
<now> the wall clock as <sec>.<9 digits>. WHATSAT lines are
"WHATSAT bench-<i> <radius> <bound>"; when the mix has WHATSAT, one IAMAT per
client is sent to every target first, and its replies awaited.

Validation. An IAMAT reply must be exactly "AT <server> <+|-><s>.<9 digits>
<client> <location> <time>" with the last three fields as sent. A WHATSAT
reply must be an AT line for the same client and location, then a JSON object
(starts with '{', balanced braces and brackets outside strings, has "status")
and an empty line. Replies are matched to requests in order per connection.
Anything else, a connection closed by the server, and requests still without
a reply 5 s after the end are errors; the first 3 are printed on stderr.

Latency is reply time minus send time (monotonic clock), recorded from the
replies that arrive in the measured window; throughput is those replies per
second of the window. With --rate the send time is the time the request was
due, so a sender that falls behind shows in the latency, and the summary
also has the achieved send rate (requests sent in the window per second)
and the requests sent more than 1 ms after they were due. Propagation
samples use client IDs prop-<run>-<k> (<run>: a tag unique to the run) and
take the time from sending the IAMAT to sending the first WHATSAT that found
it, the latest over all targets; a sample not complete within 5 s is an
error.

Output: a summary, then one line "RESULT {json}". In load mode the JSON has
"requests" (measured) and "total_requests" (every reply, warm-up and drain
included), "target_rate" (--rate, or null), "send_rate" (requests sent in
the window per second) and "late_sends". Exit status: 0 without errors, 1
with errors, 2 for a bad command line.
)";

constexpr int64_t k_sec = 1000000000;
constexpr int64_t k_wait_limit_ns = 5 * k_sec;

[[noreturn]] void die(const std::string& message, int code = 2) {
  std::fprintf(stderr, "herd-bench: %s\n", message.c_str());
  std::exit(code);
}

int64_t clock_ns(clockid_t id) {
  timespec ts{};
  clock_gettime(id, &ts);
  return static_cast<int64_t>(ts.tv_sec) * k_sec + ts.tv_nsec;
}
int64_t mono_ns() {
  return clock_ns(CLOCK_MONOTONIC);
}
int64_t real_ns() {
  return clock_ns(CLOCK_REALTIME);
}

/// Writes `ns` as "<sec>.<9 digits>"; returns the length (at most 30).
size_t format_time(char* out, int64_t ns) {
  auto sec = static_cast<uint64_t>(ns / k_sec);
  auto frac = static_cast<uint32_t>(ns % k_sec);
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + sec % 10);
    sec /= 10;
  } while (sec != 0);
  size_t len = 0;
  while (n > 0)
    out[len++] = tmp[--n];
  out[len++] = '.';
  for (int i = 8; i >= 0; --i) {
    out[len + static_cast<size_t>(i)] = static_cast<char>('0' + frac % 10);
    frac /= 10;
  }
  return len + 9;
}

/// Printable rendering of reply bytes for error messages.
std::string escape(string_view s, size_t limit = 240) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < limit; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c >= 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > limit)
    out += "...(" + std::to_string(s.size()) + " bytes)";
  return out;
}

// -- histogram --------------------------------------------------------------

/// Log-linear latency histogram in nanoseconds: exact below 2048 ns, then
/// 1024 buckets per power of two (relative error under 0.1 %), up to 60 s.
/// Allocated once; recording is an index computation and an increment.
class histogram {
 public:
  static constexpr int sub_bits = 10;
  static constexpr uint64_t sub = uint64_t{1} << sub_bits;
  static constexpr uint64_t max_value = 60ULL * 1000000000ULL;

  histogram() : counts_(index(max_value) + 1, 0) {}

  static size_t index(uint64_t v) {
    if (v < 2 * sub)
      return static_cast<size_t>(v);
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - sub_bits;
    return static_cast<size_t>(static_cast<uint64_t>(shift + 1) * sub +
                               (v >> shift) - sub);
  }
  /// The largest value that falls into bucket `i`.
  static uint64_t upper(size_t i) {
    if (i < 2 * sub)
      return i;
    uint64_t shift = i / sub - 1;
    uint64_t mant = i % sub + sub;
    return ((mant + 1) << shift) - 1;
  }

  void record(int64_t ns) {
    uint64_t v = ns < 0 ? 0 : static_cast<uint64_t>(ns);
    if (v > max_value)
      v = max_value;
    ++counts_[index(v)];
    ++total_;
    sum_ += v;
    if (v > max_)
      max_ = v;
  }
  void merge(const histogram& o) {
    for (size_t i = 0; i < counts_.size(); ++i)
      counts_[i] += o.counts_[i];
    total_ += o.total_;
    sum_ += o.sum_;
    max_ = std::max(max_, o.max_);
  }
  uint64_t total() const { return total_; }
  uint64_t max() const { return max_; }
  double mean() const {
    return total_ ? static_cast<double>(sum_) / static_cast<double>(total_)
                  : 0.0;
  }
  /// The value at quantile q (0..1): the upper end of its bucket.
  uint64_t percentile(double q) const {
    if (total_ == 0)
      return 0;
    auto rank =
        static_cast<uint64_t>(std::ceil(q * static_cast<double>(total_)));
    rank = std::clamp<uint64_t>(rank, 1, total_);
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= rank)
        return std::min(upper(i), max_);
    }
    return max_;
  }

 private:
  std::vector<uint64_t> counts_;
  uint64_t total_ = 0;
  uint64_t sum_ = 0;
  uint64_t max_ = 0;
};

double us(uint64_t ns) {
  return static_cast<double>(ns) / 1000.0;
}

// -- options ----------------------------------------------------------------

struct endpoint {
  std::string text;
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
};

struct options {
  std::vector<endpoint> targets;
  endpoint origin;
  bool has_origin = false;
  uint32_t connections = 64;
  uint32_t depth = 1;
  double duration = 10;
  double warmup = 2;
  double w_iamat = 1;
  double w_whatsat = 0;
  uint32_t clients = 1000;
  std::string radius = "10";
  int bound = 5;
  uint64_t max_requests = 0;
  uint64_t seed = 1;
  uint32_t threads = 1;
  double rate = 0; ///< requests per second in all; 0: closed loop
  bool validate = true;
  bool propagation = false;
  uint32_t samples = 100;
  uint32_t interval_ms = 20;
};

uint64_t parse_uint(string_view option, const char* text, uint64_t min,
                    uint64_t max) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text, &end, 10);
  if (*text == '\0' || *end != '\0' || errno != 0 || *text == '-' ||
      *text == '+' || v < min || v > max)
    die(std::string(option) + ": \"" + text + "\" is not a number from " +
        std::to_string(min) + " to " + std::to_string(max));
  return v;
}

double parse_double(string_view option, const char* text, double min,
                    double max) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(text, &end);
  if (*text == '\0' || *end != '\0' || errno != 0 || !(v >= min && v <= max))
    die(std::string(option) + ": \"" + text + "\" is not a number from " +
        std::to_string(min) + " to " + std::to_string(max));
  return v;
}

endpoint parse_endpoint(string_view option, const std::string& text) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    die(std::string(option) + ": \"" + text + "\" is not HOST:PORT");
  std::string host = text.substr(0, colon);
  std::string port = text.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  parse_uint(option, port.c_str(), 1, 65535);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr)
    die(std::string(option) + ": cannot resolve \"" + host +
        "\": " + gai_strerror(rc));
  endpoint ep;
  ep.text = text;
  std::memcpy(&ep.addr, res->ai_addr, res->ai_addrlen);
  ep.addr_len = res->ai_addrlen;
  freeaddrinfo(res);
  return ep;
}

void parse_mix(options& opt, const std::string& text) {
  bool any = false;
  double iamat = 0, whatsat = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    std::string item = text.substr(
        pos, comma == std::string::npos ? std::string::npos : comma - pos);
    auto eq = item.find('=');
    if (eq == std::string::npos)
      die("--mix: \"" + item + "\" is not KEY=WEIGHT");
    std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    double w = parse_double("--mix", value.c_str(), 0, 1e9);
    if (key == "iamat")
      iamat = w;
    else if (key == "whatsat")
      whatsat = w;
    else
      die("--mix: unknown request \"" + key + "\" (iamat, whatsat)");
    any = true;
    if (comma == std::string::npos)
      break;
    pos = comma + 1;
  }
  if (!any || iamat + whatsat <= 0)
    die("--mix: the weights must not all be zero");
  opt.w_iamat = iamat;
  opt.w_whatsat = whatsat;
}

options parse_options(int argc, char** argv) {
  options opt;
  for (int i = 1; i < argc; ++i) {
    string_view arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc)
        die(std::string(arg) + " needs a value (see --help)");
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    } else if (arg == "--target") {
      opt.targets.push_back(parse_endpoint(arg, value()));
    } else if (arg == "--origin") {
      opt.origin = parse_endpoint(arg, value());
      opt.has_origin = true;
    } else if (arg == "--connections") {
      opt.connections =
          static_cast<uint32_t>(parse_uint(arg, value(), 1, 100000));
    } else if (arg == "--depth") {
      opt.depth = static_cast<uint32_t>(parse_uint(arg, value(), 1, 4096));
    } else if (arg == "--duration") {
      opt.duration = parse_double(arg, value(), 0.001, 86400);
    } else if (arg == "--warmup") {
      opt.warmup = parse_double(arg, value(), 0, 86400);
    } else if (arg == "--mix") {
      parse_mix(opt, value());
    } else if (arg == "--clients") {
      opt.clients =
          static_cast<uint32_t>(parse_uint(arg, value(), 1, 10000000));
    } else if (arg == "--radius") {
      opt.radius = value();
      if (!herd::proto::parse_radius_m(opt.radius))
        die("--radius: \"" + opt.radius + "\" is not a radius 0 < KM <= 50");
    } else if (arg == "--bound") {
      const char* v = value();
      auto b = herd::proto::parse_bound(v);
      if (!b)
        die(std::string("--bound: \"") + v + "\" is not a bound 0..20");
      opt.bound = *b;
    } else if (arg == "--max-requests") {
      opt.max_requests = parse_uint(arg, value(), 1, UINT64_MAX / 2);
    } else if (arg == "--seed") {
      opt.seed = parse_uint(arg, value(), 0, UINT64_MAX);
    } else if (arg == "--threads") {
      opt.threads = static_cast<uint32_t>(parse_uint(arg, value(), 1, 256));
    } else if (arg == "--rate") {
      opt.rate = parse_double(arg, value(), 1, 1e8);
    } else if (arg == "--no-validate") {
      opt.validate = false;
    } else if (arg == "--propagation") {
      opt.propagation = true;
    } else if (arg == "--samples") {
      opt.samples =
          static_cast<uint32_t>(parse_uint(arg, value(), 1, 10000000));
    } else if (arg == "--interval-ms") {
      opt.interval_ms =
          static_cast<uint32_t>(parse_uint(arg, value(), 0, 3600000));
    } else {
      die("unknown option \"" + std::string(arg) + "\" (see --help)");
    }
  }
  if (opt.targets.empty())
    die("at least one --target HOST:PORT is needed (see --help)");
  if (opt.propagation && !opt.has_origin)
    die("--propagation needs --origin HOST:PORT");
  if (!opt.propagation && opt.has_origin)
    die("--origin is only for --propagation");
  if (opt.propagation && opt.rate > 0)
    die("--rate is only for load mode");
  if (!opt.validate && opt.w_whatsat > 0)
    die("--no-validate counts one line per reply: it needs an IAMAT-only mix");
  opt.threads = std::min(opt.threads, opt.connections);
  return opt;
}

// -- sockets ----------------------------------------------------------------

/// A non-blocking TCP connection with TCP_NODELAY; -1 (errno set) on failure
/// or after 5 s.
int connect_to(const endpoint& ep) {
  int fd =
      socket(ep.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&ep.addr), ep.addr_len) !=
      0) {
    if (errno != EINPROGRESS) {
      int e = errno;
      close(fd);
      errno = e;
      return -1;
    }
    pollfd p{fd, POLLOUT, 0};
    int rc;
    do {
      rc = poll(&p, 1, 5000);
    } while (rc < 0 && errno == EINTR);
    int err = 0;
    socklen_t len = sizeof err;
    if (rc <= 0) {
      err = ETIMEDOUT;
    } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
      err = errno;
    }
    if (err != 0) {
      close(fd);
      errno = err;
      return -1;
    }
  }
  return fd;
}

int connect_or_die(const endpoint& ep) {
  int fd = connect_to(ep);
  if (fd < 0)
    die("cannot connect to " + ep.text + ": " + std::strerror(errno), 1);
  return fd;
}

/// Writes everything before `deadline` (monotonic ns); false on failure.
bool write_all(int fd, const char* data, size_t len, int64_t deadline) {
  while (len > 0) {
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    if (n > 0) {
      data += n;
      len -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int64_t left = deadline - mono_ns();
      if (left <= 0)
        return false;
      pollfd p{fd, POLLOUT, 0};
      poll(&p, 1, static_cast<int>(left / 1000000 + 1));
      continue;
    }
    return false;
  }
  return true;
}

/// Appends what can be read to `buf` (growing it), waiting until `deadline`
/// at most. Returns bytes read, 0 at EOF, -1 on error or timeout.
ssize_t read_some(int fd, std::vector<char>& buf, size_t& len,
                  int64_t deadline) {
  for (;;) {
    if (len == buf.size())
      buf.resize(buf.size() * 2);
    ssize_t n = recv(fd, buf.data() + len, buf.size() - len, 0);
    if (n > 0) {
      len += static_cast<size_t>(n);
      return n;
    }
    if (n == 0)
      return 0;
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return -1;
    int64_t left = deadline - mono_ns();
    if (left <= 0)
      return -1;
    pollfd p{fd, POLLIN, 0};
    poll(&p, 1, static_cast<int>(left / 1000000 + 1));
  }
}

// -- requests and validation -----------------------------------------------

enum : uint8_t { kind_iamat = 0, kind_whatsat = 1 };

/// Every request line, built once: "IAMAT bench-<i> <loc> " (the time and
/// '\n' are appended per request) and "WHATSAT bench-<i> <r> <b>\n".
class catalog {
 public:
  catalog(uint32_t clients, const std::string& radius, int bound) {
    struct offs {
      size_t iamat, iamat_len, whatsat, whatsat_len;
    };
    std::vector<offs> o;
    o.reserve(clients);
    char buf[256];
    for (uint32_t i = 0; i < clients; ++i) {
      // A fixed, client-specific nudge of the reference location (micro-
      // degrees), so that every run stores the same place per client.
      long lat = 34068930L + static_cast<long>((i * 7919UL) % 200000UL);
      long lon = 118445127L + static_cast<long>((i * 104729UL) % 400000UL);
      int n = std::snprintf(
          buf, sizeof buf, "IAMAT bench-%u +%ld.%06ld-%ld.%06ld ", i,
          lat / 1000000, lat % 1000000, lon / 1000000, lon % 1000000);
      offs e{};
      e.iamat = arena_.size();
      e.iamat_len = static_cast<size_t>(n);
      arena_.append(buf, e.iamat_len);
      n = std::snprintf(buf, sizeof buf, "WHATSAT bench-%u %s %d\n", i,
                        radius.c_str(), bound);
      e.whatsat = arena_.size();
      e.whatsat_len = static_cast<size_t>(n);
      arena_.append(buf, e.whatsat_len);
      max_len_ = std::max({max_len_, e.iamat_len + 32, e.whatsat_len});
      o.push_back(e);
    }
    for (auto& e : o)
      entries_.push_back(
          {string_view(arena_).substr(e.iamat, e.iamat_len),
           string_view(arena_).substr(e.whatsat, e.whatsat_len)});
  }
  catalog(const catalog&) = delete;
  catalog& operator=(const catalog&) = delete;

  string_view iamat_prefix(uint32_t c) const { return entries_[c].iamat; }
  /// "bench-<i> <location> ": what an AT line echoes before the time.
  string_view echo(uint32_t c) const { return entries_[c].iamat.substr(6); }
  string_view whatsat(uint32_t c) const { return entries_[c].whatsat; }
  size_t max_request_len() const { return max_len_; }

 private:
  struct entry {
    string_view iamat, whatsat;
  };
  std::string arena_;
  std::vector<entry> entries_;
  size_t max_len_ = 0;
};

struct xorshift {
  uint64_t s;
  explicit xorshift(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ULL + 1) {
    for (int i = 0; i < 4; ++i)
      next();
  }
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1DULL;
  }
};

std::atomic<int> error_samples{0};

/// Whether another error sample may still be printed (3 in all).
bool want_error_sample() {
  return error_samples.load(std::memory_order_relaxed) < 3;
}

void report_error(const char* what, string_view request, string_view reply) {
  if (error_samples.fetch_add(1, std::memory_order_relaxed) >= 3)
    return;
  std::string msg = std::string("herd-bench: error: ") + what;
  if (!request.empty())
    msg += "\n  sent: " + escape(request);
  if (!reply.empty())
    msg += "\n  got:  " + escape(reply);
  std::fprintf(stderr, "%s\n", msg.c_str());
}

// -- load mode --------------------------------------------------------------

struct pending {
  int64_t sent_ns;
  uint32_t client;
  uint8_t kind;
  uint8_t time_len;
  char time_text[30];
};

struct conn {
  int fd = -1;
  bool open = false;
  bool out_armed = false;
  std::vector<char> rbuf;
  size_t rlen = 0;
  size_t scanned = 0; ///< of the incomplete reply at rbuf[0], see reply_length
  std::vector<char> wbuf;
  size_t wpos = 0, wlen = 0;
  std::vector<pending> fifo; ///< ring of requests awaiting replies
  uint32_t head = 0, count = 0, mask = 0;
};

struct run_clock {
  int64_t start;
  int64_t warm;
  int64_t end;
};

/// epoll data of a worker's pacing timer (connections are 0, 1, ...).
constexpr uint32_t timer_id = UINT32_MAX;

class worker {
 public:
  worker(const options& opt, const catalog& cat, run_clock clock, uint64_t seed,
         uint64_t cap)
      : opt_(opt), cat_(cat), clock_(clock), rng_(seed), cap_(cap) {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0)
      die(std::string("epoll_create1: ") + std::strerror(errno), 1);
    // P(WHATSAT) as a threshold on a uniform 64-bit draw; the largest
    // double below 2^64 keeps the conversion defined.
    double share = opt.w_whatsat / (opt.w_iamat + opt.w_whatsat);
    if (opt.w_whatsat <= 0)
      whatsat_threshold_ = 0;
    else if (opt.w_iamat <= 0)
      whatsat_threshold_ = UINT64_MAX;
    else
      whatsat_threshold_ = static_cast<uint64_t>(
          std::min(share * 18446744073709551616.0, 18446744073709549568.0));
  }
  ~worker() {
    for (auto& c : conns_)
      if (c.fd >= 0)
        close(c.fd);
    if (timer_ >= 0)
      close(timer_);
    close(ep_);
  }
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;

  size_t size() const { return conns_.size(); }

  void add(int fd) {
    conns_.emplace_back();
    conn& c = conns_.back();
    c.fd = fd;
    c.open = true;
    c.rbuf.resize(64 * 1024);
    c.wbuf.resize(opt_.depth * cat_.max_request_len() + 64);
    uint32_t cap = 1;
    while (cap < opt_.depth)
      cap <<= 1;
    c.fifo.resize(cap);
    c.mask = cap - 1;
  }

  /// Paces this worker at `rate` requests per second, its first request
  /// due `offset_ns` after the start of the run.
  void set_rate(double rate, int64_t offset_ns) {
    period_ = 1e9 / rate;
    pace_start_ = clock_.start + offset_ns;
  }

  void run() {
    for (uint32_t i = 0; i < conns_.size(); ++i) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u32 = i;
      if (epoll_ctl(ep_, EPOLL_CTL_ADD, conns_[i].fd, &ev) != 0)
        die(std::string("epoll_ctl: ") + std::strerror(errno), 1);
      ++open_;
    }
    if (paced()) {
      // Wake-ups as close to the due time as the kernel allows.
      prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
      timer_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
      if (timer_ < 0)
        die(std::string("timerfd_create: ") + std::strerror(errno), 1);
      // Edge-triggered: an expiry wakes the loop once; re-arming resets it,
      // so the timer is never read.
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLET;
      ev.data.u32 = timer_id;
      if (epoll_ctl(ep_, EPOLL_CTL_ADD, timer_, &ev) != 0)
        die(std::string("epoll_ctl: ") + std::strerror(errno), 1);
    }
    sending_ = true;
    for (auto& c : conns_)
      fill(c);
    epoll_event events[256];
    int64_t stop_ns = 0;
    for (;;) {
      int64_t now = mono_ns();
      if (sending_ && (now >= clock_.end || (cap_ != 0 && sent_ >= cap_))) {
        sending_ = false;
        stop_ns = now;
      }
      if (sending_ && paced())
        pace(now);
      if (!sending_) {
        if (inflight_ == 0 || open_ == 0)
          break;
        if (now >= stop_ns + k_wait_limit_ns) {
          errors_ += inflight_;
          char what[96];
          std::snprintf(what, sizeof what,
                        "%" PRIu64
                        " requests without a reply 5 s after the end",
                        inflight_);
          report_error(what, {}, {});
          break;
        }
      }
      int64_t wake = sending_ ? clock_.end : stop_ns + k_wait_limit_ns;
      int timeout = static_cast<int>(
          std::clamp<int64_t>((wake - now) / 1000000 + 1, 1, 1000));
      int n = epoll_wait(ep_, events, 256, timeout);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        die(std::string("epoll_wait: ") + std::strerror(errno), 1);
      }
      for (int k = 0; k < n; ++k) {
        if (events[k].data.u32 == timer_id) {
          armed_ns_ = 0;
          continue;
        }
        conn& c = conns_[events[k].data.u32];
        if (!c.open)
          continue;
        uint32_t ev = events[k].events;
        if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
          on_readable(c);
        if (c.open && (ev & EPOLLOUT)) {
          flush(c);
          fill(c);
        }
      }
    }
  }

  histogram hist;
  uint64_t sent_ = 0;      ///< requests sent
  uint64_t completed_ = 0; ///< replies received, valid or not
  uint64_t measured_ = 0;  ///< valid replies in the measured window
  uint64_t errors_ = 0;
  int64_t last_reply_ns_ = 0;
  uint64_t sent_window_ = 0; ///< requests sent in the measured window
  uint64_t late_ = 0;        ///< paced requests sent > 1 ms after due

 private:
  bool paced() const { return period_ > 0; }
  uint32_t pick_client() {
    uint64_t r = rng_.next();
    return static_cast<uint32_t>(((r >> 32) * opt_.clients) >> 32);
  }
  bool pick_whatsat() {
    if (whatsat_threshold_ == 0)
      return false;
    return rng_.next() < whatsat_threshold_;
  }

  void arm_out(conn& c, bool on) {
    epoll_event ev{};
    ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
    ev.data.u32 = static_cast<uint32_t>(&c - conns_.data());
    epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
    c.out_armed = on;
  }

  void fail_conn(conn& c, const char* what) {
    char msg[160];
    std::snprintf(msg, sizeof msg, "%s (%s), %u requests in flight", what,
                  errno ? std::strerror(errno) : "closed", c.count);
    report_error(msg, {}, {});
    errors_ += 1 + c.count;
    inflight_ -= c.count;
    c.count = 0;
    c.open = false;
    epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
    close(c.fd);
    c.fd = -1;
    --open_;
  }

  /// Writes the next request at `p` and fills in `e`; returns the end.
  char* put_request(pending& e, char* p, const char* tbuf, size_t tlen) {
    e.client = pick_client();
    if (pick_whatsat()) {
      e.kind = kind_whatsat;
      string_view r = cat_.whatsat(e.client);
      std::memcpy(p, r.data(), r.size());
      return p + r.size();
    }
    e.kind = kind_iamat;
    string_view r = cat_.iamat_prefix(e.client);
    std::memcpy(p, r.data(), r.size());
    p += r.size();
    std::memcpy(p, tbuf, tlen);
    p += tlen;
    *p++ = '\n';
    std::memcpy(e.time_text, tbuf, tlen);
    e.time_len = static_cast<uint8_t>(tlen);
    return p;
  }

  /// Sends every request that is due by `now`, each on the next connection
  /// (round-robin) with a free slot, and arms the timer for the next one.
  /// Stops when no connection has a free slot: a reply resumes it. Each
  /// request sent takes a slot, so one call sends at most connections x
  /// depth requests.
  void pace(int64_t now) {
    const size_t n = conns_.size();
    for (;;) {
      if (cap_ != 0 && sent_ >= cap_)
        return;
      int64_t due =
          pace_start_ +
          static_cast<int64_t>(static_cast<double>(scheduled_) * period_);
      if (due > now) {
        if (due != armed_ns_) {
          itimerspec its{};
          its.it_value.tv_sec = static_cast<time_t>(due / k_sec);
          its.it_value.tv_nsec = static_cast<long>(due % k_sec);
          timerfd_settime(timer_, TFD_TIMER_ABSTIME, &its, nullptr);
          armed_ns_ = due;
        }
        return;
      }
      conn* c = nullptr;
      for (size_t k = 0; k < n && c == nullptr; ++k) {
        conn& cand = conns_[rr_];
        rr_ = rr_ + 1 == n ? 0 : rr_ + 1;
        if (cand.open && cand.count < opt_.depth)
          c = &cand;
      }
      if (c == nullptr)
        return;
      send_one(*c, due, now);
      ++scheduled_;
    }
  }

  /// Appends one request, due at `due`, to the connection's output.
  void send_one(conn& c, int64_t due, int64_t now) {
    if (c.wpos != 0) {
      // Unsent bytes belong to requests in flight: they fit in the buffer.
      std::memmove(c.wbuf.data(), c.wbuf.data() + c.wpos, c.wlen - c.wpos);
      c.wlen -= c.wpos;
      c.wpos = 0;
    }
    char tbuf[32];
    size_t tlen = format_time(tbuf, real_ns());
    pending& e = c.fifo[(c.head + c.count) & c.mask];
    char* p = put_request(e, c.wbuf.data() + c.wlen, tbuf, tlen);
    e.sent_ns = due;
    ++c.count;
    ++sent_;
    ++inflight_;
    if (now >= clock_.warm && now < clock_.end)
      ++sent_window_;
    if (now - due > 1000000)
      ++late_;
    c.wlen = static_cast<size_t>(p - c.wbuf.data());
    flush(c);
  }

  /// Tops the connection up to `depth` requests in flight, in one write.
  void fill(conn& c) {
    if (!sending_ || !c.open || c.wlen != 0 || paced())
      return;
    uint64_t want = opt_.depth - c.count;
    if (cap_ != 0)
      want = std::min<uint64_t>(want, cap_ - sent_);
    if (want == 0)
      return;
    char tbuf[32];
    size_t tlen = format_time(tbuf, real_ns());
    char* p = c.wbuf.data();
    uint32_t first = c.count;
    for (uint64_t k = 0; k < want; ++k) {
      p = put_request(c.fifo[(c.head + c.count) & c.mask], p, tbuf, tlen);
      ++c.count;
    }
    int64_t now = mono_ns();
    for (uint32_t k = first; k < c.count; ++k)
      c.fifo[(c.head + k) & c.mask].sent_ns = now;
    sent_ += want;
    inflight_ += want;
    if (now >= clock_.warm && now < clock_.end)
      sent_window_ += want;
    c.wpos = 0;
    c.wlen = static_cast<size_t>(p - c.wbuf.data());
    flush(c);
  }

  void flush(conn& c) {
    while (c.wpos < c.wlen) {
      ssize_t n =
          send(c.fd, c.wbuf.data() + c.wpos, c.wlen - c.wpos, MSG_NOSIGNAL);
      if (n > 0) {
        c.wpos += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!c.out_armed)
          arm_out(c, true);
        return;
      }
      fail_conn(c, "send failed");
      return;
    }
    c.wpos = c.wlen = 0;
    if (c.out_armed)
      arm_out(c, false);
  }

  void on_readable(conn& c) {
    for (int round = 0; round < 16; ++round) {
      if (c.rlen == c.rbuf.size()) {
        if (c.rbuf.size() >= (64u << 20)) {
          errno = 0;
          fail_conn(c, "a reply longer than 64 MiB");
          return;
        }
        c.rbuf.resize(c.rbuf.size() * 2);
      }
      size_t space = c.rbuf.size() - c.rlen;
      ssize_t n = recv(c.fd, c.rbuf.data() + c.rlen, space, 0);
      if (n > 0) {
        c.rlen += static_cast<size_t>(n);
        parse(c, mono_ns());
        if (static_cast<size_t>(n) < space)
          break;
        continue;
      }
      if (n == 0) {
        errno = 0;
        fail_conn(c, "connection closed by the server");
        return;
      }
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        break;
      fail_conn(c, "recv failed");
      return;
    }
    fill(c);
  }

  /// Matches every complete reply in the buffer to the oldest request.
  void parse(conn& c, int64_t now) {
    char* buf = c.rbuf.data();
    size_t len = c.rlen, pos = 0;
    while (pos < len) {
      const char* s = buf + pos;
      size_t avail = len - pos;
      if (c.count == 0) {
        errors_ += 1;
        report_error("data without a request outstanding", {},
                     string_view(s, avail));
        pos = len;
        break;
      }
      pending& e = c.fifo[c.head];
      bool multi = opt_.validate && e.kind == kind_whatsat;
      size_t line_len = 0;
      size_t used = reply_length(s, avail, multi, &line_len, &c.scanned);
      if (used == 0)
        break;
      c.scanned = 0;
      bool ok = true;
      if (opt_.validate) {
        string_view line(s, line_len);
        if (e.kind == kind_iamat) {
          ok = check_iamat_reply(line, cat_.echo(e.client),
                                 string_view(e.time_text, e.time_len));
        } else {
          ok = used >= line.size() + 3 &&
               check_whatsat_at(line, cat_.echo(e.client)) &&
               check_json(
                   string_view(s + line.size() + 1, used - line.size() - 3));
        }
      }
      ++completed_;
      last_reply_ns_ = now;
      if (ok) {
        if (now >= clock_.warm && now < clock_.end) {
          ++measured_;
          hist.record(now - e.sent_ns);
        }
      } else {
        ++errors_;
        report_invalid(e, string_view(s, used));
      }
      c.head = (c.head + 1) & c.mask;
      --c.count;
      --inflight_;
      pos += used;
    }
    if (pos != 0) {
      std::memmove(buf, buf + pos, len - pos);
      c.rlen = len - pos;
    }
  }

  void report_invalid(const pending& e, string_view reply) {
    if (!want_error_sample())
      return;
    std::string req;
    if (e.kind == kind_iamat) {
      req = std::string(cat_.iamat_prefix(e.client)) +
            std::string(e.time_text, e.time_len) + "\n";
    } else {
      req = std::string(cat_.whatsat(e.client));
    }
    report_error("invalid reply", req, reply);
  }

  const options& opt_;
  const catalog& cat_;
  run_clock clock_;
  xorshift rng_;
  uint64_t cap_;
  uint64_t whatsat_threshold_ = 0;
  int ep_ = -1;
  int timer_ = -1;
  double period_ = 0;      ///< ns between paced requests; 0: closed loop
  int64_t pace_start_ = 0; ///< when the first paced request is due
  uint64_t scheduled_ = 0; ///< paced requests sent so far
  int64_t armed_ns_ = 0;   ///< the timer's expiry, 0 when not armed
  size_t rr_ = 0;          ///< the next connection to try
  std::vector<conn> conns_;
  uint64_t inflight_ = 0;
  uint32_t open_ = 0;
  bool sending_ = false;
};

/// One IAMAT per client on `target`, pipelined in windows, every reply
/// checked: afterwards every WHATSAT of the run finds its client.
void prefill(const options& opt, const catalog& cat, const endpoint& target) {
  int fd = connect_or_die(target);
  const uint32_t window = 100;
  std::string out;
  std::vector<char> buf(64 * 1024);
  std::vector<std::string> times;
  int64_t deadline = mono_ns() + 30 * k_sec;
  for (uint32_t first = 0; first < opt.clients; first += window) {
    uint32_t last = std::min(opt.clients, first + window);
    out.clear();
    times.clear();
    char tbuf[32];
    for (uint32_t c = first; c < last; ++c) {
      times.emplace_back(tbuf, format_time(tbuf, real_ns()));
      out += cat.iamat_prefix(c);
      out += times.back();
      out += '\n';
    }
    if (!write_all(fd, out.data(), out.size(), deadline))
      die("prefill: cannot write to " + target.text, 1);
    size_t len = 0, pos = 0;
    uint32_t c = first;
    while (c < last) {
      size_t used = reply_length(buf.data() + pos, len - pos, false);
      if (used == 0) {
        if (pos != 0) {
          std::memmove(buf.data(), buf.data() + pos, len - pos);
          len -= pos;
          pos = 0;
        }
        if (read_some(fd, buf, len, deadline) <= 0)
          die("prefill: no reply from " + target.text, 1);
        continue;
      }
      string_view line(buf.data() + pos, used - 1);
      if (!check_iamat_reply(line, cat.echo(c), times[c - first])) {
        report_error("invalid reply while storing the clients' locations", out,
                     line);
        die("prefill on " + target.text + " failed", 1);
      }
      pos += used;
      ++c;
    }
  }
  close(fd);
}

std::string json_escape(string_view s) {
  std::string out;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\u%04x", c);
      out += hex;
    } else {
      out += ch;
    }
  }
  return out;
}

int run_load(const options& opt) {
  catalog cat(opt.clients, opt.radius, opt.bound);
  // Self-check: the generated lines are well-formed for the server's parser.
  {
    char tbuf[32];
    std::string line(cat.iamat_prefix(opt.clients - 1));
    line.append(tbuf, format_time(tbuf, real_ns()));
    if (herd::proto::parse_line(line).kind != herd::proto::line_kind::iamat ||
        herd::proto::parse_line(
            herd::proto::strip_terminator(cat.whatsat(opt.clients - 1)))
                .kind != herd::proto::line_kind::whatsat)
      die("internal error: generated requests do not parse", 1);
  }
  if (opt.w_whatsat > 0)
    for (auto& t : opt.targets)
      prefill(opt, cat, t);

  std::vector<int> fds;
  fds.reserve(opt.connections);
  for (uint32_t i = 0; i < opt.connections; ++i)
    fds.push_back(connect_or_die(opt.targets[i % opt.targets.size()]));

  int64_t start = mono_ns();
  run_clock clock{start, start + static_cast<int64_t>(opt.warmup * 1e9),
                  start +
                      static_cast<int64_t>((opt.warmup + opt.duration) * 1e9)};
  std::vector<std::unique_ptr<worker>> workers;
  for (uint32_t t = 0; t < opt.threads; ++t) {
    uint64_t cap = 0;
    if (opt.max_requests != 0) {
      cap = opt.max_requests / opt.threads +
            (t < opt.max_requests % opt.threads ? 1 : 0);
      if (cap == 0)
        continue;
    }
    workers.push_back(
        std::make_unique<worker>(opt, cat, clock, opt.seed * 1000003 + t, cap));
  }
  for (uint32_t i = 0; i < fds.size(); ++i)
    workers[i % workers.size()]->add(fds[i]);
  if (opt.rate > 0) {
    // Each worker's share of the rate follows its share of the connections;
    // their schedules are interleaved, so the sum is evenly spaced too.
    for (size_t t = 0; t < workers.size(); ++t)
      workers[t]->set_rate(
          opt.rate * static_cast<double>(workers[t]->size()) /
              static_cast<double>(fds.size()),
          static_cast<int64_t>(1e9 / opt.rate * static_cast<double>(t)));
  }

  std::vector<std::thread> threads;
  for (size_t t = 1; t < workers.size(); ++t)
    threads.emplace_back([w = workers[t].get()] { w->run(); });
  workers[0]->run();
  for (auto& th : threads)
    th.join();

  histogram hist;
  uint64_t sent = 0, completed = 0, measured = 0, errors = 0;
  uint64_t sent_window = 0, late = 0;
  int64_t last_reply = 0;
  for (auto& w : workers) {
    hist.merge(w->hist);
    sent += w->sent_;
    sent_window += w->sent_window_;
    late += w->late_;
    completed += w->completed_;
    measured += w->measured_;
    errors += w->errors_;
    last_reply = std::max(last_reply, w->last_reply_ns_);
  }
  double window =
      static_cast<double>(
          std::min(clock.end, std::max(last_reply, clock.warm)) - clock.warm) /
      1e9;
  double throughput = window > 0 ? static_cast<double>(measured) / window : 0;
  double send_rate = window > 0 ? static_cast<double>(sent_window) / window : 0;
  char target_rate[32] = "null";
  if (opt.rate > 0)
    std::snprintf(target_rate, sizeof target_rate, "%.1f", opt.rate);

  std::string targets;
  for (auto& t : opt.targets)
    targets += (targets.empty() ? "\"" : ",\"") + json_escape(t.text) + "\"";
  std::printf("herd-bench load: %u connections x depth %u over %zu target(s), "
              "%u thread(s), %.1f s measured after %.1f s warm-up%s\n",
              opt.connections, opt.depth, opt.targets.size(), opt.threads,
              window, opt.warmup, opt.validate ? "" : " (not validated)");
  std::printf("  requests     %" PRIu64 " measured, %" PRIu64
              " in all (warm-up and drain included), %" PRIu64 " sent\n",
              measured, completed, sent);
  std::printf("  throughput   %.0f req/s\n", throughput);
  if (opt.rate > 0)
    std::printf("  rate         %.0f req/s target, %.0f req/s sent, %" PRIu64
                " sent more than 1 ms late\n",
                opt.rate, send_rate, late);
  std::printf("  latency      p50 %.1f us  p90 %.1f us  p99 %.1f us  "
              "p99.9 %.1f us  max %.1f us  mean %.1f us\n",
              us(hist.percentile(0.5)), us(hist.percentile(0.9)),
              us(hist.percentile(0.99)), us(hist.percentile(0.999)),
              us(hist.max()), hist.mean() / 1000.0);
  std::printf("  errors       %" PRIu64 "\n", errors);
  std::printf(
      "RESULT {\"mode\":\"load\",\"requests\":%" PRIu64
      ",\"total_requests\":%" PRIu64 ",\"sent\":%" PRIu64
      ",\"duration_s\":%.3f,\"warmup_s\":%.3f,\"throughput\":%.1f,"
      "\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,"
      "\"max_us\":%.1f,\"mean_us\":%.1f,\"errors\":%" PRIu64
      ",\"connections\":%u,\"depth\":%u,\"threads\":%u,\"targets\":[%s],"
      "\"mix\":{\"iamat\":%g,\"whatsat\":%g},\"clients\":%u,\"validated\":%s,"
      "\"target_rate\":%s,\"send_rate\":%.1f,\"late_sends\":%" PRIu64 "}\n",
      measured, completed, sent, window, opt.warmup, throughput,
      us(hist.percentile(0.5)), us(hist.percentile(0.9)),
      us(hist.percentile(0.99)), us(hist.percentile(0.999)), us(hist.max()),
      hist.mean() / 1000.0, errors, opt.connections, opt.depth, opt.threads,
      targets.c_str(), opt.w_iamat, opt.w_whatsat, opt.clients,
      opt.validate ? "true" : "false", target_rate, send_rate, late);
  std::fflush(stdout);
  return errors == 0 ? 0 : 1;
}

// -- propagation mode -------------------------------------------------------

struct poll_conn {
  const endpoint* ep = nullptr;
  int fd = -1;
  std::vector<char> buf = std::vector<char>(64 * 1024);
  size_t len = 0;
  bool inflight = false;
  uint32_t sample = 0;    ///< the sample of the request in flight
  int64_t sent_ns = 0;    ///< when it was sent
  bool found = false;     ///< this target has the current sample's line
  int64_t found_ns = 0;   ///< when the WHATSAT that found it was sent
  std::string found_line; ///< the AT line it answered with
  bool dead = false;
};

int run_propagation(const options& opt) {
  poll_conn origin;
  origin.ep = &opt.origin;
  origin.fd = connect_or_die(opt.origin);
  std::vector<poll_conn> targets(opt.targets.size());
  for (size_t i = 0; i < targets.size(); ++i) {
    targets[i].ep = &opt.targets[i];
    targets[i].fd = connect_or_die(opt.targets[i]);
  }
  char tag[32];
  uint64_t run_tag = (static_cast<uint64_t>(real_ns()) ^ (opt.seed << 40) ^
                      static_cast<uint64_t>(getpid())) &
                     uint64_t{0xffffffffff};
  std::snprintf(tag, sizeof tag, "%" PRIx64, run_tag);

  histogram hist;
  uint64_t errors = 0, completed = 0;
  std::vector<pollfd> pfds(targets.size() + 1);
  std::vector<uint32_t> origin_fifo; // samples whose origin reply is due
  bool broken = false;

  auto send_poll = [&](poll_conn& t, uint32_t k, const std::string& line) {
    t.inflight = true;
    t.sample = k;
    t.sent_ns = mono_ns();
    if (!write_all(t.fd, line.data(), line.size(), t.sent_ns + k_sec)) {
      report_error(("cannot write to " + t.ep->text).c_str(), line, {});
      t.dead = true;
    }
  };

  uint32_t k = 0;
  for (; k < opt.samples && !broken; ++k) {
    int64_t sample_start = mono_ns();
    std::string client = std::string("prop-") + tag + "-" + std::to_string(k);
    char loc[64];
    std::snprintf(loc, sizeof loc, "+34.%06u-118.%06u", 68930 + k % 900000,
                  445127 + (k * 7) % 500000);
    char tbuf[32];
    std::string time(tbuf, format_time(tbuf, real_ns()));
    std::string echo = client + " " + loc + " ";
    std::string iamat = "IAMAT " + echo + time + "\n";
    std::string whatsat = "WHATSAT " + client + " 1 0\n";

    int64_t t0 = mono_ns();
    if (!write_all(origin.fd, iamat.data(), iamat.size(), t0 + k_sec)) {
      report_error(("cannot write to " + origin.ep->text).c_str(), iamat, {});
      broken = true;
      break;
    }
    origin_fifo.push_back(k);
    int64_t deadline = t0 + k_wait_limit_ns;
    std::string origin_line;
    bool origin_done = false, sample_failed = false;
    for (auto& t : targets) {
      t.found = false;
      t.found_line.clear();
      if (!t.inflight)
        send_poll(t, k, whatsat);
    }
    for (;;) {
      bool all = origin_done;
      for (auto& t : targets) {
        if (t.dead)
          broken = true;
        all = all && t.found;
      }
      if (all || broken || sample_failed)
        break;
      int64_t now = mono_ns();
      if (now >= deadline)
        break;
      pfds[0] = {origin.fd, POLLIN, 0};
      for (size_t i = 0; i < targets.size(); ++i)
        pfds[i + 1] = {targets[i].fd, POLLIN, 0};
      int rc = poll(pfds.data(), pfds.size(),
                    static_cast<int>((deadline - now) / 1000000 + 1));
      if (rc < 0 && errno != EINTR)
        die(std::string("poll: ") + std::strerror(errno), 1);
      if (rc <= 0)
        continue;
      for (size_t i = 0; i < pfds.size(); ++i) {
        if (pfds[i].revents == 0)
          continue;
        poll_conn& c = i == 0 ? origin : targets[i - 1];
        ssize_t n = read_some(c.fd, c.buf, c.len, mono_ns());
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
          report_error(("connection to " + c.ep->text + " closed").c_str(), {},
                       {});
          c.dead = true;
          broken = true;
          continue;
        }
        size_t pos = 0;
        for (;;) {
          size_t used = reply_length(c.buf.data() + pos, c.len - pos, i != 0);
          if (used == 0)
            break;
          string_view reply(c.buf.data() + pos, used);
          pos += used;
          string_view line = reply.substr(0, reply.find('\n'));
          if (i == 0) {
            uint32_t s = origin_fifo.empty() ? UINT32_MAX : origin_fifo.front();
            if (!origin_fifo.empty())
              origin_fifo.erase(origin_fifo.begin());
            if (s != k)
              continue; // the late reply of an abandoned sample
            if (!check_iamat_reply(line, echo, time)) {
              report_error("invalid reply from the origin", iamat, reply);
              sample_failed = true;
              continue;
            }
            origin_line = std::string(line);
            origin_done = true;
            continue;
          }
          c.inflight = false;
          if (c.sample == k && !c.found) {
            if (reply.size() >= 3 && reply.compare(0, 3, "AT ") == 0) {
              size_t h = at_header(line);
              if (h == 0 || line.substr(h).compare(0, echo.size(), echo) != 0 ||
                  !check_json(
                      reply.substr(line.size() + 1, used - line.size() - 3))) {
                report_error(("invalid reply from " + c.ep->text).c_str(),
                             whatsat, reply);
                sample_failed = true;
                continue;
              }
              c.found = true;
              c.found_ns = c.sent_ns;
              c.found_line = std::string(line);
            } else if (reply.compare(0, 2, "? ") != 0) {
              report_error(("invalid reply from " + c.ep->text).c_str(),
                           whatsat, reply);
              sample_failed = true;
              continue;
            }
          }
        }
        if (pos != 0) {
          std::memmove(c.buf.data(), c.buf.data() + pos, c.len - pos);
          c.len -= pos;
        }
        if (i != 0 && !c.inflight && !c.found && !c.dead)
          send_poll(c, k, whatsat);
      }
    }
    bool all = origin_done;
    int64_t latest = t0;
    for (auto& t : targets) {
      all = all && t.found;
      if (t.found) {
        latest = std::max(latest, t.found_ns);
        if (origin_done && t.found_line != origin_line) {
          report_error(("WHATSAT on " + t.ep->text +
                        " answered another AT line than the origin's")
                           .c_str(),
                       origin_line, t.found_line);
          sample_failed = true;
        }
      }
    }
    if (all && !sample_failed) {
      hist.record(latest - t0);
      ++completed;
    } else {
      ++errors;
      if (!sample_failed && !broken)
        report_error(
            ("sample " + std::to_string(k) + " not complete within 5 s")
                .c_str(),
            iamat, {});
    }
    int64_t next =
        sample_start + static_cast<int64_t>(opt.interval_ms) * 1000000;
    int64_t left = next - mono_ns();
    if (left > 0 && k + 1 < opt.samples) {
      timespec ts{static_cast<time_t>(left / k_sec),
                  static_cast<long>(left % k_sec)};
      nanosleep(&ts, nullptr);
    }
  }
  if (broken)
    errors += opt.samples - k;
  close(origin.fd);
  for (auto& t : targets)
    close(t.fd);

  std::string names;
  for (auto& t : opt.targets)
    names += (names.empty() ? "\"" : ",\"") + json_escape(t.text) + "\"";
  std::printf("herd-bench propagation: origin %s, %zu target(s), %u samples "
              "every %u ms\n",
              opt.origin.text.c_str(), opt.targets.size(), opt.samples,
              opt.interval_ms);
  std::printf("  complete     %" PRIu64 " of %u samples\n", completed,
              opt.samples);
  std::printf("  time to all  p50 %.1f us  p99 %.1f us  max %.1f us  "
              "mean %.1f us\n",
              us(hist.percentile(0.5)), us(hist.percentile(0.99)),
              us(hist.max()), hist.mean() / 1000.0);
  std::printf("  errors       %" PRIu64 "\n", errors);
  std::printf(
      "RESULT {\"mode\":\"propagation\",\"samples\":%u,\"completed\":%" PRIu64
      ",\"p50_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,"
      "\"mean_us\":%.1f,\"errors\":%" PRIu64
      ",\"origin\":\"%s\",\"targets\":[%s],\"interval_ms\":%u}\n",
      opt.samples, completed, us(hist.percentile(0.5)),
      us(hist.percentile(0.99)), us(hist.max()), hist.mean() / 1000.0, errors,
      json_escape(opt.origin.text).c_str(), names.c_str(), opt.interval_ms);
  std::fflush(stdout);
  return errors == 0 ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  options opt = parse_options(argc, argv);
  return opt.propagation ? run_propagation(opt) : run_load(opt);
}
