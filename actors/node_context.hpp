// What every session needs from its node, fixed once the node has started.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "actors/interfaces.hpp"
#include "actors/location_registry.hpp"
#include "net/places_client.hpp"
#include "net/tcp_server.hpp"

namespace herd {

struct node_context {
  std::string server_name;
  std::vector<location_registry_actor> registry_shards;
  /// Each shard's backlog flag, by shard index.
  std::vector<std::shared_ptr<registry_backlog>> registry_backlogs;
  std::shared_ptr<net::places_client> places;
  bool log_messages = true;
  /// IAMAT batches of an idle session answered by its reader (the session
  /// and session_handoff in client_session.hpp).
  bool iamat_fast_path = true;
  /// The herd's shared secret; empty when peers are unauthenticated. Never
  /// logged, never sent: only MACs over it travel.
  std::string peer_secret;
  /// Servers allowed to open a peer connection to this one.
  std::vector<std::string> neighbours;
  net::io_pool* io = nullptr;
  net::connection_limits limits;
  /// Output room of an authenticated peer connection (catch-up batches).
  uint32_t peer_output_limit = 64u << 20;
  /// Line limit of a peer connection: a SYNC line carries up to 4096
  /// digests of 17 bytes, a SYNC-END up to 4096 bucket numbers.
  static constexpr uint32_t peer_line_limit = 1u << 20;

  /// Client and inbound peer connections now open (sessions alive).
  mutable std::atomic<uint32_t> open_connections{0};

  bool is_neighbour(std::string_view name) const {
    for (auto& n : neighbours)
      if (n == name)
        return true;
    return false;
  }

  /// The shard that owns `client_id`: every message about one client goes
  /// through one mailbox, which is what keeps its order explicit.
  const location_registry_actor& shard_for(std::string_view client_id) const {
    if (registry_shards.size() == 1)
      return registry_shards.front();
    return registry_shards[std::hash<std::string_view>{}(client_id) %
                           registry_shards.size()];
  }

  size_t shard_index(std::string_view client_id) const {
    if (registry_shards.size() == 1)
      return 0;
    return std::hash<std::string_view>{}(client_id) % registry_shards.size();
  }
};

} // namespace herd
