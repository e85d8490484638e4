// The location registry: the single owner of every client's newest record
// (or of one shard of the client IDs), the source of floods to neighbours,
// and the keeper of the catch-up digests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <boost/unordered/unordered_flat_map.hpp>

#include "actors/interfaces.hpp"

namespace herd {

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

  location_registry_state();

  /// Stores `u` if it is strictly newer than what is held; returns the
  /// stored record, or nullptr when `u` was stale.
  const record* store(location_update& u);

  static inline const char* name = "location_registry";
};

location_registry_actor::behavior_type location_registry(
    location_registry_actor::stateful_pointer<location_registry_state> self);

} // namespace herd
