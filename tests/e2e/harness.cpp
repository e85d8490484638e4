#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include "harness.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <catch2/catch.hpp>

extern char** environ;

namespace e2e {

namespace {

using steady = std::chrono::steady_clock;

// -- failure tracking
// -----------------------------------------------------------

bool failed_in_current_test = false;

struct failure_listener : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;

  void testCaseStarting(Catch::TestCaseInfo const& info) override {
    failed_in_current_test = false;
    TestEventListenerBase::testCaseStarting(info);
  }

  bool assertionEnded(Catch::AssertionStats const& stats) override {
    if (!stats.assertionResult.isOk())
      failed_in_current_test = true;
    return TestEventListenerBase::assertionEnded(stats);
  }
};

[[noreturn]] void fail_errno(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

int remaining_ms(steady::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - steady::now())
                  .count();
  if (left <= 0)
    return 0;
  return static_cast<int>(left) + 1;
}

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

int connect_loopback(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    fail_errno("socket");
  auto addr = loopback(port);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) !=
      0) {
    int saved = errno;
    ::close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

std::uint16_t read_port_file(const std::string& path) {
  std::ifstream in(path);
  unsigned long port = 0;
  if (!(in >> port) || port == 0 || port > 65535)
    return 0;
  return static_cast<std::uint16_t>(port);
}

} // namespace

CATCH_REGISTER_LISTENER(failure_listener)

const char* herd_node_bin() {
  return HERD_NODE_BIN;
}

const char* places_stub_bin() {
  return PLACES_STUB_BIN;
}

bool current_test_failed() {
  return failed_in_current_test;
}

// -- small utilities ----------------------------------------------------------

std::string printable(std::string_view bytes) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c >= 0x7f) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  if (in)
    text << in.rdbuf();
  return text.str();
}

void write_file(const std::string& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  if (!out.flush())
    throw std::runtime_error("cannot write " + path);
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

bool contains_nocase(std::string_view haystack, std::string_view needle) {
  auto lower = [](std::string_view s) {
    std::string out(s);
    for (auto& c : out)
      if (c >= 'A' && c <= 'Z')
        c = static_cast<char>(c - 'A' + 'a');
    return out;
  };
  return contains(lower(haystack), lower(needle));
}

std::size_t count_lines(std::string_view text) {
  std::size_t n = 0;
  for (char c : text)
    n += c == '\n' ? 1 : 0;
  if (!text.empty() && text.back() != '\n')
    ++n;
  return n;
}

bool wait_for_file_containing(const std::string& path, std::string_view needle,
                              milliseconds timeout) {
  auto deadline = steady::now() + timeout;
  while (true) {
    if (contains(read_file(path), needle))
      return true;
    if (steady::now() >= deadline)
      return false;
    ::poll(nullptr, 0, 10);
  }
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string time_text(int64_t ns, int fraction_digits) {
  std::string out = std::to_string(ns / 1000000000);
  if (fraction_digits <= 0)
    return out;
  char frac[16];
  std::snprintf(frac, sizeof frac, "%09lld",
                static_cast<long long>(ns % 1000000000));
  out += '.';
  std::string digits(frac);
  if (fraction_digits <= 9)
    out += digits.substr(0, static_cast<std::size_t>(fraction_digits));
  else
    out += digits +
           std::string(static_cast<std::size_t>(fraction_digits - 9), '0');
  return out;
}

std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    fail_errno("socket");
  auto addr = loopback(0);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    fail_errno("bind 127.0.0.1:0");
  }
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    fail_errno("getsockname");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

// -- temporary directory ------------------------------------------------------

temp_dir::temp_dir() {
  std::string pattern = "/tmp/herd-e2e-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr)
    fail_errno("mkdtemp");
  path_ = pattern;
}

temp_dir::~temp_dir() {
  if (std::uncaught_exceptions() > 0 || current_test_failed()) {
    std::fprintf(stderr, "e2e: test failed; its files are kept in %s\n",
                 path_.c_str());
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string temp_dir::file(const std::string& name) const {
  return path_ + "/" + name;
}

// -- processes ----------------------------------------------------------------

std::string describe(const exit_status& s) {
  std::string out;
  if (s.timed_out)
    out = "still running at the deadline (killed)";
  else if (s.exited)
    out = "exit code " + std::to_string(s.code);
  else
    out = "killed by signal " + std::to_string(s.signal);
  return out + " after " + std::to_string(s.elapsed.count()) + " ms";
}

process::process(std::vector<std::string> argv, const env_changes& env,
                 std::string stdout_path, std::string stderr_path)
    : stdout_path_(std::move(stdout_path)),
      stderr_path_(std::move(stderr_path)) {
  // Everything the child needs is prepared here: after fork() it only
  // opens, dups and execs.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view entry(*e);
    auto name = entry.substr(0, entry.find('='));
    if (env.count(std::string(name)) == 0)
      env_strings.emplace_back(entry);
  }
  for (auto& [name, value] : env)
    if (value)
      env_strings.push_back(name + "=" + *value);
  std::vector<char*> envp;
  for (auto& s : env_strings)
    envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<char*> args;
  for (auto& a : argv)
    args.push_back(a.data());
  args.push_back(nullptr);

  started_ = steady::now();
  pid_ = ::fork();
  if (pid_ < 0)
    fail_errno("fork");
  if (pid_ == 0) {
    int out = ::open(stdout_path_.c_str(),
                     O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int err = ::open(stderr_path_.c_str(),
                     O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (out < 0 || err < 0 || devnull < 0)
      ::_exit(126);
    ::dup2(devnull, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    // Sockets and files of the test must not leak into the child.
    for (int fd = 3; fd < 1024; ++fd)
      ::close(fd);
    ::signal(SIGPIPE, SIG_DFL);
    ::execve(args[0], args.data(), envp.data());
    const char msg[] = "e2e: execve failed\n";
    [[maybe_unused]] auto ignored = ::write(2, msg, sizeof msg - 1);
    ::_exit(127);
  }
}

process::~process() {
  if (pid_ > 0 && !reaped_)
    kill_now();
}

bool process::running() {
  if (reaped_)
    return false;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    status_.exited = WIFEXITED(status);
    status_.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    status_.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    return false;
  }
  return true;
}

exit_status process::wait_until(steady::time_point deadline,
                                steady::time_point since) {
  while (running()) {
    if (steady::now() >= deadline) {
      kill_now();
      exit_status s = status_;
      s.timed_out = true;
      s.elapsed =
          std::chrono::duration_cast<milliseconds>(steady::now() - since);
      return s;
    }
    ::poll(nullptr, 0, 2);
  }
  exit_status s = status_;
  s.elapsed = std::chrono::duration_cast<milliseconds>(steady::now() - since);
  return s;
}

exit_status process::stop(milliseconds timeout) {
  auto since = steady::now();
  if (running())
    ::kill(pid_, SIGTERM);
  return wait_until(since + timeout, since);
}

exit_status process::wait_exit(milliseconds timeout) {
  auto since = steady::now();
  return wait_until(since + timeout, since);
}

std::string refused_start(const temp_dir& dir,
                          const std::vector<std::string>& args, int code,
                          const env_changes& env) {
  std::vector<std::string> argv{herd_node_bin()};
  argv.insert(argv.end(), args.begin(), args.end());
  process p(argv, env, dir.file("refused.stdout"), dir.file("refused.stderr"));
  auto status = p.wait_exit(5000ms);
  CHECK(describe(status) ==
        describe(exit_status{true, code, 0, false, status.elapsed}));
  auto err = p.stderr_text();
  INFO("stderr: " << err);
  CHECK(count_lines(err) == 1);
  CHECK(p.stdout_text().empty());
  return err;
}

void process::kill_now() {
  if (reaped_ || pid_ <= 0)
    return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  if (::waitpid(pid_, &status, 0) == pid_) {
    reaped_ = true;
    status_.exited = WIFEXITED(status);
    status_.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    status_.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  }
}

exit_status run_command(const temp_dir& dir, std::vector<std::string> argv,
                        milliseconds timeout) {
  std::string log = dir.file("commands.log");
  process p(std::move(argv), {}, log, log);
  return p.wait_exit(timeout);
}

bool wait_listening(std::uint16_t port, milliseconds timeout, process* owner) {
  auto deadline = steady::now() + timeout;
  while (true) {
    int fd = connect_loopback(port);
    if (fd >= 0) {
      ::close(fd);
      return true;
    }
    if (steady::now() >= deadline || (owner != nullptr && !owner->running()))
      return false;
    ::poll(nullptr, 0, 2);
  }
}

// -- config -------------------------------------------------------------------

std::string config_json(const config_spec& spec) {
  namespace json = boost::json;
  json::object root;
  json::object servers;
  for (auto& [name, port] : spec.servers)
    servers[name] = json::object{{"host", "127.0.0.1"}, {"port", port}};
  root["servers"] = std::move(servers);
  if (!spec.links.empty()) {
    json::array links;
    for (auto& [a, b] : spec.links)
      links.push_back(json::array{json::string(a), json::string(b)});
    root["links"] = std::move(links);
  }
  if (spec.places) {
    json::object places;
    auto& p = *spec.places;
    if (p.api)
      places["api"] = *p.api;
    if (p.endpoint)
      places["endpoint"] = *p.endpoint;
    if (p.key_env)
      places["key_env"] = *p.key_env;
    if (p.ca_file)
      places["ca_file"] = *p.ca_file;
    if (p.timeout_ms)
      places["timeout_ms"] = *p.timeout_ms;
    if (p.max_in_flight)
      places["max_in_flight"] = *p.max_in_flight;
    root["places"] = std::move(places);
  }
  if (spec.threads)
    root["threads"] = *spec.threads;
  if (spec.io_threads)
    root["io_threads"] = *spec.io_threads;
  if (spec.registry_shards)
    root["registry_shards"] = *spec.registry_shards;
  if (spec.log_dir)
    root["log_dir"] = *spec.log_dir;
  if (spec.log_messages)
    root["log_messages"] = *spec.log_messages;
  if (spec.peer_secret_env)
    root["peer_secret_env"] = *spec.peer_secret_env;
  if (spec.limits) {
    json::object limits;
    auto& l = *spec.limits;
    if (l.max_line_bytes)
      limits["max_line_bytes"] = *l.max_line_bytes;
    if (l.max_pending_lines)
      limits["max_pending_lines"] = *l.max_pending_lines;
    if (l.max_output_bytes)
      limits["max_output_bytes"] = *l.max_output_bytes;
    if (l.write_timeout_ms)
      limits["write_timeout_ms"] = *l.write_timeout_ms;
    if (l.max_connections)
      limits["max_connections"] = *l.max_connections;
    if (l.max_registry_backlog)
      limits["max_registry_backlog"] = *l.max_registry_backlog;
    root["limits"] = std::move(limits);
  }
  for (auto& kv : spec.extra)
    root[kv.key()] = kv.value();
  return json::serialize(root) + "\n";
}

std::string closed_endpoint() {
  return "http://127.0.0.1:" + std::to_string(free_port()) + places_path;
}

// -- places-stub --------------------------------------------------------------

tls_material make_self_signed_cert(const temp_dir& dir,
                                   const std::string& stem) {
  tls_material m{dir.file(stem + ".crt"), dir.file(stem + ".key")};
  auto status = run_command(dir, {"/usr/bin/env", "openssl", "req", "-x509",
                                  "-newkey", "rsa:2048", "-nodes", "-days", "2",
                                  "-subj", "/CN=localhost", "-addext",
                                  "subjectAltName=DNS:localhost,IP:127.0.0.1",
                                  "-keyout", m.key, "-out", m.cert});
  if (!status.exited || status.code != 0)
    throw std::runtime_error("openssl req failed (" + describe(status) +
                             "): " + read_file(dir.file("commands.log")));
  return m;
}

places_stub::places_stub(const temp_dir& dir, const stub_options& opts,
                         const std::string& stem)
    : tls_(opts.tls.has_value()) {
  std::string port_file = dir.file(stem + ".port");
  std::vector<std::string> argv{places_stub_bin(), "--host", "127.0.0.1",
                                "--port",          "0",      "--port-file",
                                port_file};
  if (opts.tls) {
    argv.insert(argv.end(),
                {"--tls-cert", opts.tls->cert, "--tls-key", opts.tls->key});
  }
  if (opts.valid_key)
    argv.insert(argv.end(), {"--valid-key", *opts.valid_key});
  if (opts.results)
    argv.insert(argv.end(), {"--results", std::to_string(*opts.results)});
  if (opts.fail_status)
    argv.insert(argv.end(), {"--fail-status", *opts.fail_status});
  if (opts.http_status)
    argv.insert(argv.end(),
                {"--http-status", std::to_string(*opts.http_status)});
  if (opts.delay_ms)
    argv.insert(argv.end(), {"--delay-ms", std::to_string(*opts.delay_ms)});
  if (opts.drop)
    argv.emplace_back("--drop");
  if (opts.invalid_json)
    argv.emplace_back("--invalid-json");
  proc_ = std::make_unique<process>(std::move(argv), env_changes{},
                                    dir.file(stem + ".stdout"),
                                    dir.file(stem + ".stderr"));
  auto deadline = steady::now() + 5000ms;
  while ((port_ = read_port_file(port_file)) == 0) {
    if (!proc_->running())
      throw std::runtime_error("places-stub ended before listening: " +
                               proc_->stderr_text());
    if (steady::now() >= deadline)
      throw std::runtime_error("places-stub wrote no port file in 5 s");
    ::poll(nullptr, 0, 2);
  }
}

std::string places_stub::endpoint() const {
  return std::string(tls_ ? "https://localhost:" : "http://127.0.0.1:") +
         std::to_string(port_) + places_path;
}

std::string http_get(std::uint16_t port, const std::string& target, int& status,
                     milliseconds timeout) {
  client c(port);
  c.send("GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1:" +
         std::to_string(port) + "\r\nConnection: close\r\n\r\n");
  auto response = c.read_until_closed(timeout);
  auto header_end = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.1 ", 0) != 0 || header_end == std::string::npos)
    throw std::runtime_error("not an HTTP response: " + printable(response));
  status = std::atoi(response.c_str() + 9);
  return response.substr(header_end + 4);
}

// -- herd nodes ---------------------------------------------------------------

node::node(const std::string& name, std::uint16_t port,
           const std::string& config_path, const std::string& out_prefix,
           const launch_options& opts)
    : name_(name), port_(port) {
  std::vector<std::string> argv{herd_node_bin(), name, "--config", config_path};
  argv.insert(argv.end(), opts.extra_args.begin(), opts.extra_args.end());
  env_changes env{{"GOOGLE_PLACES_API_KEY", std::string(test_api_key)}};
  for (auto& [k, v] : opts.env)
    env[k] = v;
  proc_ = std::make_unique<process>(
      std::move(argv), env, out_prefix + ".stdout", out_prefix + ".stderr");
}

std::optional<milliseconds> node::wait_listening(milliseconds timeout) {
  if (!e2e::wait_listening(port_, timeout, proc_.get()))
    return std::nullopt;
  return std::chrono::duration_cast<milliseconds>(steady::now() -
                                                  proc_->started());
}

herd::herd(const temp_dir& dir, config_spec spec)
    : dir_(dir), spec_(std::move(spec)), config_path_(dir.file("herd.json")) {
  for (auto& [name, port] : spec_.servers)
    if (port == 0)
      port = free_port();
  if (!spec_.log_dir)
    spec_.log_dir = dir.file("logs");
  if (!spec_.places)
    spec_.places = places_spec{};
  if (!spec_.places->endpoint)
    spec_.places->endpoint = closed_endpoint();
  write_file(config_path_, config_json(spec_));
}

std::uint16_t herd::port(const std::string& name) const {
  for (auto& [n, p] : spec_.servers)
    if (n == name)
      return p;
  throw std::runtime_error("no server " + name + " in the herd");
}

node& herd::start(const std::string& name, const launch_options& opts) {
  auto& slot = nodes_[name];
  if (slot)
    slot->proc().kill_now();
  launch_options merged = opts;
  for (auto& [k, v] : env_)
    merged.env.emplace(k, v); // the launch options' own settings win
  slot = std::make_unique<node>(name, port(name), config_path_, dir_.file(name),
                                merged);
  if (opts.wait && !slot->wait_listening(opts.listen_timeout)) {
    INFO("stderr of " << name << ": " << slot->proc().stderr_text());
    FAIL("node " << name << " did not listen on port " << port(name)
                 << " within " << opts.listen_timeout.count() << " ms");
  }
  return *slot;
}

node& herd::at(const std::string& name) {
  auto it = nodes_.find(name);
  if (it == nodes_.end() || !it->second)
    throw std::runtime_error("node " + name + " was never started");
  return *it->second;
}

exit_status herd::stop(const std::string& name, milliseconds timeout) {
  return at(name).proc().stop(timeout);
}

std::string herd::log_path(const std::string& name) const {
  return *spec_.log_dir + "/" + name + ".log";
}

std::string herd::log_text(const std::string& name) const {
  return read_file(log_path(name));
}

config_spec single_node_config(const std::string& places_endpoint) {
  config_spec spec;
  spec.servers = {{"Alpha", 0}};
  spec.places = places_spec{};
  if (!places_endpoint.empty())
    spec.places->endpoint = places_endpoint;
  spec.places->timeout_ms = 2000;
  return spec;
}

// -- client connections -------------------------------------------------------

client::client(std::uint16_t port) : port_(port) {
  fd_ = connect_loopback(port);
  if (fd_ < 0)
    fail_errno("connect to 127.0.0.1:" + std::to_string(port));
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int flags = ::fcntl(fd_, F_GETFL);
  ::fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
}

client::~client() {
  close();
}

void client::close() {
  if (fd_ >= 0)
    ::close(fd_);
  fd_ = -1;
}

bool client::try_send(std::string_view bytes, milliseconds timeout) {
  auto deadline = steady::now() + timeout;
  while (!bytes.empty()) {
    ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n > 0) {
      bytes.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd_, POLLOUT, 0};
      int wait = remaining_ms(deadline);
      if (wait == 0 || ::poll(&p, 1, wait) == 0)
        throw std::runtime_error("timed out sending to port " +
                                 std::to_string(port_));
      continue;
    }
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
      return false;
    fail_errno("send");
  }
  return true;
}

bool wait_for_log_after(const std::string& path, std::size_t offset,
                        std::string_view needle, milliseconds timeout) {
  auto deadline = steady::now() + timeout;
  while (true) {
    auto text = read_file(path);
    if (text.size() > offset && text.find(needle, offset) != std::string::npos)
      return true;
    if (steady::now() >= deadline)
      return false;
    ::poll(nullptr, 0, 10);
  }
}

bool client::reset_arrived() {
  if (reset_)
    return true;
  int err = 0;
  socklen_t len = sizeof(err);
  if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
    fail_errno("getsockopt");
  return err == ECONNRESET;
}

void client::send(std::string_view bytes, milliseconds timeout) {
  if (!try_send(bytes, timeout))
    throw std::runtime_error("send to port " + std::to_string(port_) +
                             ": the server has closed the connection");
}

void client::shutdown_write() {
  if (::shutdown(fd_, SHUT_WR) != 0)
    fail_errno("shutdown(SHUT_WR)");
}

bool client::fill(steady::time_point deadline) {
  if (eof_)
    return false;
  while (true) {
    char buf[65536];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n > 0) {
      buffer_.append(buf, static_cast<std::size_t>(n));
      return true;
    }
    if (n == 0) {
      eof_ = true;
      return false;
    }
    if (errno == EINTR)
      continue;
    if (errno == ECONNRESET) {
      eof_ = reset_ = true;
      return false;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      fail_errno("recv");
    int wait = remaining_ms(deadline);
    if (wait == 0)
      return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, wait) == 0)
      return false;
  }
}

void client::fail_read(const std::string& what, milliseconds timeout) {
  throw std::runtime_error(
      (eof_ ? "connection closed by the server while waiting for "
            : "timed out after " + std::to_string(timeout.count()) +
                  " ms waiting for ") +
      what + "; received so far: \"" + printable(buffer_) + "\"");
}

std::string client::read_exactly(std::size_t n, milliseconds timeout) {
  auto deadline = steady::now() + timeout;
  while (buffer_.size() < n)
    if (!fill(deadline))
      fail_read(std::to_string(n) + " bytes", timeout);
  auto out = buffer_.substr(0, n);
  buffer_.erase(0, n);
  return out;
}

std::string client::read_until(std::string_view needle, milliseconds timeout) {
  auto deadline = steady::now() + timeout;
  std::size_t at;
  while ((at = buffer_.find(needle)) == std::string::npos)
    if (!fill(deadline))
      fail_read("\"" + printable(needle) + "\"", timeout);
  auto out = buffer_.substr(0, at + needle.size());
  buffer_.erase(0, at + needle.size());
  return out;
}

std::string client::read_line(milliseconds timeout) {
  return read_until("\n", timeout);
}

std::string client::read_until_closed(milliseconds timeout) {
  auto deadline = steady::now() + timeout;
  while (!eof_)
    if (!fill(deadline) && !eof_)
      fail_read("the server to close the connection", timeout);
  return std::exchange(buffer_, {});
}

const std::string& client::peek_now() {
  fill(steady::now());
  return buffer_;
}

// -- replies ------------------------------------------------------------------

std::optional<at_fields> parse_at(std::string_view line) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    auto sp = line.find(' ', start);
    parts.emplace_back(line.substr(start, sp - start));
    if (sp == std::string_view::npos)
      break;
    start = sp + 1;
  }
  if (parts.size() != 6 || parts[0] != "AT")
    return std::nullopt;
  for (auto& p : parts)
    if (p.empty())
      return std::nullopt;
  return at_fields{parts[1], parts[2], parts[3], parts[4], parts[5]};
}

std::optional<int64_t> parse_diff_ns(std::string_view text) {
  if (text.size() < 12 || (text[0] != '+' && text[0] != '-'))
    return std::nullopt;
  auto dot = text.find('.');
  if (dot == std::string_view::npos || dot < 2 || text.size() - dot - 1 != 9)
    return std::nullopt;
  int64_t seconds = 0, frac = 0;
  for (std::size_t i = 1; i < text.size(); ++i) {
    if (i == dot)
      continue;
    char c = text[i];
    if (c < '0' || c > '9')
      return std::nullopt;
    if (i < dot)
      seconds = seconds * 10 + (c - '0');
    else
      frac = frac * 10 + (c - '0');
  }
  int64_t ns = seconds * 1000000000 + frac;
  return text[0] == '-' ? -ns : ns;
}

int64_t parse_time_ns(std::string_view text) {
  int64_t seconds = 0, frac = 0;
  int digits = 0;
  auto dot = text.find('.');
  for (char c : text.substr(0, dot))
    seconds = seconds * 10 + (c - '0');
  if (dot != std::string_view::npos)
    for (char c : text.substr(dot + 1))
      if (digits < 9) {
        frac = frac * 10 + (c - '0');
        ++digits;
      }
  for (; digits < 9; ++digits)
    frac *= 10;
  return seconds * 1000000000 + frac;
}

whatsat_reply parse_whatsat_reply(const std::string& bytes) {
  whatsat_reply r;
  auto nl = bytes.find('\n');
  if (bytes.size() < 3 || bytes.compare(bytes.size() - 2, 2, "\n\n") != 0) {
    r.problem = "does not end with \"\\n\\n\"";
    return r;
  }
  if (bytes.find("\n\n") != bytes.size() - 2) {
    r.problem = "holds \"\\n\\n\" before its end";
    return r;
  }
  r.at_line = bytes.substr(0, nl);
  if (nl + 1 >= bytes.size() - 2) {
    r.problem = "has no JSON after the AT line";
    return r;
  }
  r.json_text = bytes.substr(nl + 1, bytes.size() - 2 - (nl + 1));
  boost::json::error_code ec;
  r.json = boost::json::parse(r.json_text, ec);
  if (ec) {
    r.problem = "JSON does not parse: " + ec.message();
    return r;
  }
  if (!r.json.is_object()) {
    r.problem = "JSON is not an object";
    return r;
  }
  auto& obj = r.json.get_object();
  auto* results = obj.if_contains("results");
  auto* status = obj.if_contains("status");
  auto* attributions = obj.if_contains("html_attributions");
  if (results == nullptr || !results->is_array())
    r.problem = "JSON has no \"results\" array";
  else if (status == nullptr || !status->is_string())
    r.problem = "JSON has no \"status\" string";
  else if (attributions == nullptr || !attributions->is_array())
    r.problem = "JSON has no \"html_attributions\" array";
  return r;
}

const boost::json::array& whatsat_reply::results() const {
  return json.at("results").as_array();
}

std::string whatsat_reply::status() const {
  return std::string(json.at("status").as_string());
}

std::string iamat(const std::string& client_id, const std::string& location,
                  const std::string& time) {
  return "IAMAT " + client_id + " " + location + " " + time + "\n";
}

metrics_sampler::metrics_sampler(
    std::uint16_t admin_port, std::function<void(const std::string&)> on_sample)
    : thread_([this, admin_port, on_sample = std::move(on_sample)] {
        while (!done_.load()) {
          int status = 0;
          auto text = http_get(admin_port, "/metrics", status);
          if (status != 200)
            continue;
          on_sample(text);
          ++samples_;
        }
      }) {}

void metrics_sampler::stop() {
  done_.store(true);
  thread_.join();
}

void enable_admin(config_spec& spec, std::uint16_t port) {
  spec.extra["admin"] = {{"host", "127.0.0.1"}, {"port", port}};
}

long prometheus_value(const std::string& text, const std::string& series) {
  auto needle = series + " ";
  for (size_t pos = text.find(needle); pos != std::string::npos;
       pos = text.find(needle, pos + 1))
    if (pos == 0 || text[pos - 1] == '\n')
      return std::stol(text.substr(pos + needle.size()));
  return -1;
}

std::string scrape_metrics(std::uint16_t admin_port) {
  int status = 0;
  auto text = http_get(admin_port, "/metrics", status);
  REQUIRE(status == 200);
  return text;
}

} // namespace e2e
