// Helpers for end-to-end tests: real herd-node and places-stub processes on
// loopback ports, plain POSIX sockets, every wait bounded in time.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <boost/json.hpp>

namespace e2e {

using std::chrono::milliseconds;
using namespace std::chrono_literals;

/// How long a test waits for anything that should happen promptly.
constexpr milliseconds default_wait = 3000ms;

/// The Places API key every node gets unless a test says otherwise. It is
/// distinctive, so a test can look for it where it must never appear.
constexpr const char* test_api_key = "test-key-9f8e7d";

/// The legacy Nearby Search path that places-stub serves.
constexpr const char* places_path = "/maps/api/place/nearbysearch/json";

const char* herd_node_bin();
const char* places_stub_bin();

// -- small utilities ----------------------------------------------------------

/// The bytes with control and non-ASCII bytes shown as \n, \r, \t, \xNN.
std::string printable(std::string_view bytes);

std::string read_file(const std::string& path);
/// Waits until `needle` appears in the file (a log) at or after byte
/// `offset`; false if it has not within `timeout`.
bool wait_for_log_after(const std::string& path, std::size_t offset,
                        std::string_view needle, milliseconds timeout);
void write_file(const std::string& path, std::string_view text);
bool contains(std::string_view haystack, std::string_view needle);
/// Case-insensitive (ASCII) search.
bool contains_nocase(std::string_view haystack, std::string_view needle);
/// The number of '\n'-terminated or trailing partial lines in `text`.
std::size_t count_lines(std::string_view text);

/// Waits until the file exists and holds `needle` (re-reading it every few
/// milliseconds); returns false when the deadline passes first.
bool wait_for_file_containing(const std::string& path, std::string_view needle,
                              milliseconds timeout = default_wait);

/// Wall-clock time now, in nanoseconds since the epoch.
int64_t now_ns();

/// POSIX seconds `ns` as text with exactly `fraction_digits` digits after the
/// point (digits past the ninth are zeros); no point when 0 digits.
std::string time_text(int64_t ns, int fraction_digits = 9);

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0,
/// read back, closed).
std::uint16_t free_port();

// -- temporary directory ------------------------------------------------------

/// A fresh directory under /tmp, removed at the end unless the running test
/// case has failed (then it is kept and its path printed on stderr).
class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::string& path() const { return path_; }
  /// path()/name
  std::string file(const std::string& name) const;

 private:
  std::string path_;
};

/// True when an assertion of the running test case has failed so far.
bool current_test_failed();

// -- processes ----------------------------------------------------------------

/// Variables to set (value) or remove (nullopt) in a child's environment.
using env_changes = std::map<std::string, std::optional<std::string>>;

struct exit_status {
  bool exited = false;    ///< ended by exit(); `code` is set
  int code = -1;          ///< exit code when `exited`
  int signal = 0;         ///< terminating signal otherwise
  bool timed_out = false; ///< still running at the deadline (then killed)
  milliseconds elapsed{0};
};

std::string describe(const exit_status& s);

/// One child process: fork + execve, stdout and stderr appended to files.
/// The destructor kills (SIGKILL) only this process, if it still runs.
class process {
 public:
  process(std::vector<std::string> argv, const env_changes& env,
          std::string stdout_path, std::string stderr_path);
  ~process();
  process(const process&) = delete;
  process& operator=(const process&) = delete;

  pid_t pid() const { return pid_; }
  /// Reaps the child if it has ended; true while it still runs.
  bool running();
  /// SIGTERM, then waits up to `timeout` for the exit.
  exit_status stop(milliseconds timeout = default_wait);
  /// Waits up to `timeout` for the child to end by itself.
  exit_status wait_exit(milliseconds timeout = default_wait);
  /// SIGKILL and reap.
  void kill_now();

  std::string stdout_text() const { return read_file(stdout_path_); }
  std::string stderr_text() const { return read_file(stderr_path_); }
  std::chrono::steady_clock::time_point started() const { return started_; }

 private:
  exit_status wait_until(std::chrono::steady_clock::time_point deadline,
                         std::chrono::steady_clock::time_point since);

  pid_t pid_ = -1;
  bool reaped_ = false;
  exit_status status_;
  std::string stdout_path_;
  std::string stderr_path_;
  std::chrono::steady_clock::time_point started_;
};

/// Runs herd-node with `args` in `dir` and checks that it refuses to start:
/// exit code `code`, nothing on stdout, exactly one line on stderr, which it
/// returns for the caller's own checks.
std::string refused_start(const temp_dir& dir,
                          const std::vector<std::string>& args, int code,
                          const env_changes& env = {});

/// Runs a command to completion (bounded); returns its status.
exit_status run_command(const temp_dir& dir, std::vector<std::string> argv,
                        milliseconds timeout = 20000ms);

/// Retries connect() to 127.0.0.1:port until it succeeds or the deadline
/// passes. When `owner` is given and ends meanwhile, gives up at once.
bool wait_listening(std::uint16_t port, milliseconds timeout,
                    process* owner = nullptr);

// -- config -------------------------------------------------------------------

struct places_spec {
  std::optional<std::string> api = std::string("legacy");
  std::optional<std::string> endpoint;
  std::optional<std::string> key_env;
  std::optional<std::string> ca_file;
  std::optional<unsigned> timeout_ms;
  std::optional<unsigned> max_in_flight;
};

struct limits_spec {
  std::optional<unsigned> max_line_bytes;
  std::optional<unsigned> max_pending_lines;
  std::optional<unsigned> max_output_bytes;
  std::optional<unsigned> write_timeout_ms;
  std::optional<unsigned> max_connections;
  std::optional<unsigned> max_registry_backlog;
};

/// A herd config; unset keys are left out of the file. Servers listen on
/// 127.0.0.1; a port of 0 is replaced by a free port when the herd starts.
struct config_spec {
  std::vector<std::pair<std::string, std::uint16_t>> servers;
  std::vector<std::pair<std::string, std::string>> links;
  std::optional<places_spec> places;
  std::optional<unsigned> threads;
  std::optional<unsigned> io_threads;
  std::optional<unsigned> registry_shards;
  std::optional<std::string> log_dir;
  std::optional<bool> log_messages;
  std::optional<std::string> peer_secret_env;
  std::optional<limits_spec> limits;
  /// Merged into the top-level object as is (e.g. an unknown key).
  boost::json::object extra;
};

/// The config as JSON text, in the shape of config/herd.json.
std::string config_json(const config_spec& spec);

/// An http://127.0.0.1:PORT endpoint on a port where nothing listens.
std::string closed_endpoint();

// -- places-stub --------------------------------------------------------------

struct tls_material {
  std::string cert; ///< PEM certificate (self-signed: it is its own CA)
  std::string key;  ///< PEM private key
};

/// A self-signed certificate for localhost and 127.0.0.1, made with the
/// openssl command line into the directory (files STEM.crt and STEM.key).
tls_material make_self_signed_cert(const temp_dir& dir,
                                   const std::string& stem);

struct stub_options {
  std::optional<tls_material> tls;
  std::optional<std::string> valid_key;
  std::optional<int> results; ///< --results: every location has N results
  std::optional<std::string> fail_status;
  std::optional<unsigned> http_status;
  std::optional<unsigned> delay_ms;
  bool drop = false;
  bool invalid_json = false;
};

class places_stub {
 public:
  /// Starts places-stub on a free port and waits for its port file.
  places_stub(const temp_dir& dir, const stub_options& opts = {},
              const std::string& stem = "places-stub");

  std::uint16_t port() const { return port_; }
  /// The Nearby Search URL to put into a node's config (https://localhost
  /// with TLS, so the host name matches the certificate).
  std::string endpoint() const;
  process& proc() { return *proc_; }

 private:
  std::unique_ptr<process> proc_;
  std::uint16_t port_ = 0;
  bool tls_ = false;
};

/// A thread joined when it goes out of scope, however the test ends (a
/// failed REQUIRE throws past the join a test would otherwise reach).
class scoped_thread {
 public:
  template<class F> explicit scoped_thread(F&& f) : t_(std::forward<F>(f)) {}
  ~scoped_thread() { join(); }
  scoped_thread(const scoped_thread&) = delete;
  scoped_thread& operator=(const scoped_thread&) = delete;
  void join() {
    if (t_.joinable())
      t_.join();
  }

 private:
  std::thread t_;
};

/// Reads GET /metrics on an admin port over and over from a thread of its
/// own, handing every 200 answer to `on_sample` (on that thread), until
/// stop() or the end of its scope.
class metrics_sampler {
 public:
  metrics_sampler(std::uint16_t admin_port,
                  std::function<void(const std::string&)> on_sample);
  ~metrics_sampler() { stop(); }
  metrics_sampler(const metrics_sampler&) = delete;
  metrics_sampler& operator=(const metrics_sampler&) = delete;
  /// Stops sampling and waits for the thread.
  void stop();
  /// Answers handed to on_sample so far.
  int samples() const { return samples_.load(); }

 private:
  std::atomic<bool> done_{false};
  std::atomic<int> samples_{0};
  scoped_thread thread_;
};

/// The value of the Prometheus series `series` (name and labels, as in
/// `herd_places_waiting{server="Alpha"}`) in a /metrics text, or -1.
long prometheus_value(const std::string& text, const std::string& series);

/// Turns on `spec`'s admin endpoint (/metrics, /healthz) on `port` of
/// 127.0.0.1.
void enable_admin(config_spec& spec, std::uint16_t port);

/// A plain HTTP/1.1 GET over loopback (Connection: close); returns the body
/// and sets `status`. Throws on a transport error or timeout.
std::string http_get(std::uint16_t port, const std::string& target, int& status,
                     milliseconds timeout = default_wait);

/// The /metrics text of the admin endpoint on `admin_port`; requires a 200.
std::string scrape_metrics(std::uint16_t admin_port);

// -- herd nodes ---------------------------------------------------------------

struct launch_options {
  /// On top of GOOGLE_PLACES_API_KEY=test_api_key (set it to nullopt to
  /// start a node without a key).
  env_changes env;
  std::vector<std::string> extra_args;
  bool wait = true; ///< wait until the node accepts connections
  milliseconds listen_timeout = 5000ms;
};

class node {
 public:
  node(const std::string& name, std::uint16_t port,
       const std::string& config_path, const std::string& out_prefix,
       const launch_options& opts);

  const std::string& name() const { return name_; }
  std::uint16_t port() const { return port_; }
  process& proc() { return *proc_; }
  /// Waits until the node accepts connections; returns the time from its
  /// launch, or nullopt when it did not listen in time.
  std::optional<milliseconds> wait_listening(milliseconds timeout);

 private:
  std::string name_;
  std::uint16_t port_;
  std::unique_ptr<process> proc_;
};

/// A herd of N nodes sharing one config file in a temporary directory. The
/// config gets free ports, log_dir = DIR/logs and (unless set) a Places
/// endpoint on a closed loopback port, so nothing ever leaves the machine.
class herd {
 public:
  herd(const temp_dir& dir, config_spec spec);

  const config_spec& spec() const { return spec_; }
  const std::string& config_path() const { return config_path_; }
  /// Environment changes every node of this herd starts with (before the
  /// launch options' own), e.g. a shared peer secret.
  env_changes& env() { return env_; }
  std::uint16_t port(const std::string& name) const;

  /// Starts (or restarts) the node; with opts.wait, fails the test unless
  /// it listens in time.
  node& start(const std::string& name, const launch_options& opts = {});
  node& at(const std::string& name);
  exit_status stop(const std::string& name,
                   milliseconds timeout = default_wait);

  std::string log_path(const std::string& name) const;
  std::string log_text(const std::string& name) const;

 private:
  const temp_dir& dir_;
  config_spec spec_;
  std::string config_path_;
  env_changes env_;
  std::map<std::string, std::unique_ptr<node>> nodes_;
};

/// One node named "Alpha" (the usual single-server setup).
config_spec single_node_config(const std::string& places_endpoint = {});

// -- client connections -------------------------------------------------------

/// A TCP client on 127.0.0.1. Every read waits at most its timeout and
/// throws (with what arrived so far) when the deadline passes.
class client {
 public:
  explicit client(std::uint16_t port);
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  void send(std::string_view bytes, milliseconds timeout = default_wait);
  /// Like send(), but returns false instead of throwing when the peer has
  /// gone (EPIPE, ECONNRESET).
  bool try_send(std::string_view bytes, milliseconds timeout = default_wait);
  void shutdown_write();
  void close();

  std::string read_exactly(std::size_t n, milliseconds timeout = default_wait);
  /// Everything up to and including the first `needle`.
  std::string read_until(std::string_view needle,
                         milliseconds timeout = default_wait);
  /// Reads until `done(buffer)` holds; returns and consumes the buffer.
  template<class Pred>
  std::string read_until_pred(Pred done, milliseconds timeout = default_wait) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done(static_cast<const std::string&>(buffer_)))
      if (!fill(deadline))
        fail_read("the expected bytes", timeout);
    return std::exchange(buffer_, {});
  }
  /// One line including its '\n'.
  std::string read_line(milliseconds timeout = default_wait);
  /// A WHATSAT reply: everything up to and including the first "\n\n".
  std::string read_reply_block(milliseconds timeout = default_wait) {
    return read_until("\n\n", timeout);
  }
  /// Every byte until the server closes (EOF or reset).
  std::string read_until_closed(milliseconds timeout = default_wait);
  /// Reads what is there right now without waiting; returns the bytes
  /// buffered so far (not consumed).
  const std::string& peek_now();

  bool peer_closed() const { return eof_; }
  bool was_reset() const { return reset_; }
  /// Whether a reset reached the socket, even one that came after the
  /// server's EOF (which reads cannot see any more): the socket's pending
  /// error (SO_ERROR) is ECONNRESET. Reads and clears that error.
  bool reset_arrived();

 private:
  bool fill(std::chrono::steady_clock::time_point deadline);
  [[noreturn]] void fail_read(const std::string& what, milliseconds timeout);

  int fd_ = -1;
  std::uint16_t port_;
  std::string buffer_;
  bool eof_ = false;
  bool reset_ = false;
};

// -- replies ------------------------------------------------------------------

struct at_fields {
  std::string server, diff, client_id, location, time;
};

/// Splits `AT <server> <diff> <client> <location> <time>` (no '\n', single
/// spaces, exactly six fields).
std::optional<at_fields> parse_at(std::string_view line);

/// `+S.NNNNNNNNN` / `-S.NNNNNNNNN` (explicit sign, exactly nine fraction
/// digits) as nanoseconds.
std::optional<int64_t> parse_diff_ns(std::string_view text);

/// POSIX seconds with an optional fraction as nanoseconds (truncated).
int64_t parse_time_ns(std::string_view text);

struct whatsat_reply {
  std::string at_line;   ///< the first line without its '\n'
  std::string json_text; ///< between the first '\n' and the final "\n\n"
  boost::json::value json;
  std::string problem; ///< empty when the reply is well formed

  const boost::json::array& results() const;
  std::string status() const;
};

/// Checks the framing `AT ...\n{json}\n\n` (no "\n\n" but the final one, no
/// trailing newline inside the JSON) and parses the JSON.
whatsat_reply parse_whatsat_reply(const std::string& bytes);

/// An IAMAT line (with '\n').
std::string iamat(const std::string& client_id, const std::string& location,
                  const std::string& time);

} // namespace e2e
