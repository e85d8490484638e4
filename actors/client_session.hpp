// The client session: one actor per client connection.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "actors/interfaces.hpp"
#include "actors/node_context.hpp"
#include "net/logging.hpp"
#include "net/tcp_server.hpp"

namespace herd {

/// A reply that must wait for the ones before it (a WHATSAT in flight, or
/// anything behind one).
struct reply_slot {
  bool ready = false;
  std::string bytes;
};

/// FIFO of reply slots. Unlike std::deque it allocates nothing until used,
/// which matters for thousands of idle connections.
class slot_queue {
 public:
  bool empty() const noexcept { return head_ == slots_.size(); }
  size_t size() const noexcept { return slots_.size() - head_; }
  /// Slots the storage holds, popped ones included (tests).
  size_t capacity() const noexcept { return slots_.capacity(); }
  reply_slot& operator[](size_t i) { return slots_[head_ + i]; }
  reply_slot& front() { return slots_[head_]; }
  void push_back(reply_slot s) { slots_.push_back(std::move(s)); }
  void pop_front() {
    slots_[head_] = {}; // release the reply's bytes now
    if (++head_ == slots_.size()) {
      slots_.clear();
      head_ = 0;
      if (slots_.capacity() > 64)
        slots_.shrink_to_fit();
    } else if (head_ >= 64 && head_ * 2 >= slots_.size()) {
      // A client that always keeps a WHATSAT in flight never drains the
      // queue: drop the popped prefix so memory follows what is pending.
      slots_.erase(slots_.begin(),
                   slots_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }

 private:
  std::vector<reply_slot> slots_;
  size_t head_ = 0;
};

/// What a session shares with its connection's reader for the IAMAT fast
/// path. The reader counts the line batches (and the EOF) it sends the
/// session; the session publishes how many it has finished with, but only
/// while it has nothing in flight: no reply waiting or held, nothing
/// unwritten, a client connection past its first line. While the two counts
/// match, the session is idle and will stay so until the reader sends it
/// something, so the reader may answer a batch of IAMATs itself, on the
/// thread that read it (see answer_inline in client_session.cpp). The release
/// store and the acquire load order everything the session wrote before it
/// went idle ahead of what the reader writes, and the reader's own message
/// to the session orders what it wrote ahead of the session's next turn.
struct session_handoff {
  std::atomic<uint64_t> settled{0};
};

struct client_session_state {
  std::shared_ptr<net::connection> conn;
  std::shared_ptr<const node_context> node;
  std::string log_name; ///< "client#<id> <address>"
  /// The per-message lines' shorter name, "client#<id>" ("peer A->B" once
  /// a peer has authenticated): the address is in the line that opened the
  /// connection, and repeating it cost an eighth of the log's bytes.
  std::string msg_name;

  slot_queue waiting;         ///< replies held back, oldest first
  uint64_t first_waiting = 0; ///< sequence number of waiting.front()
  std::string out;            ///< ready replies not yet handed to conn
  uint32_t out_lines = 0;     ///< lines those replies answer
  /// Updates not yet sent to the registry, per shard. Sent before any
  /// reply that acknowledges them is written, and before any lookup.
  std::vector<std::vector<location_update>> updates;
  /// Shards sent updates that the replies not yet written acknowledge, by
  /// shard index (sized on first use).
  std::vector<bool> fed_shards;
  /// Drain requests not yet answered: while any is, `out` is held (a busy
  /// registry shard is catching up with this session's updates).
  uint32_t drains_pending = 0;
  bool eof = false;
  /// Shared with the reader (fast path); null where there is none.
  std::shared_ptr<session_handoff> handoff;
  uint64_t batches_handled = 0; ///< line batches and EOF taken so far
  size_t batch_lines = 0;       ///< lines in the batch being handled
  int64_t batch_time = 0;       ///< its receive time; 0 outside a batch
  log::message_block msglog;    ///< per-message log lines not yet written

  // -- peer mode: a connection that opened with HERD-HELLO
  // ---------------------
  enum class mode { client, peer_handshake, peer, refused };
  mode now = mode::client;
  bool first_line = true;
  std::string peer_name;    ///< the dialling neighbour, once named
  std::string dialer_nonce; ///< from its HERD-HELLO
  std::string our_nonce;    ///< in our HERD-CHALLENGE

  client_session_state() = default;
  client_session_state(const client_session_state&) = delete;
  client_session_state& operator=(const client_session_state&) = delete;
  /// Counts the connection and the actor down (cheaper than attaching
  /// functors: an idle connection should cost as little as possible).
  ~client_session_state();

  static inline const char* name = "client_session";
};

client_session_actor::behavior_type client_session(
    client_session_actor::stateful_pointer<client_session_state> self,
    std::shared_ptr<net::connection> conn,
    std::shared_ptr<const node_context> node,
    std::shared_ptr<session_handoff> handoff);

/// The handler of a client connection: spawns its session on the first
/// bytes read and forwards everything to it.
std::shared_ptr<net::connection_handler>
make_session_forwarder(caf::actor_system& sys,
                       const std::shared_ptr<net::connection>& conn,
                       std::shared_ptr<const node_context> node);

} // namespace herd
