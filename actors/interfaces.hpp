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

/// One per configured neighbour: keeps an outbound connection to it (dialled
/// again at once when it drops, then every 250 ms), authenticates, runs the
/// catch-up exchange, and writes the updates the registry floods to it.
using peer_link_actor = caf::typed_actor<
    // AT lines to send to the neighbour (dropped while the link is down: the
    // catch-up after reconnecting carries them).
    caf::reacts_to<flood_atom, std::vector<std::string>>,
    // The outbound connection of dial attempt N is up.
    caf::reacts_to<connected_atom, uint64_t, std::shared_ptr<net::connection>>,
    // Dial attempt N failed (reason for the log).
    caf::reacts_to<failed_atom, uint64_t, std::string>,
    // Lines read on the connection of attempt N.
    caf::reacts_to<lines_atom, uint64_t, line_batch>,
    // The connection of attempt N is gone.
    caf::reacts_to<closed_atom, uint64_t, std::string>,
    // Time to dial again (attempt N scheduled it).
    caf::reacts_to<retry_atom, uint64_t>,
    // The handshake of attempt N took too long.
    caf::reacts_to<timeout_atom, uint64_t>,
    // The link's state: "down", "connecting", "handshake", "syncing", "up".
    caf::replies_to<status_atom>::with<std::string>>;

/// Owns the newest location of every client (or of one shard of the client
/// IDs). Updates and lookups are serialized by its mailbox: that is what
/// orders an IAMAT before a later WHATSAT.
using location_registry_actor = caf::typed_actor<
    // Stores each update whose client time is strictly newer than the stored
    // one; `origin` is the neighbour it came from, empty for a local client.
    caf::reacts_to<update_atom, std::string, std::vector<location_update>>,
    // Takes the shard's update inbox (see update_inbox): sent by the session
    // whose batch found the inbox empty. Every other message takes it too.
    caf::reacts_to<wake_atom>,
    // Looks up a client's stored AT line and location.
    caf::replies_to<lookup_atom, std::string>::with<lookup_result>,
    // Number of clients stored (tests and metrics).
    caf::replies_to<size_atom>::with<uint64_t>,
    // Answered once everything queued before it is handled: a session that
    // holds its replies while the registry is behind waits for this. The
    // answer is the mailbox size then.
    caf::replies_to<drain_atom>::with<uint64_t>,
    // The neighbours to flood newer updates to, by name.
    caf::reacts_to<peers_atom, std::vector<std::string>,
                   std::vector<peer_link_actor>>,
    // The catch-up digests at full resolution (peer::max_buckets).
    caf::replies_to<digest_atom>::with<std::vector<uint64_t>>,
    // The AT lines of every record in these buckets (at `buckets` resolution).
    caf::replies_to<records_atom, uint32_t,
                    std::vector<uint32_t>>::with<std::vector<std::string>>>;

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
