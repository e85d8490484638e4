#include "net/places_client.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <iterator>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
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

/// http::string_body for reading only, minus a pass over every body: its
/// reader grows the string with zeros and then copies over them; this one
/// appends (the space is reserved once from Content-Length).
struct appending_string_body {
  using value_type = std::string;

  class reader {
   public:
    template<bool isRequest, class Fields>
    reader(http::header<isRequest, Fields>&, value_type& body) : body_(body) {}

    void init(const boost::optional<std::uint64_t>& length,
              beast::error_code& ec) {
      ec = {};
      if (!length)
        return;
      if (*length > body_.max_size()) {
        ec = http::error::buffer_overflow;
        return;
      }
      body_.reserve(static_cast<std::size_t>(*length));
    }

    template<class ConstBufferSequence>
    std::size_t put(const ConstBufferSequence& buffers, beast::error_code& ec) {
      ec = {};
      std::size_t n = 0;
      for (auto it = asio::buffer_sequence_begin(buffers);
           it != asio::buffer_sequence_end(buffers); ++it) {
        const asio::const_buffer b(*it);
        body_.append(static_cast<const char*>(b.data()), b.size());
        n += b.size();
      }
      return n;
    }

    void finish(beast::error_code& ec) { ec = {}; }

   private:
    value_type& body_;
  };
};

/// Capacity of a connection's read buffer. Beast reads at most the free
/// capacity (and at least 512 bytes) per call: a full page of results (about
/// 37 KB) then takes one or two reads instead of some seventy.
constexpr std::size_t read_buffer_bytes = 64u * 1024u;
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
  /// One context per client; sessions and connections hold the state, so it
  /// outlives every stream that uses it even when the client goes first.
  /// Mutable because streams take it by reference; creating SSL objects from
  /// one SSL_CTX on several threads is safe.
  mutable ssl::context ctx{ssl::context::tls_client};
};

using plain_stream = beast::tcp_stream;
using tls_stream = beast::ssl_stream<beast::tcp_stream>;

/// One upstream connection. The stream was created on `strand`, and every
/// operation on it, in whichever request, runs there.
template<class Stream> struct connection {
  connection(const strand_type& ex, std::shared_ptr<const shared_state> st)
      : state(std::move(st)), strand(ex), stream(make_stream(ex, *state)) {
    buffer.reserve(read_buffer_bytes);
  }

  static Stream make_stream(const strand_type& ex, const shared_state& st) {
    if constexpr (std::is_same_v<Stream, tls_stream>)
      return Stream(ex, st.ctx);
    else
      return Stream(ex);
  }

  /// Declared first: the TLS stream refers to its SSL context.
  std::shared_ptr<const shared_state> state;
  strand_type strand;
  Stream stream;
  /// Empty between requests: a connection with unread bytes is not reused.
  beast::flat_buffer buffer;
  steady::time_point idle_since{};
  /// Set by the verify callback, which may outlive any one request.
  bool host_mismatch = false;
};

/// The idle connections of one client, most recently used last. The mutex
/// guards the vector only; no I/O happens under it.
template<class Stream> class idle_pool {
 public:
  using conn_ptr = std::unique_ptr<connection<Stream>>;

  idle_pool(std::size_t max_idle, steady::duration idle_timeout)
      : max_idle_(max_idle), idle_timeout_(idle_timeout) {
    idle_.reserve(std::min<std::size_t>(max_idle_, 64));
  }

  /// The most recently returned connection that is not too old, or null.
  /// Connections past the idle timeout are closed.
  conn_ptr take() {
    const auto cutoff = steady::now() - idle_timeout_;
    std::vector<conn_ptr> expired;
    conn_ptr out;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (!idle_.empty() && idle_.back()->idle_since <= cutoff) {
        expired.swap(idle_);
      } else {
        auto young = idle_.begin();
        while (young != idle_.end() && (*young)->idle_since <= cutoff)
          ++young;
        if (young != idle_.begin()) {
          expired.assign(std::make_move_iterator(idle_.begin()),
                         std::make_move_iterator(young));
          idle_.erase(idle_.begin(), young);
        }
        if (!idle_.empty()) {
          out = std::move(idle_.back());
          idle_.pop_back();
        }
      }
    }
    for (auto& c : expired)
      discard(std::move(c));
    return out;
  }

  /// Keeps `c` for reuse, or hands it back when the pool is full or closed.
  /// `c` must have no operation pending.
  conn_ptr put(conn_ptr c) {
    c->idle_since = steady::now();
    const std::lock_guard<std::mutex> lock(mutex_);
    if (closed_ || idle_.size() >= max_idle_)
      return c;
    idle_.push_back(std::move(c));
    return nullptr;
  }

  /// Closes every idle connection; later `put`s hand theirs back.
  void close() {
    std::vector<conn_ptr> all;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      closed_ = true;
      all.swap(idle_);
    }
    for (auto& c : all)
      discard(std::move(c));
  }

  std::atomic<std::uint64_t> opened{0};
  std::atomic<std::uint64_t> reused{0};

 private:
  /// Closes and frees `c` on its strand: the handler that returned it to the
  /// pool may still be unwinding there.
  static void discard(conn_ptr c) {
    const strand_type ex = c->strand;
    asio::post(
        ex, [c = std::move(c)] { beast::get_lowest_layer(c->stream).close(); });
  }

  std::mutex mutex_;
  std::vector<conn_ptr> idle_;
  const std::size_t max_idle_;
  const steady::duration idle_timeout_;
  bool closed_ = false;
};

/// One request: on an idle connection from the pool, or on a new one after
/// resolve, connect and (TLS handshake); then write, read, deliver, and hand
/// the connection back to the pool when the response allows keep-alive (else
/// close it; TLS: shutdown in the background). An idle connection that the
/// server has closed is replaced by a new one before the write when the close
/// has arrived (a peek), and after the failure when it has not: a reused
/// connection that fails before any byte of the response arrived is replaced
/// once. Every handler runs on the strand.
template<class Stream>
class session : public std::enable_shared_from_this<session<Stream>> {
  static constexpr bool tls = std::is_same_v<Stream, tls_stream>;
  using conn_ptr = typename idle_pool<Stream>::conn_ptr;

 public:
  /// `conn` is an idle connection whose strand is `ex`, or null.
  session(strand_type ex, std::shared_ptr<const shared_state> state,
          std::shared_ptr<idle_pool<Stream>> pool, conn_ptr conn,
          std::string target, places_client::callback done,
          steady::time_point deadline)
      : ex_(std::move(ex)), state_(std::move(state)), pool_(std::move(pool)),
        conn_(std::move(conn)), done_(std::move(done)), deadline_(deadline),
        reused_(conn_ != nullptr) {
    // What http::request<empty_body> would serialize, formatted once: Beast's
    // serializer walks a variant of buffer sequences per write, 1.5% of a
    // WHATSAT's CPU for a request that is always this shape.
    const std::string_view host = state_->host_header;
    const std::string_view agent = user_agent;
    request_.reserve(target.size() + host.size() + agent.size() + 80);
    request_.append("GET ").append(target).append(" HTTP/1.1\r\nHost: ");
    request_.append(host).append("\r\nUser-Agent: ").append(agent);
    request_.append("\r\nAccept: application/json\r\n\r\n");
  }

  void start() {
    if (!conn_)
      return open();
    if (!still_open()) {
      // Closed by the server while idle, or it sent something unasked (such
      // as a 408 before closing): not a connection to send a request on.
      lowest().close();
      conn_.reset();
      reused_ = false;
      return open();
    }
    pool_->reused.fetch_add(1, std::memory_order_relaxed);
    write();
  }

 private:
  std::shared_ptr<session> self() { return this->shared_from_this(); }

  beast::tcp_stream& lowest() { return beast::get_lowest_layer(conn_->stream); }

  /// Whether an idle connection has neither been closed by the server nor
  /// received anything: a peek that would block. The socket is in
  /// non-blocking mode since the connect. A close that has not arrived yet
  /// is left to the retry.
  bool still_open() {
    char byte = 0;
    beast::error_code ec;
    lowest().socket().receive(asio::buffer(&byte, 1), tcp::socket::message_peek,
                              ec);
    return ec == asio::error::would_block;
  }

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

  /// A new connection on this session's strand, starting with the lookup.
  void open() {
    conn_ = std::make_unique<connection<Stream>>(ex_, state_);
    step_ = "resolve";
    if (!resolver_) {
      resolver_.emplace(ex_);
      resolve_timer_.emplace(ex_);
    }
    // The stream's deadline does not cover name resolution: a timer of its
    // own does, on the same overall deadline.
    resolving_ = true;
    resolve_timer_->expires_at(deadline_);
    resolve_timer_->async_wait(
        beast::bind_front_handler(&session::on_resolve_timer, self()));
    resolver_->async_resolve(
        state_->endpoint.host, state_->endpoint.port,
        beast::bind_front_handler(&session::on_resolve, self()));
  }

  void on_resolve_timer(beast::error_code ec) {
    if (ec || finished_ || !resolving_)
      return;
    // A cancelled lookup may still finish late (getaddrinfo is not
    // interruptible); the result goes out now and on_resolve ignores it.
    resolver_->cancel();
    fail_timeout();
  }

  void on_resolve(beast::error_code ec, tcp::resolver::results_type results) {
    resolving_ = false;
    resolve_timer_->cancel();
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
    pool_->opened.fetch_add(1, std::memory_order_relaxed);
    // For the peek in still_open(); asynchronous operations do not mind.
    beast::error_code nb_ec;
    lowest().socket().non_blocking(true, nb_ec);
    if constexpr (tls) {
      step_ = "TLS handshake";
      Stream& stream = conn_->stream;
      if (state_->sni) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"
        const bool sni_ok =
            SSL_set_tlsext_host_name(stream.native_handle(),
                                     state_->endpoint.host.c_str()) == 1;
#pragma GCC diagnostic pop
        if (!sni_ok) {
          const beast::error_code sni_ec(static_cast<int>(ERR_get_error()),
                                         asio::error::get_ssl_category());
          return fail(sni_ec);
        }
      }
      stream.set_verify_mode(ssl::verify_peer);
      // The callback stays with the stream after this request: it refers to
      // the connection, not to the session.
      stream.set_verify_callback(
          [c = conn_.get(),
           check = ssl::host_name_verification(state_->endpoint.host)](
              bool preverified, ssl::verify_context& vc) {
            const bool ok = check(preverified, vc);
            if (preverified && !ok)
              c->host_mismatch = true;
            return ok;
          });
      if (!arm())
        return;
      stream.async_handshake(
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
    asio::async_write(conn_->stream, asio::buffer(request_),
                      beast::bind_front_handler(&session::on_write, self()));
  }

  void on_write(beast::error_code ec, std::size_t) {
    if (ec)
      return may_retry(ec) ? retry() : fail(ec);
    step_ = "read";
    if (!arm())
      return;
    parser_.emplace();
    parser_->body_limit(max_body_bytes);
    parser_->header_limit(max_header_bytes);
    http::async_read(conn_->stream, conn_->buffer, *parser_,
                     beast::bind_front_handler(&session::on_read, self()));
  }

  void on_read(beast::error_code ec, std::size_t bytes) {
    if (ec) {
      const bool nothing_read =
          bytes == 0 && !parser_->got_some() && conn_->buffer.size() == 0;
      return nothing_read && may_retry(ec) ? retry() : fail(ec);
    }
    fetch_result result;
    result.ok = true;
    result.http_status = static_cast<int>(parser_->get().result_int());
    result.body = std::move(parser_->get().body());
    // Reusable: HTTP/1.1 without "Connection: close", a length-delimited
    // body, and nothing read past the response.
    if (parser_->get().version() == 11 && parser_->keep_alive() &&
        conn_->buffer.size() == 0) {
      lowest().expires_never();
      conn_ = pool_->put(std::move(conn_));
    }
    deliver(std::move(result));
    if (conn_)
      shutdown();
  }

  /// Whether a failure on a reused connection may be retried on a new one:
  /// once, and only while the deadline has not passed.
  bool may_retry(const beast::error_code& ec) const {
    return reused_ && !retried_ && !finished_ && ec != beast::error::timeout &&
           ec != asio::error::operation_aborted && steady::now() < deadline_;
  }

  void retry() {
    retried_ = true;
    lowest().close();
    conn_.reset();
    open();
  }

  void shutdown() {
    if constexpr (tls) {
      lowest().expires_after(shutdown_grace);
      conn_->stream.async_shutdown(
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
        const long verify =
            SSL_get_verify_result(conn_->stream.native_handle());
        if (conn_->host_mismatch)
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
    if (conn_)
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

  strand_type ex_;
  std::shared_ptr<const shared_state> state_;
  std::shared_ptr<idle_pool<Stream>> pool_;
  conn_ptr conn_;
  std::optional<tcp::resolver> resolver_;
  std::optional<asio::steady_timer> resolve_timer_;
  std::string request_; ///< the GET, headers and all
  std::optional<http::response_parser<appending_string_body>> parser_;
  places_client::callback done_;
  steady::time_point deadline_;
  const char* step_ = "write";
  bool reused_ = false;
  bool retried_ = false;
  bool resolving_ = false;
  bool finished_ = false;
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

namespace {

/// Starts one request of `state`'s client on an idle connection of `pool`,
/// or on a new connection on a new strand.
template<class Stream>
void start_session(const places_client::context_chooser& choose,
                   const std::shared_ptr<const shared_state>& state,
                   const std::shared_ptr<idle_pool<Stream>>& pool,
                   std::string target, places_client::callback done,
                   steady::time_point deadline) {
  auto conn = pool->take();
  strand_type ex = conn ? conn->strand : asio::make_strand(choose());
  auto s = std::make_shared<session<Stream>>(ex, state, pool, std::move(conn),
                                             std::move(target), std::move(done),
                                             deadline);
  asio::post(ex, [s = std::move(s)] { s->start(); });
}

} // namespace

/// Keeps at most `max` requests upstream; the rest wait in arrival order.
/// Shared with the completions of requests in flight, which may run after
/// the client is gone.
struct in_flight_limit {
  struct waiter {
    std::function<void()> start;
    places_client::callback fail; ///< for one that never gets a slot
    steady::time_point deadline;
    std::chrono::milliseconds timeout;
  };
  explicit in_flight_limit(std::size_t max_requests) : max(max_requests) {}

  const std::size_t max; ///< 0: no limit
  std::mutex mtx;
  std::size_t running = 0;
  std::deque<waiter> waiting;
  bool closed = false;
  std::atomic<std::uint64_t> waited{0};

  /// Runs `w.start` now if there is room (or the client is closing: then
  /// nothing would ever start a waiting one), else queues it.
  void submit(waiter w) {
    {
      std::lock_guard<std::mutex> guard(mtx);
      if (max != 0 && running >= max && !closed) {
        waiting.push_back(std::move(w));
        waited.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      ++running;
    }
    start_or_fail(w);
  }

  /// Starts a request that holds a slot; one that cannot start (out of
  /// memory) completes with the reason, and its slot goes to the next.
  void start_or_fail(waiter& w) noexcept {
    try {
      w.start();
      return;
    } catch (const std::exception& e) {
      fail(w, std::string("cannot start: ") + e.what());
    } catch (...) {
      fail(w, "cannot start");
    }
    release();
  }

  /// A request finished: its slot goes to the oldest waiting one whose
  /// deadline has not passed. Those before it whose deadline went by in the
  /// queue fail here (in a loop, not through a chain of completions), and
  /// so does one that cannot start (out of memory), its slot going on to
  /// the next. Never throws: it runs when a request ends.
  void release() noexcept {
    std::vector<waiter> expired;
    std::optional<waiter> next;
    {
      std::lock_guard<std::mutex> guard(mtx);
      const auto now = steady::now();
      while (!closed && !waiting.empty()) {
        auto& front = waiting.front();
        if (now < front.deadline) {
          next.emplace(std::move(front));
          waiting.pop_front();
          break;
        }
        expired.push_back(std::move(front));
        waiting.pop_front();
      }
      if (!next)
        --running;
    }
    for (auto& w : expired)
      fail(w, "timeout after " + std::to_string(w.timeout.count()) +
                  " ms (waiting for a free upstream slot)");
    if (next)
      start_or_fail(*next);
  }

  static void fail(waiter& w, std::string why) noexcept {
    try {
      fetch_result r;
      r.error = std::move(why);
      w.fail(std::move(r));
    } catch (...) {
      // The caller's callback could not take it; nothing is left to tell.
    }
  }

  /// Fails every waiting request; later ones still run.
  void close() {
    std::deque<waiter> dropped;
    {
      std::lock_guard<std::mutex> guard(mtx);
      closed = true;
      dropped.swap(waiting);
    }
    for (auto& w : dropped)
      fail(w, "cancelled: the Places client is shutting down");
  }
};

struct places_client::impl {
  context_chooser choose;
  std::shared_ptr<const shared_state> state;
  /// The one of the two that the endpoint's scheme uses.
  std::shared_ptr<idle_pool<plain_stream>> plain;
  std::shared_ptr<idle_pool<tls_stream>> secure;
  std::shared_ptr<in_flight_limit> limit;
};

places_client::places_client(asio::io_context& ioc, places_settings settings)
    : places_client([&ioc]() -> asio::io_context& { return ioc; },
                    std::move(settings)) {}

places_client::places_client(context_chooser choose, places_settings settings) {
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
  const bool tls = ep.tls;
  impl_.reset(
      new impl{std::move(choose), std::move(state), nullptr, nullptr,
               std::make_shared<in_flight_limit>(settings.max_in_flight)});
  if (tls)
    impl_->secure = std::make_shared<idle_pool<tls_stream>>(
        settings.max_idle, settings.idle_timeout);
  else
    impl_->plain = std::make_shared<idle_pool<plain_stream>>(
        settings.max_idle, settings.idle_timeout);
}

places_client::~places_client() {
  impl_->limit->close();
  if (impl_->plain)
    impl_->plain->close();
  if (impl_->secure)
    impl_->secure->close();
}

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

  const auto deadline = steady::now() + state.timeout;
  in_flight_limit::waiter w;
  w.fail = done; // a waiting request never took a slot
  w.deadline = deadline;
  w.timeout = state.timeout;
  // The caller hears the result, then the slot goes to the next in line:
  // results come back in the order the requests ended.
  places_client::callback finished = [limit = impl_->limit,
                                      done = std::move(done)](fetch_result r) {
    struct give_back { // even if `done` throws
      in_flight_limit& l;
      ~give_back() { l.release(); }
    } slot{*limit};
    done(std::move(r));
  };
  auto start = [choose = impl_->choose, state = impl_->state,
                target = std::move(target), deadline,
                finished = std::move(finished)](auto& pool) mutable {
    start_session(choose, state, pool, std::move(target), std::move(finished),
                  deadline);
  };
  if (impl_->secure)
    w.start = [start = std::move(start), pool = impl_->secure]() mutable {
      start(pool);
    };
  else
    w.start = [start = std::move(start), pool = impl_->plain]() mutable {
      start(pool);
    };
  impl_->limit->submit(std::move(w));
}

const std::string& places_client::endpoint() const noexcept {
  return impl_->state->loggable_endpoint;
}

places_stats places_client::stats() const noexcept {
  places_stats out;
  auto read = [&out](const auto& pool) {
    out.connections_opened = pool.opened.load(std::memory_order_relaxed);
    out.connections_reused = pool.reused.load(std::memory_order_relaxed);
  };
  if (impl_->secure)
    read(*impl_->secure);
  else
    read(*impl_->plain);
  auto& limit = *impl_->limit;
  out.waited = limit.waited.load(std::memory_order_relaxed);
  std::lock_guard<std::mutex> guard(limit.mtx);
  out.in_flight = limit.running;
  out.waiting = limit.waiting.size();
  return out;
}

} // namespace herd::net
