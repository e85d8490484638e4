// The client session: one actor per client connection.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "actors/interfaces.hpp"
#include "actors/node_context.hpp"
#include "net/tcp_server.hpp"

namespace herd {

struct client_session_state {
  /// A reply that must wait for the ones before it (a WHATSAT in flight, or
  /// anything behind one).
  struct slot {
    bool ready = false;
    std::string bytes;
  };

  std::shared_ptr<net::connection> conn;
  std::shared_ptr<const node_context> node;
  std::string log_name; ///< "client#<id> <address>"

  std::deque<slot> waiting; ///< replies held back, oldest first
  uint64_t first_waiting = 0; ///< sequence number of waiting.front()
  std::string out;            ///< ready replies not yet handed to conn
  uint32_t out_lines = 0;     ///< lines those replies answer
  /// Updates not yet sent to the registry, per shard. Sent before any
  /// reply that acknowledges them is written, and before any lookup.
  std::vector<std::vector<location_update>> updates;
  bool eof = false;

  // -- peer mode: a connection that opened with HERD-HELLO ---------------------
  enum class mode { client, peer_handshake, peer, refused };
  mode now = mode::client;
  bool first_line = true;
  std::string peer_name;    ///< the dialling neighbour, once named
  std::string dialer_nonce; ///< from its HERD-HELLO
  std::string our_nonce;    ///< in our HERD-CHALLENGE

  static inline const char* name = "client_session";
};

client_session_actor::behavior_type
client_session(client_session_actor::stateful_pointer<client_session_state> self,
               std::shared_ptr<net::connection> conn,
               std::shared_ptr<const node_context> node);

/// Forwards what a connection reads to its session actor.
std::shared_ptr<net::connection_handler>
make_session_forwarder(client_session_actor session);

} // namespace herd
