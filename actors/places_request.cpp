#include "actors/places_request.hpp"

#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "net/logging.hpp"
#include "net/metrics.hpp"
#include "net/places_json.hpp"

namespace herd {

whatsat_reply make_whatsat_reply(const std::string& at_line,
                                 const net::fetch_result& result, int bound) {
  whatsat_reply out;
  auto& summary = out.summary;
  std::string json;
  if (!result.ok) {
    summary = "upstream failed: " + result.error;
    json = places::unknown_error_json("Places request failed: " + result.error);
  } else if (result.http_status >= 500) {
    summary = "upstream answered HTTP " + std::to_string(result.http_status);
    json = places::unknown_error_json("Places upstream answered HTTP " +
                                      std::to_string(result.http_status));
  } else {
    // 2xx and 4xx bodies both carry Google's status: pass it through.
    std::string why;
    if (auto cut = places::cut_results(result.body, bound, why)) {
      json = std::move(*cut);
      out.usable = true;
      summary = "HTTP " + std::to_string(result.http_status) + ", " +
                std::to_string(result.body.size()) + " bytes";
    } else {
      summary = "unusable body (HTTP " + std::to_string(result.http_status) +
                "): " + why;
      json = places::unknown_error_json(
          "Places upstream sent an unusable body (HTTP " +
          std::to_string(result.http_status) + "): " + why);
    }
  }
  auto& reply = out.bytes;
  reply.reserve(at_line.size() + json.size() + 3);
  reply += at_line;
  reply += '\n';
  reply += json;
  reply += "\n\n";
  return out;
}

places_request_actor::behavior_type places_request(
    places_request_actor::stateful_pointer<places_request_state> self,
    client_session_actor session, uint64_t seq, std::string at_line,
    places_query query, std::shared_ptr<const node_context> node,
    std::string log_name) {
  auto& st = self->state;
  st.session = std::move(session);
  st.seq = seq;
  st.at_line = std::move(at_line);
  st.query = std::move(query);
  st.node = std::move(node);
  st.log_name = std::move(log_name);
  st.started = std::chrono::steady_clock::now();
  metrics::actor_spawned(metrics::actor_kind::places_request);
  metrics::add(metrics::counter::places_calls);
  // A request that ends without quitting (killed, or a handler that threw)
  // has not answered: its session still gets the reply it holds a slot for,
  // an UNKNOWN_ERROR saying so, or that connection's later replies would
  // wait behind the slot for ever.
  self->attach_functor([session = st.session, seq, at_line = st.at_line,
                        bound = st.query.bound](const caf::error& reason) {
    metrics::actor_quit(metrics::actor_kind::places_request);
    if (!reason)
      return; // quit() after its reply
    metrics::add(metrics::counter::places_errors);
    net::fetch_result failed;
    failed.error = "request ended: " + caf::to_string(reason);
    caf::anon_send(session, places_atom::value, seq,
                   make_whatsat_reply(at_line, failed, bound).bytes);
  });
  // The completion runs on an io thread: it only forwards to this actor.
  auto handle = caf::actor_cast<places_request_actor>(self);
  try {
    st.node->places->nearby_search(
        st.query.latitude, st.query.longitude, st.query.radius_m,
        [handle](net::fetch_result r) {
          caf::anon_send(handle, fetched_atom::value, std::move(r));
        });
  } catch (const std::exception& e) {
    // The request could not even be put together (out of memory; one
    // that cannot start completes through the callback): the client still
    // gets its reply, an UNKNOWN_ERROR saying so, and its later replies are
    // not held behind this one for ever.
    net::fetch_result failed;
    failed.error = std::string("cannot start: ") + e.what();
    caf::anon_send(handle, fetched_atom::value, std::move(failed));
  }
  return {
      [self](fetched_atom, net::fetch_result& result) {
        metrics::handler_scope scope(metrics::actor_kind::places_request, 0);
        auto& req = self->state;
        auto reply = make_whatsat_reply(req.at_line, result, req.query.bound);
        auto elapsed = std::chrono::steady_clock::now() - req.started;
        auto ms = std::chrono::duration<double, std::milli>(elapsed).count();
        metrics::record_places_latency(elapsed);
        if (!reply.usable) {
          metrics::add(metrics::counter::places_errors);
          // The client's own reply always says what failed; say it here too.
          HERD_LOG_WARN("{} places: {} after {:.1f} ms", req.log_name,
                        reply.summary, ms);
        }
        if (!result.ok && result.error.rfind("timeout", 0) == 0)
          metrics::add(metrics::counter::places_timeouts);
        if (req.node->log_messages) {
          if (reply.usable)
            HERD_LOG_INFO("{} places: {} in {:.1f} ms", req.log_name,
                          reply.summary, ms);
          HERD_LOG_INFO("{} out: {} + Places JSON ({} bytes)", req.log_name,
                        log::escaped{req.at_line},
                        reply.bytes.size() - req.at_line.size() - 3);
        }
        self->send(req.session, places_atom::value, req.seq,
                   std::move(reply.bytes));
        self->quit();
      },
  };
}

} // namespace herd
