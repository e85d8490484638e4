// An asynchronous HTTP/1.1 client for Places Nearby Search on Boost.Beast, for
// plain HTTP and for HTTPS with peer and host-name verification, SNI, and one
// deadline over resolve, connect, handshake, write and read. Connections are
// kept alive and reused through a small pool of idle ones. It knows nothing
// of actors: the completion runs on an io_context thread and the caller
// forwards it (anon_send) to the actor that owns the work.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <boost/asio/io_context.hpp>

namespace herd::net {

/// A parsed http:// or https:// URL.
struct url {
  bool tls = false;
  std::string host;   ///< host name or address, without brackets
  std::string port;   ///< explicit or the scheme's default
  std::string target; ///< path plus query, at least "/"
};

/// Parses an absolute http(s) URL; returns false with `why` set on error.
bool parse_url(std::string_view text, url& out, std::string& why);

/// Percent-encodes a query value (RFC 3986 unreserved bytes stay as they are).
std::string url_encode(std::string_view value);

/// Replaces the value of every `key=` query parameter with `REDACTED`, so a
/// URL can be logged without the API key.
std::string redact_key(std::string_view target);

struct places_settings {
  std::string endpoint; ///< full URL of the Nearby Search endpoint
  std::string api_key;  ///< never logged, never in an error message
  std::string ca_file;  ///< PEM of a private CA; empty: system store
  std::chrono::milliseconds timeout{5000};
  /// Idle keep-alive connections kept for reuse; 0 turns reuse off.
  std::size_t max_idle = 256;
  /// An idle connection older than this is closed instead of reused.
  std::chrono::milliseconds idle_timeout{30000};
  /// Requests upstream at once; more wait, first come first served, and
  /// their wait counts against `timeout`. 0: no limit.
  std::size_t max_in_flight = 512;
};

/// Connection counters of one client since it was created.
struct places_stats {
  std::uint64_t connections_opened = 0; ///< TCP connections established
  std::uint64_t connections_reused = 0; ///< requests sent on an idle one
  std::uint64_t in_flight = 0;          ///< requests upstream now
  std::uint64_t waiting = 0;            ///< requests waiting for a slot now
  std::uint64_t waited = 0;             ///< requests that had to wait, ever
};

/// What came back from one upstream call. `ok` means an HTTP response was
/// read (whatever its status code); otherwise `error` names the failed step
/// ("resolve", "connect", "TLS handshake", "write", "read", "timeout") and
/// the reason, never the key.
struct fetch_result {
  bool ok = false;
  int http_status = 0;
  std::string body;
  std::string error;
};

class places_client {
 public:
  using callback = std::function<void(fetch_result)>;

  /// Where a new upstream connection lives: called once per connection, on
  /// the thread that starts the request.
  using context_chooser = std::function<boost::asio::io_context&()>;

  /// Fails (throws std::runtime_error with a clear message) on a bad
  /// endpoint URL or an unreadable ca_file. Every connection on `ioc`.
  places_client(boost::asio::io_context& ioc, places_settings settings);
  /// The same, with each new connection on the context `choose` returns (a
  /// node spreads them over its threads; a pooled connection stays where
  /// it was opened).
  places_client(context_chooser choose, places_settings settings);
  /// Closes the idle connections. Requests in flight still complete (their
  /// callbacks run), and their connections are closed afterwards.
  ~places_client();

  places_client(const places_client&) = delete;
  places_client& operator=(const places_client&) = delete;

  /// Starts `GET <endpoint>?location=<lat>,<lng>&radius=<radius_m>&key=<key>`.
  /// `lat` and `lng` are decimal text (a leading '+' is dropped). `done` runs
  /// exactly once, on the thread of the connection's io_context. Any thread
  /// may call it.
  /// The request goes out on the most recently idle connection when there is
  /// one that the server has not closed (a failure on it before any response
  /// byte is retried once on a new connection, within the same deadline),
  /// else on a new connection. With max_in_flight requests already upstream
  /// it waits for one of them to finish; the deadline runs from this call.
  /// Requests still waiting when the client is destroyed complete with the
  /// error "cancelled", and one that cannot start (out of memory) with
  /// "cannot start: ...".
  void nearby_search(std::string_view lat, std::string_view lng,
                     std::string_view radius_m, callback done);

  /// The endpoint as it may be logged (no key).
  const std::string& endpoint() const noexcept;

  /// A snapshot of the connection counters; any thread may call it.
  places_stats stats() const noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace herd::net
