// Sockets on Boost.Asio: a pool of single-threaded io_contexts, a listener,
// and line-framed connections. Nothing here knows CAF: a connection reports
// to a `connection_handler`, which the node implements by forwarding to the
// connection's session actor (anon_send), and the actor writes back through
// `connection::send`, which may be called from any thread. A connection's
// "io thread" is whichever thread runs its io_context: a thread of the pool,
// or, when the node's scheduler workers run the sockets, one of them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

namespace herd::net {

/// N io_contexts, each run by one thread. A connection lives on one context
/// for its whole life, so its handlers never race and need no strand.
class io_pool {
 public:
  /// Owns `size` contexts and, from start() on, one thread for each.
  explicit io_pool(size_t size);
  /// Hands out contexts that other threads run (the scheduler's workers);
  /// start() and stop() leave them alone.
  explicit io_pool(std::vector<boost::asio::io_context*> shared);
  ~io_pool();

  /// The next context, round robin.
  boost::asio::io_context& next();
  boost::asio::io_context& at(size_t i) { return *contexts_[i]; }
  size_t size() const noexcept { return contexts_.size(); }

  void start();
  void stop();

 private:
  void create_reactors();

  using work_guard =
      boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;
  std::vector<std::unique_ptr<boost::asio::io_context>> owned_;
  std::vector<boost::asio::io_context*> contexts_;
  std::vector<work_guard> guards_;
  std::vector<std::thread> threads_;
  std::atomic<size_t> next_{0};
};

/// The longest a finished connection waits for its client's EOF.
inline constexpr std::chrono::milliseconds finish_linger{2000};

struct connection_limits {
  uint32_t max_line_bytes = 4096;
  uint32_t max_pending_lines = 256;
  uint32_t max_output_bytes = 4 << 20;
  /// Queued output of which no byte could be written for this long closes
  /// the connection (a reader that stopped, or a peer that vanished without
  /// a reset); 0: never.
  uint32_t write_timeout_ms = 60000;
};

/// Why a connection ended, for the log.
enum class close_reason {
  finished,      ///< EOF from the client and every reply written
  peer_reset,    ///< read or write error (client vanished)
  line_too_long, ///< a line over max_line_bytes
  slow_reader,   ///< more than max_output_bytes of replies queued
  write_stalled, ///< queued replies and no byte written for write_timeout_ms
  server_close,  ///< closed by the node (shutdown, protocol error)
};

const char* to_string(close_reason r);

/// Receives what a connection reads. Called on the connection's io thread.
class connection_handler {
 public:
  virtual ~connection_handler() = default;
  /// Complete lines (terminator removed), back to back in `bytes`, each
  /// ending at the matching offset in `ends`. Both are the io thread's,
  /// reused for its next read (which spares a handler that answers at once
  /// two allocations per read): a handler that keeps the lines copies them
  /// (a copy is sized to the lines; the buffers may be far larger).
  virtual void on_lines(std::string& bytes, std::vector<uint32_t>& ends,
                        int64_t received_ns) = 0;
  /// The client half-closed; no more lines will come.
  virtual void on_eof() = 0;
  /// The connection is closed; nothing more will be called.
  virtual void on_closed(close_reason why) = 0;
};

class connection : public std::enable_shared_from_this<connection> {
 public:
  connection(boost::asio::ip::tcp::socket socket, connection_limits limits,
             uint64_t id);
  ~connection();

  /// Starts reading; `handler` is kept alive until on_closed.
  void start(std::shared_ptr<connection_handler> handler);

  /// Writes `bytes`; `answered` lines are now replied to (which lets
  /// reading resume when it paused at max_pending_lines). Any thread. When
  /// nothing is queued the bytes are written at once on the calling thread
  /// (one non-blocking send(2)), which spares the io thread a wake-up per
  /// reply; the rest is queued for the io thread.
  void send(std::string bytes, uint32_t answered);
  /// The same for bytes the caller keeps: copied only where they cannot
  /// all be written at once.
  void send(std::string_view bytes, uint32_t answered);
  /// For a read handler answering on the io thread: the bytes are written
  /// when the round of reads that called it ends (every ready socket of
  /// the round read), together with the round's other replies, so that a
  /// client waiting for them is woken once rather than once a socket.
  /// Outside a round it is send(). Anything else written to this
  /// connection after it must wait for flush_round_writes().
  void send_after_reads(std::string_view bytes, uint32_t answered);

  /// Closes after every queued byte is written (graceful). Any thread.
  /// If the client may still be sending (no EOF read yet), the connection
  /// first half-closes, then reads and drops what arrives until the client's
  /// EOF or for finish_linger at most: closing with unread bytes would make
  /// the kernel answer with a reset, which can destroy the last reply (a
  /// refusal) before the client reads it.
  void finish();

  /// Closes now. Any thread.
  void close(close_reason why);

  /// Raises or lowers the output limit (a peer link needs more room for a
  /// catch-up than a client needs for replies). Any thread.
  void set_output_limit(uint32_t bytes);

  /// Raises or lowers the line limit (a catch-up digest line is longer than
  /// any client line). Any thread; applies to bytes read afterwards.
  void set_line_limit(uint32_t bytes);

  uint64_t id() const noexcept { return id_; }
  const std::string& remote() const noexcept { return remote_; }

  /// The read reactor saw the socket readable (or hung up). io thread.
  void on_ready(bool hangup);

  /// Closes the connection if its queued output has made no progress for
  /// write_timeout_ms by `now_ns` (CLOCK_MONOTONIC). The read reactor calls
  /// it for every connection, a few times per timeout. Any thread.
  void check_write_progress(int64_t now_ns);
  uint32_t write_timeout_ms() const noexcept {
    return limits_.write_timeout_ms;
  }

 private:
  void try_read();
  void read_lines(); ///< try_read, which contains what it throws
  /// Hands over the lines in `data` (as many as max_pending_lines has room
  /// for) and keeps an incomplete last line; returns the bytes used, less
  /// than `size` when lines were left for later.
  size_t deliver(const char* data, size_t size, int64_t now_ns);
  void write_some(); // requires mtx_
  /// send(): `bytes` are `*owned`'s when `owned` is not null (then moved
  /// into the queue, not copied).
  void send_bytes(std::string_view bytes, std::string* owned,
                  uint32_t answered);
  void close_locked(close_reason why); // requires mtx_; handler called later
  void do_close(close_reason why);
  void maybe_finish_locked(); // requires mtx_
  void linger();              ///< io thread: see finish()
  void drop_until_eof();      ///< io thread: the reads while lingering

  boost::asio::ip::tcp::socket socket_;
  connection_limits limits_;
  uint64_t id_;
  std::string remote_;
  std::shared_ptr<connection_handler> handler_;
  std::string partial_; ///< an incomplete last line (io thread only)
  /// Bytes read but not yet handed over, from unread_pos_ on, because
  /// handing over their lines would have taken the connection past
  /// max_pending_lines: one read's worth at most. Handed over before the
  /// socket is read again, and before its EOF counts (io thread only).
  std::string unread_;
  size_t unread_pos_ = 0;
  std::atomic<uint32_t> max_line_bytes_;
  /// Readable and not yet read dry (the reactor is edge-triggered: it says
  /// so once per arrival). io thread only.
  bool ready_ = false;
  bool hangup_ = false;   ///< the peer half-closed or failed; io thread only
  bool read_eof_ = false; ///< io thread only
  /// Lines delivered and not yet answered, and whether reading paused on
  /// them (the io thread sets the flag, a sender that sees it resumes).
  std::atomic<uint32_t> pending_lines_{0};
  std::atomic<bool> read_paused_{false};
  /// Written out and half-closed: reads only wait for the client's EOF.
  std::atomic<bool> lingering_{false};
  std::unique_ptr<boost::asio::steady_timer> linger_timer_; ///< io thread

  // -- the write side, shared by the io thread and senders: under mtx_ --------
  std::mutex mtx_;
  std::vector<std::string> queue_; ///< replies not yet written
  /// What the write under way takes from: from inflight_[inflight_head_],
  /// inflight_offset_ bytes in, to the end.
  std::vector<std::string> inflight_;
  size_t inflight_head_ = 0;
  size_t inflight_offset_ = 0;
  /// CLOCK_MONOTONIC when the queued output last made progress (or was
  /// queued); 0 while nothing waits to be written.
  int64_t waiting_since_ns_ = 0;
  size_t queued_bytes_ = 0;
  bool writing_ = false;
  bool finishing_ = false;
  /// Written under mtx_; the reader checks it without the lock.
  std::atomic<bool> closed_{false};
  close_reason close_why_ = close_reason::server_close;
};

/// Writes what send_after_reads() held back on this thread now.
void flush_round_writes();

/// Accepts connections on one address and hands each to `on_accept`.
class listener : public std::enable_shared_from_this<listener> {
 public:
  using accept_fn = std::function<void(boost::asio::ip::tcp::socket)>;

  /// Binds and listens; throws boost::system::system_error on failure.
  listener(boost::asio::io_context& accept_ctx, io_pool& pool,
           const boost::asio::ip::tcp::endpoint& where, accept_fn on_accept);

  void start();
  void stop();
  uint16_t port() const;

 private:
  void accept_next();

  boost::asio::ip::tcp::acceptor acceptor_;
  io_pool& pool_;
  accept_fn on_accept_;
};

/// Connects to host:port without blocking: resolve and connect under one
/// deadline. `done` runs once on a thread of `ctx`, with the error (a
/// timeout reads as boost::asio::error::timed_out) or the connected socket.
void dial(boost::asio::io_context& ctx, const std::string& host, uint16_t port,
          std::chrono::milliseconds timeout,
          std::function<void(const boost::system::error_code&,
                             boost::asio::ip::tcp::socket)>
              done);

/// CLOCK_REALTIME in nanoseconds.
int64_t realtime_ns() noexcept;

/// CLOCK_MONOTONIC in nanoseconds.
int64_t monotonic_ns() noexcept;

} // namespace herd::net
