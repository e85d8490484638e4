#include "net/admin_server.hpp"

#include <chrono>
#include <exception>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/optional/optional.hpp>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace herd::net {

namespace {

using strand_type = asio::strand<asio::io_context::executor_type>;
using response = http::response<http::string_body>;

constexpr const char* plain_text = "text/plain";
constexpr const char* prometheus_text = "text/plain; version=0.0.4";

response make_response(http::status status, unsigned version, bool keep_alive,
                       std::string body, const char* content_type) {
  response res{status, version};
  res.set(http::field::server, "herd-node");
  res.set(http::field::content_type, content_type);
  res.keep_alive(keep_alive);
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

/// The status for a request that could not be read, or nullopt when the
/// connection should just close (timeout, reset, EOF mid-request).
boost::optional<http::status> status_for_read_error(beast::error_code ec) {
  if (ec == http::error::body_limit)
    return http::status::payload_too_large;
  if (ec == http::error::header_limit)
    return http::status::request_header_fields_too_large;
  if (ec == http::error::partial_message)
    return boost::none;
  if (ec.category() ==
      http::make_error_code(http::error::bad_target).category())
    return http::status::bad_request;
  return boost::none;
}

} // namespace

class admin_server::impl : public std::enable_shared_from_this<impl> {
 public:
  class session;

  impl(asio::io_context& ioc, metrics_source metrics)
      : strand_(asio::make_strand(ioc)), acceptor_(strand_), retry_(strand_),
        metrics_(std::move(metrics)) {}

  /// Called once, before any handler runs.
  uint16_t listen(const tcp::endpoint& where) {
    acceptor_.open(where.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind(where);
    acceptor_.listen(asio::socket_base::max_listen_connections);
    return acceptor_.local_endpoint().port();
  }

  void start() {
    asio::post(strand_, [self = shared_from_this()] { self->accept(); });
  }

  void stop();

  bool stopped() const noexcept { return stopped_; }

  /// The response to a request that was read completely.
  response respond(const http::request<http::string_body>& req);

 private:
  void accept() {
    acceptor_.async_accept(
        strand_,
        [self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
          self->on_accept(ec, std::move(socket));
        });
  }

  void on_accept(beast::error_code ec, tcp::socket socket);

  strand_type strand_;
  tcp::acceptor acceptor_;
  asio::steady_timer retry_;
  metrics_source metrics_;
  std::vector<std::weak_ptr<session>> sessions_;
  bool stopped_ = false;
};

/// One connection: requests read and answered in turn (keep-alive), every
/// handler on the server's strand.
class admin_server::impl::session
    : public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket socket, std::shared_ptr<impl> owner)
      : stream_(std::move(socket)), owner_(std::move(owner)) {}

  void start() { read_request(); }

  void close() { stream_.close(); }

 private:
  void read_request() {
    parser_.emplace();
    parser_->header_limit(max_header_bytes);
    parser_->body_limit(max_body_bytes);
    stream_.expires_after(std::chrono::seconds(io_timeout_s));
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) {
          self->on_read(ec);
        });
  }

  void on_read(beast::error_code ec) {
    if (owner_->stopped())
      return;
    if (ec == http::error::end_of_stream) {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      return;
    }
    if (ec) {
      if (auto status = status_for_read_error(ec))
        write(make_response(*status, 11, false,
                            std::string(obsolete_reason(*status)) + "\n",
                            plain_text));
      return;
    }
    write(owner_->respond(parser_->get()));
  }

  void write(response res) {
    res_ = std::move(res);
    stream_.expires_after(std::chrono::seconds(io_timeout_s));
    http::async_write(
        stream_, res_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) {
          self->on_write(ec);
        });
  }

  void on_write(beast::error_code ec) {
    if (ec || owner_->stopped())
      return;
    if (res_.need_eof()) {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      return;
    }
    read_request();
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  boost::optional<http::request_parser<http::string_body>> parser_;
  response res_;
  std::shared_ptr<impl> owner_;
};

void admin_server::impl::on_accept(beast::error_code ec, tcp::socket socket) {
  if (stopped_ || ec == asio::error::operation_aborted)
    return;
  if (ec) {
    // Typically out of descriptors: try again shortly rather than spin.
    retry_.expires_after(std::chrono::milliseconds(100));
    retry_.async_wait([self = shared_from_this()](beast::error_code wait_ec) {
      if (!wait_ec && !self->stopped_)
        self->accept();
    });
    return;
  }
  std::vector<std::weak_ptr<session>> live;
  live.reserve(sessions_.size() + 1);
  for (auto& s : sessions_)
    if (!s.expired())
      live.push_back(std::move(s));
  sessions_ = std::move(live);
  if (sessions_.size() < max_sessions) {
    auto s = std::make_shared<session>(std::move(socket), shared_from_this());
    sessions_.push_back(s);
    s->start();
  } // else the socket closes as it goes out of scope
  accept();
}

void admin_server::impl::stop() {
  asio::post(strand_, [self = shared_from_this()] {
    if (self->stopped_)
      return;
    self->stopped_ = true;
    beast::error_code ignored;
    self->acceptor_.close(ignored);
    self->retry_.cancel();
    for (auto& weak : self->sessions_)
      if (auto s = weak.lock())
        s->close();
    self->sessions_.clear();
  });
}

response
admin_server::impl::respond(const http::request<http::string_body>& req) {
  std::string_view target = req.target();
  auto path = target.substr(0, target.find('?'));
  bool is_metrics = path == "/metrics";
  bool is_health = path == "/healthz";
  bool keep_alive = req.keep_alive();
  unsigned version = req.version();
  if (!is_metrics && !is_health)
    return make_response(http::status::not_found, version, keep_alive,
                         "not found\n", plain_text);
  bool head = req.method() == http::verb::head;
  if (req.method() != http::verb::get && !head) {
    auto res = make_response(http::status::method_not_allowed, version,
                             keep_alive, "method not allowed\n", plain_text);
    res.set(http::field::allow, "GET, HEAD");
    return res;
  }
  std::string body = "ok\n";
  const char* type = plain_text;
  if (is_metrics) {
    type = prometheus_text;
    try {
      body = metrics_();
    } catch (const std::exception& e) {
      return make_response(
          http::status::internal_server_error, version, keep_alive,
          std::string("metrics unavailable: ") + e.what() + "\n", plain_text);
    }
  }
  auto res = make_response(http::status::ok, version, keep_alive,
                           std::move(body), type);
  res.set(http::field::cache_control, "no-store");
  if (head) {
    auto size = res.body().size();
    res.body().clear();
    res.content_length(size);
  }
  return res;
}

admin_server::admin_server(asio::io_context& ioc, const std::string& host,
                           uint16_t port, metrics_source metrics)
    : impl_(std::make_shared<impl>(ioc, std::move(metrics))) {
  tcp::endpoint where(asio::ip::make_address(host), port);
  port_ = impl_->listen(where);
  impl_->start();
}

admin_server::~admin_server() {
  stop();
}

void admin_server::stop() {
  impl_->stop();
}

} // namespace herd::net
