// The optional admin HTTP endpoint of a real herd-node: /metrics, /healthz,
// errors, keep-alive, start-up failures, and that it is off by default.
#include <catch2/catch.hpp>

#include "harness.hpp"

#include <string>

using namespace e2e;

namespace {

const std::string kiwi = "kiwi.cs.ucla.edu";
const std::string ucla = "+34.068930-118.445127";
const std::string old_time = "1621464827.959498503";

/// One node "Alpha" with the admin endpoint on a free loopback port.
struct admin_node {
  temp_dir dir;
  std::uint16_t admin_port = free_port();
  herd h;
  admin_node() : h(dir, spec(admin_port)) {
    h.start("Alpha");
    REQUIRE(wait_listening(admin_port, default_wait, &h.at("Alpha").proc()));
  }
  static config_spec spec(std::uint16_t port) {
    auto s = single_node_config();
    enable_admin(s, port);
    return s;
  }
  std::uint16_t port() const { return h.port("Alpha"); }
};

/// Sends `request` as is and returns every byte until the server closes.
std::string raw_exchange(std::uint16_t port, const std::string& request) {
  client c(port);
  c.send(request);
  return c.read_until_closed();
}

/// GETs `target` until the body contains `needle` or the deadline passes;
/// returns the last body.
std::string get_until(std::uint16_t port, const std::string& target,
                      const std::string& needle) {
  auto deadline = std::chrono::steady_clock::now() + default_wait;
  std::string body;
  do {
    int status = 0;
    body = http_get(port, target, status);
    if (status == 200 && contains(body, needle))
      break;
  } while (std::chrono::steady_clock::now() < deadline);
  return body;
}

} // namespace

TEST_CASE("the admin port serves Prometheus metrics that count the node's "
          "client traffic",
          "[admin]") {
  admin_node n;
  {
    client c(n.port());
    c.send(iamat(kiwi, ucla, old_time) + iamat("other.client", ucla, old_time) +
           "BOGUS\n");
    CHECK(contains(c.read_line(), "AT Alpha "));
    CHECK(contains(c.read_line(), "AT Alpha "));
    CHECK(c.read_line() == "? BOGUS\n");
  }
  auto body = get_until(n.admin_port, "/metrics",
                        "herd_in_iamat_total{server=\"Alpha\"} 2\n");
  INFO("metrics:\n" << body);
  CHECK(contains(body, "herd_in_iamat_total{server=\"Alpha\"} 2\n"));
  CHECK(contains(body, "herd_in_invalid_total{server=\"Alpha\"} 1\n"));
  CHECK(contains(body, "herd_out_at_total{server=\"Alpha\"} 2\n"));
  CHECK(contains(body, "herd_connections_accepted_total{server=\"Alpha\"} "));
  CHECK(contains(body, "# TYPE herd_connections_open gauge\n"));

  auto response = raw_exchange(n.admin_port, "GET /metrics HTTP/1.1\r\n"
                                             "Host: 127.0.0.1\r\n"
                                             "Connection: close\r\n\r\n");
  INFO("response:\n" << response);
  CHECK(response.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(contains_nocase(response,
                        "\r\nContent-Type: text/plain; version=0.0.4\r\n"));

  // The log is written asynchronously, flushed within a second.
  CHECK(wait_for_file_containing(
      n.h.log_path("Alpha"),
      "admin endpoint on http://127.0.0.1:" + std::to_string(n.admin_port) +
          " (/metrics, /healthz)"));
}

TEST_CASE("the health check answers ok and other paths and methods are "
          "refused",
          "[admin]") {
  admin_node n;
  int status = 0;
  CHECK(http_get(n.admin_port, "/healthz", status) == "ok\n");
  CHECK(status == 200);
  http_get(n.admin_port, "/nope", status);
  CHECK(status == 404);
  http_get(n.admin_port, "/", status);
  CHECK(status == 404);

  auto response = raw_exchange(n.admin_port, "POST /metrics HTTP/1.1\r\n"
                                             "Host: 127.0.0.1\r\n"
                                             "Content-Length: 2\r\n"
                                             "Connection: close\r\n\r\nhi");
  INFO("response:\n" << response);
  CHECK(response.rfind("HTTP/1.1 405 ", 0) == 0);
  CHECK(contains_nocase(response, "\r\nAllow: GET, HEAD\r\n"));
}

TEST_CASE("a request body over the limit is refused and the connection "
          "closed",
          "[admin]") {
  admin_node n;
  auto response = raw_exchange(n.admin_port, "POST /metrics HTTP/1.1\r\n"
                                             "Host: 127.0.0.1\r\n"
                                             "Content-Length: 100000\r\n\r\n");
  INFO("response:\n" << printable(response));
  CHECK(response.rfind("HTTP/1.1 413 ", 0) == 0);
}

TEST_CASE("one admin connection serves several requests in turn", "[admin]") {
  admin_node n;
  client c(n.admin_port);
  const std::string request =
      "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  for (int i = 0; i < 3; ++i) {
    c.send(request);
    auto head = c.read_until("\r\n\r\n");
    INFO("response " << i << ":\n" << head);
    CHECK(head.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(contains_nocase(head, "\r\nContent-Length: 3\r\n"));
    CHECK(c.read_exactly(3) == "ok\n");
  }
}

TEST_CASE("a node with an idle admin connection still stops promptly on "
          "SIGTERM",
          "[admin]") {
  admin_node n;
  client idle(n.admin_port);
  auto status = n.h.stop("Alpha", 5000ms);
  CHECK(describe(status) ==
        describe(exit_status{true, 0, 0, false, status.elapsed}));
  CHECK(status.elapsed < 1000ms);
}

TEST_CASE("without an admin key the node opens no admin endpoint", "[admin]") {
  temp_dir dir;
  herd h(dir, single_node_config());
  h.start("Alpha");
  CHECK_FALSE(contains(read_file(h.config_path()), "\"admin\""));
  CHECK(h.stop("Alpha").code == 0);
  auto log = h.log_text("Alpha");
  INFO("log:\n" << log);
  CHECK(contains(log, "node Alpha stopped"));
  CHECK_FALSE(contains(log, "admin endpoint"));
}

TEST_CASE("an admin port that is in use stops the start with exit code 1 and "
          "one stderr line naming admin.port",
          "[admin]") {
  temp_dir dir;
  auto spec = single_node_config();
  spec.servers = {{"Alpha", free_port()}};
  // The node's own client port is taken by the time the admin port binds.
  enable_admin(spec, spec.servers[0].second);
  herd h(dir, spec);
  auto err = refused_start(dir, {"Alpha", "--config", h.config_path()}, 1);
  CHECK(contains(err, "\"admin.port\""));
  CHECK(contains(err, h.config_path()));
  CHECK(contains(err, std::to_string(spec.servers[0].second)));
}
