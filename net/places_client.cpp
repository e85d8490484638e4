#include "net/places_client.hpp"

#include <cstdint>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace herd::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;
using strand_type = asio::strand<asio::io_context::executor_type>;

constexpr std::uint64_t max_body_bytes = 4u * 1024u * 1024u;
constexpr std::uint32_t max_header_bytes = 16u * 1024u;
/// How long the TLS close_notify exchange may take after the result went
/// out; it only frees the connection, nobody waits for it.
constexpr auto shutdown_grace = std::chrono::seconds(1);
constexpr const char* user_agent = "proxy-herd/0.1";

bool is_ip_literal(const std::string& host) {
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

bool starts_with_ci(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size())
    return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    char c = text[i];
    if (c >= 'A' && c <= 'Z')
      c = static_cast<char>(c - 'A' + 'a');
    if (c != prefix[i])
      return false;
  }
  return true;
}

std::string_view drop_plus(std::string_view number) {
  if (!number.empty() && number.front() == '+')
    number.remove_prefix(1);
  return number;
}

/// An error's text without the "(SSL routines)" decoration OpenSSL adds.
std::string describe(const beast::error_code& ec) {
  if (ec.category() == asio::error::get_ssl_category()) {
    const char* reason =
        ERR_reason_error_string(static_cast<unsigned long>(ec.value()));
    if (reason != nullptr)
      return reason;
  }
  if (ec == ssl::error::stream_truncated)
    return "connection closed without TLS close_notify";
  if (ec == http::error::body_limit)
    return "response body larger than " + std::to_string(max_body_bytes) +
           " bytes";
  if (ec == http::error::end_of_stream)
    return "connection closed before a response";
  return ec.message();
}

/// What every request of one client shares; immutable after construction.
struct shared_state {
  url endpoint;
  std::string loggable_endpoint;
  std::string host_header;
  std::string target_prefix; ///< endpoint target plus '?' or '&'
  std::string encoded_key;
  std::chrono::milliseconds timeout{};
  bool sni = false;
  /// One context per client; sessions hold the state, so it outlives every
  /// stream that uses it even when the client goes first. Mutable because
  /// streams take it by reference; creating SSL objects from one SSL_CTX on
  /// several threads is safe.
  mutable ssl::context ctx{ssl::context::tls_client};
};

/// One request on one connection: resolve, connect, (TLS handshake),
/// write, read, deliver, then close (TLS: shutdown in the background).
/// Every handler runs on the session's strand.
template<class Stream>
class session : public std::enable_shared_from_this<session<Stream>> {
  static constexpr bool tls =
      std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>;

 public:
  session(strand_type ex, std::shared_ptr<const shared_state> state,
          std::string target, places_client::callback done)
      : state_(std::move(state)), resolver_(ex), resolve_timer_(ex),
        stream_(make_stream(ex, state_.get())), done_(std::move(done)),
        deadline_(steady::now() + state_->timeout) {
    req_.version(11);
    req_.method(http::verb::get);
    req_.target(target);
    req_.set(http::field::host, state_->host_header);
    req_.set(http::field::user_agent, user_agent);
    req_.set(http::field::accept, "application/json");
    // One connection per request for now; a keep-alive pool would replace
    // this header and the close after the read.
    req_.set(http::field::connection, "close");
    parser_.body_limit(max_body_bytes);
    parser_.header_limit(max_header_bytes);
  }

  void start() {
    // The stream's deadline does not cover name resolution: a timer of its
    // own does, on the same overall deadline.
    resolve_timer_.expires_at(deadline_);
    resolve_timer_.async_wait(
        beast::bind_front_handler(&session::on_resolve_timer, self()));
    resolver_.async_resolve(
        state_->endpoint.host, state_->endpoint.port,
        beast::bind_front_handler(&session::on_resolve, self()));
  }

 private:
  static Stream make_stream(const strand_type& ex, const shared_state* state) {
    if constexpr (tls)
      return Stream(ex, state->ctx);
    else
      return Stream(ex);
  }

  std::shared_ptr<session> self() { return this->shared_from_this(); }

  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  /// Sets the stream's expiry to what is left of the deadline; false (and
  /// the timeout delivered) when nothing is left.
  bool arm() {
    const auto left = deadline_ - steady::now();
    if (left <= steady::duration::zero()) {
      fail_timeout();
      return false;
    }
    lowest().expires_after(left);
    return true;
  }

  void on_resolve_timer(beast::error_code ec) {
    if (ec || finished_)
      return;
    // A cancelled lookup may still finish late (getaddrinfo is not
    // interruptible); the result goes out now and on_resolve ignores it.
    resolver_.cancel();
    fail_timeout();
  }

  void on_resolve(beast::error_code ec, tcp::resolver::results_type results) {
    resolve_timer_.cancel();
    if (finished_)
      return;
    if (ec)
      return fail(ec);
    step_ = "connect";
    if (!arm())
      return;
    lowest().async_connect(
        results, beast::bind_front_handler(&session::on_connect, self()));
  }

  void on_connect(beast::error_code ec, const tcp::endpoint&) {
    if (ec)
      return fail(ec);
    if constexpr (tls) {
      step_ = "TLS handshake";
      if (state_->sni) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"
        const bool sni_ok =
            SSL_set_tlsext_host_name(stream_.native_handle(),
                                     state_->endpoint.host.c_str()) == 1;
#pragma GCC diagnostic pop
        if (!sni_ok) {
          const beast::error_code sni_ec(static_cast<int>(ERR_get_error()),
                                         asio::error::get_ssl_category());
          return fail(sni_ec);
        }
      }
      stream_.set_verify_mode(ssl::verify_peer);
      stream_.set_verify_callback(
          [this, check = ssl::host_name_verification(state_->endpoint.host)](
              bool preverified, ssl::verify_context& vc) {
            const bool ok = check(preverified, vc);
            if (preverified && !ok)
              host_mismatch_ = true;
            return ok;
          });
      if (!arm())
        return;
      stream_.async_handshake(
          ssl::stream_base::client,
          beast::bind_front_handler(&session::on_handshake, self()));
    } else {
      write();
    }
  }

  void on_handshake(beast::error_code ec) {
    if (ec)
      return fail(ec);
    write();
  }

  void write() {
    step_ = "write";
    if (!arm())
      return;
    http::async_write(stream_, req_,
                      beast::bind_front_handler(&session::on_write, self()));
  }

  void on_write(beast::error_code ec, std::size_t) {
    if (ec)
      return fail(ec);
    step_ = "read";
    if (!arm())
      return;
    http::async_read(stream_, buffer_, parser_,
                     beast::bind_front_handler(&session::on_read, self()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec)
      return fail(ec);
    fetch_result result;
    result.ok = true;
    result.http_status = static_cast<int>(parser_.get().result_int());
    result.body = std::move(parser_.get().body());
    deliver(std::move(result));
    shutdown();
  }

  void shutdown() {
    if constexpr (tls) {
      lowest().expires_after(shutdown_grace);
      stream_.async_shutdown(
          beast::bind_front_handler(&session::on_shutdown, self()));
    } else {
      beast::error_code ignored;
      lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
      lowest().close();
    }
  }

  void on_shutdown(beast::error_code) {
    // eof and stream_truncated are the usual outcomes and as good as a
    // clean close_notify; the result went out already either way.
    lowest().close();
  }

  void fail(const beast::error_code& ec) {
    if (finished_)
      return;
    if (ec == beast::error::timeout ||
        (ec == asio::error::operation_aborted && steady::now() >= deadline_))
      return fail_timeout();
    std::string text = step_;
    text += ": ";
    text += describe(ec);
    if constexpr (tls) {
      if (step_ == std::string_view("TLS handshake")) {
        const long verify = SSL_get_verify_result(stream_.native_handle());
        if (host_mismatch_)
          text += ": certificate does not match host name";
        else if (verify != X509_V_OK)
          text += std::string(": ") + X509_verify_cert_error_string(verify);
      }
    }
    fail_with(std::move(text));
  }

  void fail_timeout() {
    fail_with("timeout after " + std::to_string(state_->timeout.count()) +
              " ms (during " + step_ + ")");
  }

  void fail_with(std::string text) {
    if (finished_)
      return;
    lowest().close();
    fetch_result result;
    result.error = std::move(text);
    deliver(std::move(result));
  }

  void deliver(fetch_result result) {
    if (finished_)
      return;
    finished_ = true;
    auto done = std::move(done_);
    done_ = nullptr;
    if (done)
      done(std::move(result));
  }

  std::shared_ptr<const shared_state> state_;
  tcp::resolver resolver_;
  asio::steady_timer resolve_timer_;
  Stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::empty_body> req_;
  http::response_parser<http::string_body> parser_;
  places_client::callback done_;
  steady::time_point deadline_;
  const char* step_ = "resolve";
  bool finished_ = false;
  bool host_mismatch_ = false;
};

} // namespace

bool parse_url(std::string_view text, url& out, std::string& why) {
  url result;
  std::string_view rest;
  if (starts_with_ci(text, "https://")) {
    result.tls = true;
    rest = text.substr(8);
  } else if (starts_with_ci(text, "http://")) {
    rest = text.substr(7);
  } else {
    why = "URL must start with http:// or https://";
    return false;
  }
  for (const char c : text) {
    const auto b = static_cast<unsigned char>(c);
    if (b <= 0x20 || b == 0x7F) {
      why = "URL contains white space or a control character";
      return false;
    }
  }
  const std::size_t authority_end = rest.find_first_of("/?#");
  const std::string_view authority = rest.substr(0, authority_end);
  std::string_view target = authority_end == std::string_view::npos
                                ? std::string_view()
                                : rest.substr(authority_end);
  if (authority.find('@') != std::string_view::npos) {
    why = "user info in URL is not supported";
    return false;
  }
  std::string_view host;
  std::string_view port;
  bool has_port = false;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      why = "unterminated IPv6 address in URL";
      return false;
    }
    host = authority.substr(1, close - 1);
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        why = "unexpected text after IPv6 address in URL";
        return false;
      }
      port = after.substr(1);
      has_port = true;
    }
    boost::system::error_code ec;
    asio::ip::make_address_v6(std::string(host), ec);
    if (ec) {
      why = "invalid IPv6 address in URL";
      return false;
    }
  } else {
    const std::size_t colon = authority.find(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      has_port = true;
    }
  }
  if (host.empty()) {
    why = "URL has no host";
    return false;
  }
  if (has_port) {
    unsigned long number = 0;
    bool valid = !port.empty() && port.size() <= 5;
    for (const char c : port) {
      if (c < '0' || c > '9') {
        valid = false;
        break;
      }
      number = number * 10 + static_cast<unsigned long>(c - '0');
    }
    if (!valid || number == 0 || number > 65535) {
      why = "invalid port in URL";
      return false;
    }
    result.port = std::to_string(number);
  } else {
    result.port = result.tls ? "443" : "80";
  }
  result.host = std::string(host);
  target = target.substr(0, target.find('#'));
  if (target.empty() || target.front() != '/')
    result.target = "/";
  result.target += target;
  out = std::move(result);
  return true;
}

std::string url_encode(std::string_view value) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    const auto b = static_cast<unsigned char>(c);
    const bool unreserved = (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') ||
                            (b >= '0' && b <= '9') || b == '-' || b == '.' ||
                            b == '_' || b == '~';
    if (unreserved) {
      out += c;
    } else {
      out += '%';
      out += hex[b >> 4];
      out += hex[b & 0xF];
    }
  }
  return out;
}

std::string redact_key(std::string_view target) {
  // A parameter starts at the beginning or after '?', '&' or ';'. The name
  // is matched case-insensitively: redacting too much is the safe side.
  std::string out;
  out.reserve(target.size());
  std::size_t i = 0;
  while (i < target.size()) {
    const bool at_param = i == 0 || target[i - 1] == '?' ||
                          target[i - 1] == '&' || target[i - 1] == ';';
    if (at_param && starts_with_ci(target.substr(i), "key=")) {
      out.append(target.substr(i, 4));
      out += "REDACTED";
      i += 4;
      while (i < target.size() && target[i] != '&' && target[i] != ';' &&
             target[i] != '#')
        ++i;
      continue;
    }
    out += target[i];
    ++i;
  }
  return out;
}

struct places_client::impl {
  asio::io_context& ioc;
  std::shared_ptr<const shared_state> state;
};

places_client::places_client(asio::io_context& ioc, places_settings settings) {
  auto state = std::make_shared<shared_state>();
  std::string why;
  if (!parse_url(settings.endpoint, state->endpoint, why))
    throw std::runtime_error("invalid Places endpoint '" +
                             redact_key(settings.endpoint) + "': " + why);
  const url& ep = state->endpoint;
  state->loggable_endpoint = redact_key(settings.endpoint);
  state->host_header =
      ep.host.find(':') != std::string::npos ? "[" + ep.host + "]" : ep.host;
  if (ep.port != (ep.tls ? "443" : "80"))
    state->host_header += ":" + ep.port;
  state->target_prefix = ep.target;
  if (ep.target.find('?') == std::string::npos)
    state->target_prefix += '?';
  else if (ep.target.back() != '?' && ep.target.back() != '&')
    state->target_prefix += '&';
  state->encoded_key = url_encode(settings.api_key);
  state->timeout = settings.timeout;
  state->sni = !is_ip_literal(ep.host);

  SSL_CTX_set_min_proto_version(state->ctx.native_handle(), TLS1_2_VERSION);
  state->ctx.set_verify_mode(ssl::verify_peer);
  boost::system::error_code ec;
  if (settings.ca_file.empty()) {
    state->ctx.set_default_verify_paths(ec);
    if (ec)
      throw std::runtime_error("cannot load the system CA store: " +
                               ec.message());
  } else {
    state->ctx.load_verify_file(settings.ca_file, ec);
    if (ec)
      throw std::runtime_error("cannot load CA file '" + settings.ca_file +
                               "': " + describe(ec));
  }
  impl_.reset(new impl{ioc, std::move(state)});
}

places_client::~places_client() = default;

void places_client::nearby_search(std::string_view lat, std::string_view lng,
                                  std::string_view radius_m, callback done) {
  const shared_state& state = *impl_->state;
  std::string target = state.target_prefix;
  target += "location=";
  target += url_encode(drop_plus(lat));
  target += ',';
  target += url_encode(drop_plus(lng));
  target += "&radius=";
  target += url_encode(radius_m);
  target += "&key=";
  target += state.encoded_key;

  // One connection per request for now; this is where a per-endpoint pool
  // of idle keep-alive connections would hand out a connected stream.
  auto ex = asio::make_strand(impl_->ioc);
  if (state.endpoint.tls) {
    auto s = std::make_shared<session<beast::ssl_stream<beast::tcp_stream>>>(
        ex, impl_->state, std::move(target), std::move(done));
    asio::post(ex, [s] { s->start(); });
  } else {
    auto s = std::make_shared<session<beast::tcp_stream>>(
        ex, impl_->state, std::move(target), std::move(done));
    asio::post(ex, [s] { s->start(); });
  }
}

const std::string& places_client::endpoint() const noexcept {
  return impl_->state->loggable_endpoint;
}

} // namespace herd::net
