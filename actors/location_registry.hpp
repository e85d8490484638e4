// The location registry: the single owner of every client's newest record
// (or of one shard of the client IDs), the source of floods to neighbours,
// and the keeper of the catch-up digests.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/unordered/unordered_flat_map.hpp>

#include "actors/interfaces.hpp"

namespace herd {

/// Sessions' updates on their way to a registry shard: a lock-free stack of
/// batches that the shard takes whole, in place of one actor message per
/// batch. At one IAMAT per read, a message per batch (a mailbox element,
/// the actor's turn, the handler dispatch) cost more than storing the
/// update; through the inbox, the batches that sessions hand over while the
/// shard waits for its turn cost it one message, a wake-up, between them. A
/// batch is in the inbox before its session writes the replies that acknowledge
/// it, and the shard takes the inbox before it handles any message, so a lookup
/// (or a drain, a digest, ...) that anyone sends after seeing an
/// acknowledgement sees the update: the same guarantee a message ahead of it in
/// the mailbox gave.
class update_inbox {
 public:
  update_inbox() = default;
  update_inbox(const update_inbox&) = delete;
  update_inbox& operator=(const update_inbox&) = delete;
  ~update_inbox();

  /// Adds a batch from `origin` (empty for local clients). True when the
  /// inbox was empty: then the caller wakes the shard (wake_atom), which
  /// takes this batch and whatever follows it before the wake-up.
  bool push(std::string origin, std::vector<location_update> updates);

  /// Calls f(origin, updates) for every batch, each sender's in the order
  /// it pushed them; returns how many there were.
  template<class F> size_t take(F f) {
    node* n = head_.exchange(nullptr, std::memory_order_acquire);
    node* fifo = nullptr;
    while (n != nullptr) { // the stack holds the newest first
      node* next = n->next;
      n->next = fifo;
      fifo = n;
      n = next;
    }
    struct rest { // frees what is left if f throws
      node* first;
      ~rest() {
        while (first != nullptr)
          delete std::exchange(first, first->next);
      }
    } left{fifo};
    size_t count = 0;
    while (left.first != nullptr) {
      std::unique_ptr<node> taken(std::exchange(left.first, left.first->next));
      ++count;
      f(taken->origin, taken->updates);
    }
    return count;
  }

 private:
  struct node {
    node* next = nullptr;
    std::string origin;
    std::vector<location_update> updates;
  };
  std::atomic<node*> head_{nullptr};
};

/// What the sessions share with a registry shard: its inbox and its backlog.
/// The shard sets `busy` while more than `limit` messages and inbox batches
/// wait for it and clears it below half of that; it writes the flag only
/// when it changes, so reading it on every batch is cheap. A session that
/// hands the shard updates while it is busy holds its replies (and so, past
/// max_pending_lines, stops reading) until the shard has handled them: the
/// backlog stays bounded however fast clients send.
struct registry_backlog {
  explicit registry_backlog(uint32_t max_waiting) : limit(max_waiting) {}
  const uint32_t limit; ///< 0: never busy
  std::atomic<bool> busy{false};
  update_inbox inbox;
};

struct location_registry_state {
  struct record {
    int64_t time_ns = 0;
    uint64_t client_hash = 0; ///< peer::client_hash of the ID
    std::string at_line;
  };

  /// Open addressing with power-of-two tables: a store is one probe of a
  /// metadata group, not a walk of a bucket's nodes with a division per
  /// node. Records move when the table grows: hold no pointer across a
  /// store.
  boost::unordered_flat_map<std::string, record> clients;
  /// XOR of peer::record_hash over the records of each bucket.
  std::vector<uint64_t> digests;
  std::vector<std::pair<std::string, peer_link_actor>> links;
  std::shared_ptr<registry_backlog> backlog; ///< may be null (tests)

  location_registry_state();

  /// Updates `backlog` from the number of messages waiting.
  void note_mailbox(size_t waiting);

  /// Stores `u` if it is strictly newer than what is held; returns the
  /// stored record, or nullptr when `u` was stale.
  const record* store(location_update& u);

  static inline const char* name = "location_registry";
};

location_registry_actor::behavior_type location_registry(
    location_registry_actor::stateful_pointer<location_registry_state> self,
    std::shared_ptr<registry_backlog> backlog);

} // namespace herd
