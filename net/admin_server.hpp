// The admin HTTP endpoint: a small HTTP/1.1 server on Boost.Beast that serves
// GET /metrics (Prometheus text format, produced by a callback) and
// GET /healthz. It knows nothing of actors: the callback runs on the
// io_context's thread and must be safe to call from there.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>

namespace herd::net {

class admin_server {
 public:
  /// Produces the body of GET /metrics.
  using metrics_source = std::function<std::string()>;

  /// Largest request body accepted (admin requests carry none).
  static constexpr uint32_t max_body_bytes = 8 * 1024;
  /// Largest request header accepted.
  static constexpr uint32_t max_header_bytes = 8 * 1024;
  /// Deadline for reading one request (also the keep-alive idle limit) and
  /// for writing one response.
  static constexpr int io_timeout_s = 10;
  /// Connections served at once; further ones are closed on accept.
  static constexpr size_t max_sessions = 64;

  /// Binds and listens on `host`:`port` (an IP address; port 0 picks a free
  /// one) and starts accepting on `ioc`. Throws boost::system::system_error
  /// when the address is not an IP address or cannot be bound.
  admin_server(boost::asio::io_context& ioc, const std::string& host,
               uint16_t port, metrics_source metrics);
  /// Stops accepting and closes every connection.
  ~admin_server();

  admin_server(const admin_server&) = delete;
  admin_server& operator=(const admin_server&) = delete;

  /// The port actually bound.
  uint16_t port() const noexcept { return port_; }

  /// Stops accepting and closes every open connection. Any thread; safe to
  /// call more than once.
  void stop();

  class impl;

 private:
  std::shared_ptr<impl> impl_;
  uint16_t port_ = 0;
};

} // namespace herd::net
