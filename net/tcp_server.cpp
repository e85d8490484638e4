#include "net/tcp_server.hpp"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <unordered_map>

#include <boost/asio/connect.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace herd::net {

int64_t realtime_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

int64_t monotonic_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

const char* to_string(close_reason r) {
  switch (r) {
  case close_reason::finished:
    return "finished";
  case close_reason::peer_reset:
    return "peer reset or vanished";
  case close_reason::line_too_long:
    return "line too long";
  case close_reason::slow_reader:
    return "slow reader (output limit)";
  case close_reason::write_stalled:
    return "slow reader (no write progress)";
  case close_reason::server_close:
    return "closed by server";
  }
  return "unknown";
}

// -- rounds of reads ----------------------------------------------------------

namespace {

/// Replies held back by send_after_reads() until the round of reads on
/// this thread ends.
struct round_writes {
  struct entry {
    std::shared_ptr<connection> conn;
    size_t begin = 0, end = 0; ///< in `bytes`
    uint32_t answered = 0;
  };
  std::string bytes;
  std::vector<entry> entries;
  int open_rounds = 0;
};

round_writes& thread_round_writes() {
  thread_local round_writes w;
  return w;
}

/// A round of reads on this thread; the outermost writes what was held
/// back when it ends.
class read_round {
 public:
  read_round() { ++thread_round_writes().open_rounds; }
  ~read_round() {
    if (--thread_round_writes().open_rounds == 0)
      flush_round_writes();
  }
  read_round(const read_round&) = delete;
  read_round& operator=(const read_round&) = delete;
};

} // namespace

void flush_round_writes() {
  auto& w = thread_round_writes();
  if (w.entries.empty())
    return;
  std::string_view all(w.bytes);
  for (auto& e : w.entries) {
    try {
      e.conn->send(all.substr(e.begin, e.end - e.begin), e.answered);
    } catch (...) {
      // Out of memory queueing the rest: that connection's replies are
      // lost, so it is closed (as a handler that throws closes its own);
      // the round's other connections still get theirs. Runs from
      // ~read_round, which must not throw.
      e.conn->close(close_reason::server_close);
    }
  }
  w.entries.clear();
  w.bytes.clear();
  if (w.bytes.capacity() > 1u << 20)
    std::string().swap(w.bytes); // after a rare large round
}

// -- the read reactor -------------------------------------------------------

namespace {

/// The read side of every connection on one io_context: an epoll set of its
/// own, edge-triggered, that Asio watches as one descriptor. Asio's own way
/// to wait for a readable socket (async_wait) re-arms it with epoll_ctl(2)
/// on every wait, one system call per request on top of recv and send, and
/// reading into a buffer of each connection's own costs memory per idle
/// connection and a recv that fails with EAGAIN per request. Here a socket
/// is added once; an arrival of data wakes its connection once, and the
/// connection reads until a short read (or EAGAIN). The set itself is re-armed
/// once per batch of ready sockets. Runs on the context's thread only.
class read_reactor final : public asio::execution_context::service {
 public:
  using key_type = read_reactor;
  static asio::execution_context::id id;

  explicit read_reactor(asio::execution_context& owner)
      : service(owner), epoll_(::epoll_create1(EPOLL_CLOEXEC)),
        set_(static_cast<asio::io_context&>(owner)),
        sweep_timer_(static_cast<asio::io_context&>(owner)) {
    if (epoll_ < 0)
      throw boost::system::system_error(errno, boost::system::system_category(),
                                        "epoll_create1");
    set_.assign(epoll_);
    arm();
  }

  /// Watches `c`'s socket `fd`, and keeps `c` until remove(). False when
  /// the kernel refused (out of memory, or of epoll watches).
  bool add(const std::shared_ptr<connection>& c, int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
    // Keyed by address: an event that outlives its connection can at worst
    // wake a later one at the same address, which then reads nothing.
    ev.data.ptr = c.get();
    if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev) != 0)
      return false;
    connections_.emplace(c.get(), c);
    if (auto ms = c->write_timeout_ms(); ms > 0) {
      // Checked four times per timeout (between 10 ms and 1 s apart), so a
      // stalled connection closes between 1 and 1.25 timeouts after its
      // last progress.
      auto every =
          std::chrono::milliseconds(std::clamp<uint32_t>(ms / 4, 10, 1000));
      if (sweep_every_.count() == 0 || every < sweep_every_) {
        sweep_every_ = every;
        schedule_sweep();
      }
    }
    return true;
  }

  /// Forgets `c` (its socket is closed or about to be, which takes it out
  /// of the epoll set). During a drain the connection is kept until the
  /// drain ends: it may be the one reading.
  void remove(const connection* c) {
    auto it = connections_.find(c);
    if (it == connections_.end())
      return;
    if (draining_)
      closed_in_drain_.push_back(std::move(it->second));
    connections_.erase(it);
  }

 private:
  void shutdown() override {
    boost::system::error_code ec;
    set_.close(ec); // closes epoll_
    sweep_timer_.cancel();
    connections_.clear();
  }

  /// Every sweep_every_ while connections remain: closes the ones whose
  /// output stalled. The timer stops with the last connection and starts
  /// again with the next.
  void schedule_sweep() {
    sweep_timer_.expires_after(sweep_every_);
    sweep_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec)
        return; // cancelled: rescheduled, or shutting down
      if (connections_.empty()) {
        sweep_every_ = {};
        return;
      }
      auto now = monotonic_ns();
      // A close is finished later on this thread (do_close, posted), so
      // the map does not change under this loop.
      for (auto& entry : connections_)
        entry.second->check_write_progress(now);
      schedule_sweep();
    });
  }

  void arm() {
    set_.async_wait(asio::posix::stream_descriptor::wait_read,
                    [this](const boost::system::error_code& ec) {
                      if (ec)
                        return;
                      // Re-armed even if a handler throws, or every
                      // connection of this context would stop being read.
                      struct rearm {
                        read_reactor* r;
                        ~rearm() { r->arm(); }
                      } guard{this};
                      drain();
                    });
  }

  /// Up to four batches of ready sockets; the set stays readable if more
  /// wait, and Asio reports it again after the others had a turn.
  void drain() {
    std::array<epoll_event, 128> events{};
    int n = 0;
    int batches = 0;
    struct drain_scope { // a connection that closes while it reads stays
      read_reactor* r;   // alive until here (see remove)
      explicit drain_scope(read_reactor* rr) : r(rr) { r->draining_ = true; }
      ~drain_scope() {
        r->draining_ = false;
        r->closed_in_drain_.clear();
      }
    } scope(this);
    read_round round; // ends before the scope: connections are still kept
    do {
      n = ::epoll_wait(epoll_, events.data(), static_cast<int>(events.size()),
                       0);
      for (int i = 0; i < n; ++i) {
        auto it = connections_.find(
            static_cast<const connection*>(events[i].data.ptr));
        if (it == connections_.end())
          continue; // closed since
        it->second->on_ready(
            (events[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0);
      }
    } while (n == static_cast<int>(events.size()) && ++batches < 4);
  }

  int epoll_;
  asio::posix::stream_descriptor set_;
  std::unordered_map<const connection*, std::shared_ptr<connection>>
      connections_;
  asio::steady_timer sweep_timer_;
  std::chrono::milliseconds sweep_every_{0}; ///< 0: no sweep scheduled
  bool draining_ = false;
  /// Connections removed during the drain now running.
  std::vector<std::shared_ptr<connection>> closed_in_drain_;
};

asio::execution_context::id read_reactor::id;

} // namespace

// -- io_pool ----------------------------------------------------------------

io_pool::io_pool(size_t size) {
  if (size == 0)
    size = 1;
  for (size_t i = 0; i < size; ++i) {
    owned_.push_back(std::make_unique<asio::io_context>(1));
    contexts_.push_back(owned_.back().get());
    guards_.emplace_back(asio::make_work_guard(*owned_.back()));
  }
  create_reactors();
}

io_pool::io_pool(std::vector<asio::io_context*> shared)
    : contexts_(std::move(shared)) {
  create_reactors();
}

void io_pool::create_reactors() {
  // Each context's read reactor now, so that a failure (no epoll set to be
  // had) stops the node at start rather than in a handler later.
  for (auto* ctx : contexts_)
    asio::use_service<read_reactor>(*ctx);
}

io_pool::~io_pool() {
  stop();
}

asio::io_context& io_pool::next() {
  return *contexts_[next_.fetch_add(1, std::memory_order_relaxed) %
                    contexts_.size()];
}

void io_pool::start() {
  for (auto& ctx : owned_)
    threads_.emplace_back([c = ctx.get()] { c->run(); });
}

void io_pool::stop() {
  for (auto& ctx : owned_)
    ctx->stop();
  for (auto& t : threads_)
    if (t.joinable())
      t.join();
  threads_.clear();
}

// -- connection ---------------------------------------------------------------

namespace {

/// One read buffer per io thread: an idle connection holds no buffer at all,
/// only its partial line, which is what keeps idle connections cheap.
constexpr size_t read_buffer_size = 64 * 1024;

char* thread_read_buffer() {
  thread_local std::unique_ptr<char[]> buf(new char[read_buffer_size]);
  return buf.get();
}

/// Reads at most this many full buffers in a row from one connection before
/// letting the others of its thread have a turn.
constexpr int reads_per_turn = 4;

} // namespace

connection::connection(tcp::socket socket, connection_limits limits,
                       uint64_t id)
    : socket_(std::move(socket)), limits_(limits), id_(id),
      max_line_bytes_(limits.max_line_bytes) {
  boost::system::error_code ec;
  auto ep = socket_.remote_endpoint(ec);
  if (!ec)
    remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
  socket_.non_blocking(true, ec);
  socket_.set_option(tcp::no_delay(true), ec);
}

connection::~connection() = default;

void connection::start(std::shared_ptr<connection_handler> handler) {
  asio::post(socket_.get_executor(), [self = shared_from_this(),
                                      h = std::move(handler)]() mutable {
    self->handler_ = std::move(h);
    {
      std::unique_lock<std::mutex> guard(self->mtx_);
      if (self->closed_) { // before it started: tell the handler here
        guard.unlock();
        self->do_close(self->close_why_);
        return;
      }
    }
    if (!asio::use_service<read_reactor>(self->socket_.get_executor().context())
             .add(self, self->socket_.native_handle())) {
      self->do_close(close_reason::server_close);
      return;
    }
    // Bytes that came before the socket joined the set raised no
    // edge there.
    self->ready_ = true;
    self->try_read();
  });
}

void connection::on_ready(bool hangup) {
  ready_ = true;
  hangup_ = hangup_ || hangup;
  try_read();
}

void connection::try_read() {
  read_round round;
  if (lingering_.load()) {
    drop_until_eof();
    return;
  }
  try {
    read_lines();
  } catch (...) {
    // A handler that throws (out of memory, a bug) costs its connection,
    // not the io thread and every other connection on it.
    if (handler_)
      do_close(close_reason::server_close);
  }
}

void connection::read_lines() {
  if (!handler_ || read_eof_ || (!ready_ && unread_.empty()))
    return;
  if (closed_.load(std::memory_order_acquire)) {
    // By another thread: finish the close here. (One that comes later has
    // shut the socket down, so the read below ends, and its posted
    // do_close follows.)
    do_close(close_reason::server_close); // the reason set with the flag wins
    return;
  }
  char* buf = thread_read_buffer();
  for (int round = 0;; ++round) {
    if (pending_lines_.load() >= limits_.max_pending_lines) {
      // Pause, still ready; a sender that answers lines sees the flag and
      // resumes us. The re-check closes the race with a sender that
      // answered in between.
      read_paused_.store(true);
      if (pending_lines_.load() >= limits_.max_pending_lines)
        return;
      read_paused_.store(false);
    }
    if (round == reads_per_turn) {
      asio::post(socket_.get_executor(),
                 [self = shared_from_this()] { self->try_read(); });
      return;
    }
    if (!unread_.empty()) {
      // Lines held back when the last read had more than the limit allowed.
      size_t used = deliver(unread_.data() + unread_pos_,
                            unread_.size() - unread_pos_, realtime_ns());
      if (!handler_)
        return; // closed (a line too long)
      unread_pos_ += used;
      if (unread_pos_ == unread_.size()) {
        std::string().swap(unread_);
        unread_pos_ = 0;
      }
      continue;
    }
    if (!ready_)
      return;
    ssize_t got = ::recv(socket_.native_handle(), buf, read_buffer_size, 0);
    if (got < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        ready_ = false;
        return;
      }
      do_close(close_reason::peer_reset);
      return;
    }
    if (got == 0) {
      read_eof_ = true;
      ready_ = false;
      if (!partial_.empty()) {
        // A last line without '\n' before the half-close still counts.
        std::string last;
        last.swap(partial_);
        std::vector<uint32_t> ends{static_cast<uint32_t>(last.size())};
        ++pending_lines_;
        handler_->on_lines(last, ends, realtime_ns());
      }
      handler_->on_eof();
      return;
    }
    auto n = static_cast<size_t>(got);
    size_t used = deliver(buf, n, realtime_ns());
    if (!handler_)
      return; // closed (a line too long)
    if (used < n) {
      unread_.assign(buf + used, buf + n);
      unread_pos_ = 0;
    }
    // A short read took everything there was: the next arrival raises a
    // new edge. After a hang-up no edge comes for the EOF, so read on.
    if (n < read_buffer_size && !hangup_)
      ready_ = false;
    // Lines held back go on once answers make room (the check above
    // pauses until then).
    if (!ready_ && unread_.empty())
      return;
  }
}

size_t connection::deliver(const char* data, size_t size, int64_t now_ns) {
  const size_t max_line_limit = max_line_bytes_.load();
  // However many lines one read holds, hand over only as many as the
  // pending-lines limit has room for: one 64 KiB read of short lines is
  // thousands of requests, each of which may hold memory or an upstream
  // call until it is answered.
  const uint32_t pending = pending_lines_.load();
  const size_t room = pending < limits_.max_pending_lines
                          ? limits_.max_pending_lines - pending
                          : 1; // not reached: try_read reads below it
  // The thread's batch buffers (see connection_handler::on_lines).
  thread_local std::string thread_bytes;
  thread_local std::vector<uint32_t> thread_ends;
  std::string& bytes = thread_bytes;
  std::vector<uint32_t>& ends = thread_ends;
  if (bytes.capacity() > 2 * read_buffer_size) // after a peer's long line
    std::string().swap(bytes);
  bytes.clear();
  ends.clear();
  const char* end = data + size;
  const char* pos = data;
  while (pos < end) {
    if (ends.size() == room) {
      // The rest waits: its lines are handed over as answers make room.
      if (!ends.empty()) {
        pending_lines_ += static_cast<uint32_t>(ends.size());
        handler_->on_lines(bytes, ends, now_ns);
      }
      return static_cast<size_t>(pos - data);
    }
    auto* nl = static_cast<const char*>(std::memchr(pos, '\n', end - pos));
    if (nl == nullptr)
      break;
    size_t len = static_cast<size_t>(nl - pos);
    if (partial_.size() + len > max_line_limit) {
      do_close(close_reason::line_too_long);
      return size;
    }
    if (bytes.empty() && ends.empty())
      // Room for all of it, unless only a few lines may go (then they are
      // likely short: they grow the string if not).
      bytes.reserve(partial_.size() +
                    std::min(static_cast<size_t>(end - pos), room * 128));
    size_t line_start = bytes.size();
    if (!partial_.empty()) {
      bytes += partial_;
      partial_.clear();
      partial_.shrink_to_fit();
    }
    bytes.append(pos, len);
    if (bytes.size() > line_start && bytes.back() == '\r')
      bytes.pop_back(); // "\r\n" ends a line as "\n" does
    ends.push_back(static_cast<uint32_t>(bytes.size()));
    pos = nl + 1;
  }
  if (pos < end) {
    if (partial_.size() + static_cast<size_t>(end - pos) > max_line_limit) {
      do_close(close_reason::line_too_long);
      return size;
    }
    partial_.append(pos, end);
  }
  if (!ends.empty()) {
    pending_lines_ += static_cast<uint32_t>(ends.size());
    handler_->on_lines(bytes, ends, now_ns);
  }
  return size;
}

void connection::send(std::string bytes, uint32_t answered) {
  send_bytes(bytes, &bytes, answered);
}

void connection::send(std::string_view bytes, uint32_t answered) {
  send_bytes(bytes, nullptr, answered);
}

void connection::send_after_reads(std::string_view bytes, uint32_t answered) {
  auto& w = thread_round_writes();
  if (w.open_rounds == 0) {
    send(bytes, answered);
    return;
  }
  auto begin = w.bytes.size();
  w.bytes += bytes;
  w.entries.push_back({shared_from_this(), begin, w.bytes.size(), answered});
}

void connection::send_bytes(std::string_view bytes, std::string* owned,
                            uint32_t answered) {
  if (answered > 0) {
    uint32_t left = pending_lines_ -= std::min(pending_lines_.load(), answered);
    // A reader paused at the limit resumes once half of it is free again,
    // so that it hands over the lines it holds in batches, not one line (and
    // one message to the session) per answer.
    if (left <= limits_.max_pending_lines / 2 && read_paused_.exchange(false))
      asio::post(socket_.get_executor(),
                 [self = shared_from_this()] { self->try_read(); });
  }
  if (bytes.empty())
    return;
  std::lock_guard<std::mutex> guard(mtx_);
  if (closed_)
    return;
  if (!writing_ && queue_.empty()) {
    // Nothing ahead of these bytes: write them now, on this thread.
    auto fd = socket_.native_handle();
    ssize_t n =
        ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n == static_cast<ssize_t>(bytes.size()))
      return;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      close_locked(close_reason::peer_reset);
      return;
    }
    if (n > 0)
      bytes.remove_prefix(static_cast<size_t>(n));
  }
  // A reader is slow when what it left unread already exceeds the limit;
  // one large write (a catch-up) on a connection that keeps up is fine.
  if (queued_bytes_ > limits_.max_output_bytes) {
    close_locked(close_reason::slow_reader);
    return;
  }
  queued_bytes_ += bytes.size();
  if (owned != nullptr) {
    owned->erase(0, owned->size() - bytes.size());
    queue_.push_back(std::move(*owned));
  } else {
    queue_.emplace_back(bytes);
  }
  if (!writing_) {
    writing_ = true;
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
      std::lock_guard<std::mutex> g(self->mtx_);
      self->write_some();
    });
  }
}

void connection::write_some() {
  // requires mtx_
  if (closed_ || (inflight_head_ == inflight_.size() && queue_.empty())) {
    writing_ = false;
    waiting_since_ns_ = 0;
    inflight_.clear();
    inflight_head_ = inflight_offset_ = 0;
    maybe_finish_locked();
    return;
  }
  writing_ = true;
  if (inflight_head_ == inflight_.size()) {
    inflight_.clear();
    inflight_.swap(queue_);
    inflight_head_ = inflight_offset_ = 0;
  }
  if (waiting_since_ns_ == 0)
    waiting_since_ns_ = monotonic_ns();
  // One writev's worth at a time, so that progress is seen as it is made
  // (a slow but steady reader is not a stalled one).
  constexpr size_t max_buffers = 64;
  std::vector<asio::const_buffer> buffers;
  buffers.reserve(std::min(max_buffers, inflight_.size() - inflight_head_));
  for (size_t i = inflight_head_;
       i < inflight_.size() && buffers.size() < max_buffers; ++i) {
    size_t skip = i == inflight_head_ ? inflight_offset_ : 0;
    buffers.emplace_back(inflight_[i].data() + skip,
                         inflight_[i].size() - skip);
  }
  socket_.async_write_some(
      buffers, [self = shared_from_this()](const boost::system::error_code& ec,
                                           size_t written) {
        std::unique_lock<std::mutex> guard(self->mtx_);
        self->queued_bytes_ -= std::min(self->queued_bytes_, written);
        if (written > 0)
          self->waiting_since_ns_ = monotonic_ns();
        while (written > 0 && self->inflight_head_ < self->inflight_.size()) {
          auto& b = self->inflight_[self->inflight_head_];
          size_t left = b.size() - self->inflight_offset_;
          if (written < left) {
            self->inflight_offset_ += written;
            break;
          }
          written -= left;
          std::string().swap(b); // written: release it now
          ++self->inflight_head_;
          self->inflight_offset_ = 0;
        }
        if (self->closed_) {
          guard.unlock();
          self->do_close(self->close_why_);
          return;
        }
        if (ec) {
          self->close_locked(close_reason::peer_reset);
          guard.unlock();
          self->do_close(close_reason::peer_reset);
          return;
        }
        self->write_some();
      });
}

void connection::check_write_progress(int64_t now_ns) {
  std::lock_guard<std::mutex> guard(mtx_);
  if (closed_ || waiting_since_ns_ == 0 || limits_.write_timeout_ms == 0)
    return;
  if (now_ns - waiting_since_ns_ >=
      static_cast<int64_t>(limits_.write_timeout_ms) * 1'000'000)
    close_locked(close_reason::write_stalled);
}

void connection::finish() {
  std::lock_guard<std::mutex> guard(mtx_);
  finishing_ = true;
  maybe_finish_locked();
}

void connection::maybe_finish_locked() {
  if (!finishing_ || writing_ || !queue_.empty() || closed_ ||
      lingering_.load())
    return;
  ::shutdown(socket_.native_handle(), SHUT_WR);
  lingering_.store(true);
  asio::post(socket_.get_executor(),
             [self = shared_from_this()] { self->linger(); });
}

void connection::linger() {
  if (!socket_.is_open())
    return;        // closed meanwhile
  if (read_eof_) { // the usual end: the client half-closed first
    do_close(close_reason::finished);
    return;
  }
  linger_timer_ = std::make_unique<asio::steady_timer>(socket_.get_executor(),
                                                       finish_linger);
  linger_timer_->async_wait(
      [self = shared_from_this()](const boost::system::error_code& ec) {
        if (!ec)
          self->do_close(close_reason::finished);
      });
  ready_ = true; // whatever is buffered raised its edge already
  drop_until_eof();
}

void connection::drop_until_eof() {
  char* buf = thread_read_buffer();
  for (int round = 0; round < reads_per_turn; ++round) {
    if (!ready_ || !socket_.is_open())
      return;
    boost::system::error_code ec;
    size_t n = socket_.read_some(asio::buffer(buf, read_buffer_size), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      ready_ = false;
      return;
    }
    if (ec) { // EOF, or the client is gone: nothing left to wait for
      do_close(close_reason::finished);
      return;
    }
    if (n < read_buffer_size && !hangup_)
      ready_ = false;
  }
  asio::post(socket_.get_executor(),
             [self = shared_from_this()] { self->drop_until_eof(); });
}

void connection::close(close_reason why) {
  {
    std::lock_guard<std::mutex> guard(mtx_);
    close_locked(why);
  }
}

void connection::close_locked(close_reason why) {
  if (!closed_) {
    close_why_ = why;
    closed_ = true;
    // Any thread may get here, but the socket object belongs to the io
    // thread: shut the connection down (which wakes a pending read) and
    // leave closing the descriptor to do_close there. The descriptor stays
    // allocated until then, so no new connection can reuse its number while
    // the io thread still reads from it; senders see closed_ under mtx_.
    ::shutdown(socket_.native_handle(), SHUT_RDWR);
    queue_.clear();
  }
  // The handler is told on the io thread, which owns it.
  asio::post(socket_.get_executor(),
             [self = shared_from_this()] { self->do_close(self->close_why_); });
}

void connection::do_close(close_reason why) {
  // io thread only
  {
    std::lock_guard<std::mutex> guard(mtx_);
    if (!closed_) {
      close_why_ = why;
      closed_ = true;
      queue_.clear();
    }
    if (socket_.is_open()) {
      boost::system::error_code ec;
      socket_.close(ec);
    }
    why = close_why_;
  }
  if (linger_timer_)
    linger_timer_->cancel();
  partial_.clear();
  partial_.shrink_to_fit();
  std::string().swap(unread_);
  unread_pos_ = 0;
  ready_ = false;
  asio::use_service<read_reactor>(socket_.get_executor().context())
      .remove(this);
  if (auto h = std::move(handler_))
    h->on_closed(why);
}

void connection::set_line_limit(uint32_t bytes) {
  max_line_bytes_.store(bytes);
}

void connection::set_output_limit(uint32_t bytes) {
  std::lock_guard<std::mutex> guard(mtx_);
  limits_.max_output_bytes = bytes;
}

// -- dial
// -----------------------------------------------------------------------

void dial(
    asio::io_context& ctx, const std::string& host, uint16_t port,
    std::chrono::milliseconds timeout,
    std::function<void(const boost::system::error_code&, tcp::socket)> done) {
  struct attempt {
    attempt(
        asio::io_context& c,
        std::function<void(const boost::system::error_code&, tcp::socket)> f)
        : resolver(c), socket(c), timer(c), done(std::move(f)) {}
    tcp::resolver resolver;
    tcp::socket socket;
    asio::steady_timer timer;
    std::function<void(const boost::system::error_code&, tcp::socket)> done;
    bool finished = false;
    void finish(const boost::system::error_code& ec) {
      if (finished)
        return;
      finished = true;
      timer.cancel();
      resolver.cancel();
      if (ec) {
        boost::system::error_code ignored;
        socket.close(ignored);
        done(ec, tcp::socket(socket.get_executor()));
      } else {
        done(ec, std::move(socket));
      }
    }
  };
  auto a = std::make_shared<attempt>(ctx, std::move(done));
  a->timer.expires_after(timeout);
  a->timer.async_wait([a](const boost::system::error_code& ec) {
    if (!ec) {
      boost::system::error_code ignored;
      a->socket.close(ignored);
      a->finish(asio::error::timed_out);
    }
  });
  a->resolver.async_resolve(
      host, std::to_string(port),
      [a](const boost::system::error_code& ec,
          const tcp::resolver::results_type& results) {
        if (a->finished)
          return;
        if (ec) {
          a->finish(ec);
          return;
        }
        asio::async_connect(a->socket, results,
                            [a](const boost::system::error_code& cec,
                                const tcp::endpoint&) { a->finish(cec); });
      });
}

// -- listener -----------------------------------------------------------------

listener::listener(asio::io_context& accept_ctx, io_pool& pool,
                   const tcp::endpoint& where, accept_fn on_accept)
    : acceptor_(accept_ctx), pool_(pool), on_accept_(std::move(on_accept)) {
  acceptor_.open(where.protocol());
  acceptor_.set_option(tcp::acceptor::reuse_address(true));
  acceptor_.bind(where);
  acceptor_.listen(asio::socket_base::max_listen_connections);
}

void listener::start() {
  accept_next();
}

void listener::stop() {
  asio::post(acceptor_.get_executor(), [self = shared_from_this()] {
    boost::system::error_code ec;
    self->acceptor_.close(ec);
  });
}

uint16_t listener::port() const {
  return acceptor_.local_endpoint().port();
}

void listener::accept_next() {
  acceptor_.async_accept(pool_.next(), [self = shared_from_this()](
                                           const boost::system::error_code& ec,
                                           tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !self->acceptor_.is_open())
      return;
    if (ec) {
      // Out of descriptors or a transient error: pause briefly instead of
      // spinning on a listener that cannot accept right now.
      auto timer = std::make_shared<asio::steady_timer>(
          self->acceptor_.get_executor(), std::chrono::milliseconds(50));
      timer->async_wait([self, timer](const boost::system::error_code&) {
        self->accept_next();
      });
      return;
    }
    try {
      self->on_accept_(std::move(socket));
    } catch (...) {
      // The connection is dropped (its socket closes with it); the
      // listener goes on.
    }
    self->accept_next();
  });
}

} // namespace herd::net
