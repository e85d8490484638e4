// The location registry: the single owner of every client's newest record
// (or of one shard of the client IDs), the source of floods to neighbours,
// and the keeper of the catch-up digests.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <boost/unordered/unordered_flat_map.hpp>

#include "actors/interfaces.hpp"

namespace herd {

/// A registry shard's backlog, as the sessions see it. The shard sets `busy`
/// while more than `limit` messages wait in its mailbox and clears it below
/// half of that; it writes the flag only when it changes, so reading it on
/// every batch is cheap. A session that hands the shard updates while it is
/// busy holds its replies (and so, past max_pending_lines, stops reading)
/// until the shard has handled them: the backlog stays bounded however fast
/// clients send.
struct registry_backlog {
  explicit registry_backlog(uint32_t max_waiting) : limit(max_waiting) {}
  const uint32_t limit; ///< 0: never busy
  std::atomic<bool> busy{false};
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
