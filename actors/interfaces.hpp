// Every typed actor interface of the node, one comment per handler.
#pragma once

#include <string>
#include <vector>

#include <caf/replies_to.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/atoms.hpp"

namespace herd {

/// Owns the newest location of every client (or of one shard of the client
/// IDs). Updates and lookups are serialized by its mailbox: that is what
/// orders an IAMAT before a later WHATSAT.
using location_registry_actor = caf::typed_actor<
  // Stores each update whose client time is strictly newer than the stored
  // one; `origin` is the neighbour it came from, empty for a local client.
  caf::reacts_to<update_atom, std::string, std::vector<location_update>>,
  // Looks up a client's stored AT line and location.
  caf::replies_to<lookup_atom, std::string>::with<lookup_result>,
  // Number of clients stored (tests and metrics).
  caf::replies_to<size_atom>::with<uint64_t>>;

/// One per client connection: parses its lines, keeps its replies in request
/// order, and writes them back through the connection.
using client_session_actor = caf::typed_actor<
  // Lines read from the connection in one read.
  caf::reacts_to<lines_atom, line_batch>,
  // The client half-closed: finish pending replies, then close.
  caf::reacts_to<eof_atom>,
  // The connection is gone (reason for the log): quit.
  caf::reacts_to<closed_atom, std::string>,
  // The complete reply for the WHATSAT with this sequence number.
  caf::reacts_to<places_atom, uint64_t, std::string>>;

/// One per upstream Places call: fetches, cuts the body to the bound, hands
/// the whole WHATSAT reply to its session, and quits.
using places_request_actor = caf::typed_actor<
  // The HTTP client's result, forwarded from an io thread.
  caf::reacts_to<fetched_atom, net::fetch_result>>;

} // namespace herd
