// Every atom and message type of the node, in one place, with the project's
// CAF type ID block. Payloads are plain structs with a 0.17 `inspect`, so they
// print in logs and could cross a process boundary later.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/type_id.hpp>

#include "net/places_client.hpp"

namespace herd {

namespace net {
class connection;
} // namespace net

/// Lines read from one client connection in one read, without terminators.
/// One message per read, not per line: the hop costs more than the parse.
struct line_batch {
  std::string bytes;          ///< the lines back to back
  std::vector<uint32_t> ends; ///< end offset of each line in `bytes`
  int64_t received_ns = 0;    ///< CLOCK_REALTIME when the read completed
};

/// A client's newest location as one server first reported it.
struct location_update {
  std::string client_id;
  int64_t time_ns = 0; ///< the client's own time, the order of updates
  std::string at_line; ///< `AT ...` exactly as first produced, no newline
};

/// The registry's answer to a lookup.
struct lookup_result {
  bool found = false;
  std::string at_line;
  std::string latitude; ///< decimal text with sign, from the stored line
  std::string longitude;
};

/// What a places_request actor fetches: one Nearby Search call.
struct places_query {
  std::string latitude;
  std::string longitude;
  std::string radius_m;
  int bound = 0;
};

template<class Inspector>
typename Inspector::result_type inspect(Inspector& f, line_batch& x) {
  return f(caf::meta::type_name("line_batch"), x.bytes, x.ends, x.received_ns);
}

template<class Inspector>
typename Inspector::result_type inspect(Inspector& f, location_update& x) {
  return f(caf::meta::type_name("location_update"), x.client_id, x.time_ns,
           x.at_line);
}

template<class Inspector>
typename Inspector::result_type inspect(Inspector& f, lookup_result& x) {
  return f(caf::meta::type_name("lookup_result"), x.found, x.at_line,
           x.latitude, x.longitude);
}

template<class Inspector>
typename Inspector::result_type inspect(Inspector& f, places_query& x) {
  return f(caf::meta::type_name("places_query"), x.latitude, x.longitude,
           x.radius_m, x.bound);
}

} // namespace herd

// Local-only payloads: results of asynchronous I/O handed to the owning actor.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(herd::net::fetch_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<herd::net::connection>)

CAF_BEGIN_TYPE_ID_BLOCK(herd, caf::first_custom_type_id)

CAF_ADD_TYPE_ID(herd, (herd::line_batch))
CAF_ADD_TYPE_ID(herd, (herd::location_update))
CAF_ADD_TYPE_ID(herd, (herd::lookup_result))
CAF_ADD_TYPE_ID(herd, (herd::places_query))
CAF_ADD_TYPE_ID(herd, (herd::net::fetch_result))

// Atoms: at most 10 characters each (CAF 0.17).
CAF_ADD_ATOM(herd, herd, lines_atom, "lines")
CAF_ADD_ATOM(herd, herd, eof_atom, "eof")
CAF_ADD_ATOM(herd, herd, closed_atom, "closed")
CAF_ADD_ATOM(herd, herd, update_atom, "update")
CAF_ADD_ATOM(herd, herd, lookup_atom, "lookup")
CAF_ADD_ATOM(herd, herd, fetched_atom, "fetched")
CAF_ADD_ATOM(herd, herd, places_atom, "places")
CAF_ADD_ATOM(herd, herd, peers_atom, "peers")
CAF_ADD_ATOM(herd, herd, size_atom, "size")
CAF_ADD_ATOM(herd, herd, flood_atom, "flood")
CAF_ADD_ATOM(herd, herd, digest_atom, "digest")
CAF_ADD_ATOM(herd, herd, records_atom, "records")
CAF_ADD_ATOM(herd, herd, connected_atom, "connected")
CAF_ADD_ATOM(herd, herd, failed_atom, "failed")
CAF_ADD_ATOM(herd, herd, retry_atom, "retry")
CAF_ADD_ATOM(herd, herd, timeout_atom, "timeout")
CAF_ADD_ATOM(herd, herd, status_atom, "status")
CAF_ADD_ATOM(herd, herd, tick_atom, "tick")
CAF_ADD_ATOM(herd, herd, drain_atom, "drain")
CAF_ADD_ATOM(herd, herd, wake_atom, "wake")

CAF_END_TYPE_ID_BLOCK(herd)
