// The peer link: this server's outbound connection to one neighbour.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "actors/interfaces.hpp"
#include "actors/node_context.hpp"
#include "config/config.hpp"

namespace herd {

struct peer_link_state {
  enum class phase { down, connecting, handshake, syncing, up };

  std::shared_ptr<const node_context> node;
  std::string neighbour;
  size_t index = 0; ///< the neighbour's position, for per-peer metrics
  server_address address;
  std::string log_name; ///< "peer_link Clark->Bona"

  phase now = phase::down;
  uint64_t attempt = 0; ///< current dial attempt; older messages are stale
  std::shared_ptr<net::connection> conn;
  std::string nonce;        ///< ours, for this attempt's handshake
  bool awaiting_ok = false; ///< HERD-AUTH sent, HERD-OK not yet read
  uint32_t failures = 0;    ///< consecutive failed attempts (log once)
  std::chrono::steady_clock::time_point last_immediate; ///< last at-once retry

  // -- catch-up accounting, for the log
  // ----------------------------------------
  std::chrono::steady_clock::time_point sync_started;
  uint64_t sync_bytes_out = 0;
  uint64_t sync_bytes_in = 0;
  uint64_t sync_records_in = 0;

  static inline const char* name = "peer_link";
};

/// Dial retry spacing while the neighbour is down (the first retry after a
/// drop is immediate). Short on purpose: a restarted neighbour must get
/// updates within half a second, so no exponential back-off.
constexpr std::chrono::milliseconds peer_retry_interval{250};
/// Time allowed for connect plus handshake before the attempt is dropped.
constexpr std::chrono::milliseconds peer_handshake_timeout{2000};

peer_link_actor::behavior_type
peer_link(peer_link_actor::stateful_pointer<peer_link_state> self,
          std::shared_ptr<const node_context> node, std::string neighbour,
          size_t index, server_address address);

} // namespace herd
