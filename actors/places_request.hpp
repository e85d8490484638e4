// One upstream Places call, as an actor of its own: the HTTP exchange runs on
// an io thread, the body is cut to the bound here on the scheduler, and the
// finished WHATSAT reply goes to the session that asked.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "actors/interfaces.hpp"
#include "actors/node_context.hpp"

namespace herd {

struct places_request_state {
  client_session_actor session;
  uint64_t seq = 0;
  std::string at_line;
  places_query query;
  std::shared_ptr<const node_context> node;
  std::string log_name;
  std::chrono::steady_clock::time_point started;

  static inline const char* name = "places_request";
};

places_request_actor::behavior_type places_request(
    places_request_actor::stateful_pointer<places_request_state> self,
    client_session_actor session, uint64_t seq, std::string at_line,
    places_query query, std::shared_ptr<const node_context> node,
    std::string log_name);

/// A WHATSAT reply and how upstream did, for the log and the metrics.
struct whatsat_reply {
  std::string bytes;   ///< AT line, JSON, empty line
  bool usable = false; ///< upstream's own body went out (cut to the bound)
  std::string summary; ///< one phrase for the log
};

/// The whole WHATSAT reply for an upstream result: the AT line, the body cut
/// to `bound` (or a legacy-shaped UNKNOWN_ERROR saying what failed), and the
/// empty line.
whatsat_reply make_whatsat_reply(const std::string& at_line,
                                 const net::fetch_result& result, int bound);

} // namespace herd
