// The metrics actor: every interval it sums the per-thread counters, asks
// each peer link for its state, and logs one JSON line.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "actors/interfaces.hpp"
#include "net/metrics.hpp"

namespace herd {

struct metrics_state {
  std::string server;
  std::chrono::seconds interval{10};
  std::vector<std::string> peer_names;
  metrics::snapshot last;
  std::chrono::steady_clock::time_point last_time;

  static inline const char* name = "metrics";
};

using metrics_actor = caf::typed_actor<
    // Time to log (scheduled by the actor itself).
    caf::reacts_to<tick_atom>,
    // The current metrics line, on demand (tests, admin).
    caf::replies_to<caf::get_atom>::with<std::string>>;

metrics_actor::behavior_type
metrics_reporter(metrics_actor::stateful_pointer<metrics_state> self,
                 std::string server, std::chrono::seconds interval,
                 std::vector<std::string> peer_names);

/// The state of each of the first `peers` links, from the gauges.
std::vector<std::string> link_states(size_t peers);

/// The metrics line for `now` (cumulative counters; latency quantiles over
/// `since`) with the given peer link states.
std::string format_metrics(const std::string& server,
                           const metrics::snapshot& now,
                           const metrics::snapshot& since, double interval_s,
                           const std::vector<std::string>& peer_names,
                           const std::vector<std::string>& peer_states);

/// The same numbers in Prometheus text format.
std::string format_prometheus(const std::string& server,
                              const metrics::snapshot& now,
                              const std::vector<std::string>& peer_names,
                              const std::vector<std::string>& peer_states);

} // namespace herd
