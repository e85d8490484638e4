#include "actors/metrics.hpp"

#include <memory>

#include <fmt/format.h>

#include "net/logging.hpp"

namespace herd {

namespace {

using metrics::actor_kind;
using metrics::counter;
using metrics::peer_counter;

template<class Enum> constexpr size_t idx(Enum e) {
  return static_cast<size_t>(e);
}

uint64_t open_connections(const metrics::snapshot& s) {
  auto accepted = s.get(counter::connections_accepted);
  auto closed = s.get(counter::connections_closed);
  return accepted > closed ? accepted - closed : 0;
}

} // namespace

std::string format_metrics(const std::string& server,
                           const metrics::snapshot& now,
                           const metrics::snapshot& since, double interval_s,
                           const std::vector<std::string>& peer_names,
                           const std::vector<std::string>& peer_states) {
  auto d = metrics::delta(now, since);
  fmt::memory_buffer out;
  auto it = std::back_inserter(out);
  fmt::format_to(it, R"({{"metrics":{{"server":"{}","interval_s":{:.1f},)",
                 server, interval_s);
  fmt::format_to(it,
                 R"("connections":{{"open":{},"accepted":{},"refused":{}}},)",
                 open_connections(now), now.get(counter::connections_accepted),
                 now.get(counter::connections_refused));
  fmt::format_to(it, R"("in":{{"IAMAT":{},"WHATSAT":{},"AT":{},"?":{}}},)",
                 now.get(counter::in_iamat), now.get(counter::in_whatsat),
                 now.get(counter::in_at), now.get(counter::in_invalid));
  fmt::format_to(it, R"("out":{{"AT":{},"WHATSAT":{},"?":{}}},)",
                 now.get(counter::out_at), now.get(counter::out_whatsat),
                 now.get(counter::out_invalid));
  auto in_now = now.get(counter::in_iamat) + now.get(counter::in_whatsat) +
                now.get(counter::in_at) + now.get(counter::in_invalid);
  auto in_delta = d.get(counter::in_iamat) + d.get(counter::in_whatsat) +
                  d.get(counter::in_at) + d.get(counter::in_invalid);
  (void)in_now;
  fmt::format_to(it, R"("in_per_s":{:.0f},"fast_path_batches":{},)",
                 interval_s > 0 ? static_cast<double>(in_delta) / interval_s
                                : 0.0,
                 now.get(counter::fast_path_batches));
  fmt::format_to(
      it, R"("updates":{{"stored":{},"stale":{},"held":{}}},"peers":{{)",
      now.get(counter::updates_stored), now.get(counter::updates_stale),
      now.get(counter::updates_held));
  for (size_t i = 0; i < peer_names.size() && i < metrics::max_peers; ++i) {
    auto& p = now.peers[i];
    fmt::format_to(
        it,
        R"({}"{}":{{"state":"{}","floods_sent":{},"floods_dropped":{},)"
        R"("received":{},"stale":{},"catchups":{}}})",
        i == 0 ? "" : ",", peer_names[i],
        i < peer_states.size() ? peer_states[i] : "unknown",
        p[idx(peer_counter::floods_sent)], p[idx(peer_counter::floods_dropped)],
        p[idx(peer_counter::updates_received)],
        p[idx(peer_counter::updates_stale)], p[idx(peer_counter::catchups)]);
  }
  fmt::format_to(it,
                 R"(}},"places":{{"calls":{},"errors":{},"timeouts":{},)"
                 R"("in_flight":{},"waiting":{},"waited":{},)"
                 R"("p50_ms":{:.3f},"p99_ms":{:.3f}}},"actors":{{)",
                 now.get(counter::places_calls),
                 now.get(counter::places_errors),
                 now.get(counter::places_timeouts), now.places_in_flight,
                 now.places_waiting, now.places_waited,
                 metrics::snapshot::quantile_us(d.places_latency, 0.5) / 1000,
                 metrics::snapshot::quantile_us(d.places_latency, 0.99) / 1000);
  for (size_t k = 0; k < idx(actor_kind::count_); ++k) {
    auto& a = now.actors[k];
    auto& da = d.actors[k];
    fmt::format_to(it,
                   R"({}"{}":{{"alive":{},"messages":{},"max_mailbox":{},)"
                   R"("busy_ms":{:.1f}}})",
                   k == 0 ? "" : ",",
                   metrics::to_string(static_cast<actor_kind>(k)),
                   a.spawned > a.quit ? a.spawned - a.quit : 0, a.messages,
                   a.max_mailbox, static_cast<double>(da.busy_ns) / 1e6);
  }
  fmt::format_to(it, "}}}}}}");
  return fmt::to_string(out);
}

std::string format_prometheus(const std::string& server,
                              const metrics::snapshot& now,
                              const std::vector<std::string>& peer_names,
                              const std::vector<std::string>& peer_states) {
  fmt::memory_buffer out;
  auto it = std::back_inserter(out);
  auto label = fmt::format(R"(server="{}")", server);
  fmt::format_to(it,
                 "# TYPE herd_connections_open gauge\n"
                 "herd_connections_open{{{}}} {}\n",
                 label, open_connections(now));
  for (size_t i = 0; i < idx(counter::count_); ++i) {
    auto name = metrics::to_string(static_cast<counter>(i));
    fmt::format_to(it, "# TYPE herd_{}_total counter\nherd_{}_total{{{}}} {}\n",
                   name, name, label, now.counters[i]);
  }
  for (size_t p = 0; p < peer_names.size() && p < metrics::max_peers; ++p) {
    for (size_t i = 0; i < idx(peer_counter::count_); ++i)
      fmt::format_to(it, "herd_peer_{}_total{{{},peer=\"{}\"}} {}\n",
                     metrics::to_string(static_cast<peer_counter>(i)), label,
                     peer_names[p], now.peers[p][i]);
    fmt::format_to(it, "herd_peer_up{{{},peer=\"{}\"}} {}\n", label,
                   peer_names[p],
                   p < peer_states.size() && peer_states[p] == "up" ? 1 : 0);
  }
  for (size_t k = 0; k < idx(actor_kind::count_); ++k) {
    auto& a = now.actors[k];
    auto kind = metrics::to_string(static_cast<actor_kind>(k));
    fmt::format_to(it,
                   "herd_actors_alive{{{},kind=\"{}\"}} {}\n"
                   "herd_actor_messages_total{{{},kind=\"{}\"}} {}\n"
                   "herd_actor_busy_seconds_total{{{},kind=\"{}\"}} {:.6f}\n"
                   "herd_actor_max_mailbox{{{},kind=\"{}\"}} {}\n",
                   label, kind, a.spawned > a.quit ? a.spawned - a.quit : 0,
                   label, kind, a.messages, label, kind,
                   static_cast<double>(a.busy_ns) / 1e9, label, kind,
                   a.max_mailbox);
  }
  uint64_t cumulative = 0;
  fmt::format_to(it,
                 "# TYPE herd_places_in_flight gauge\n"
                 "herd_places_in_flight{{{}}} {}\n"
                 "# TYPE herd_places_waiting gauge\n"
                 "herd_places_waiting{{{}}} {}\n"
                 "# TYPE herd_places_waited_total counter\n"
                 "herd_places_waited_total{{{}}} {}\n",
                 label, now.places_in_flight, label, now.places_waiting, label,
                 now.places_waited);
  fmt::format_to(it, "# TYPE herd_places_latency_seconds histogram\n");
  for (size_t i = 0; i < metrics::histogram::buckets; ++i) {
    if (now.places_latency[i] == 0)
      continue;
    cumulative += now.places_latency[i];
    fmt::format_to(
        it, "herd_places_latency_seconds_bucket{{{},le=\"{}\"}} {}\n", label,
        static_cast<double>(metrics::histogram::upper_bound_us(i)) / 1e6,
        cumulative);
  }
  fmt::format_to(it,
                 "herd_places_latency_seconds_bucket{{{},le=\"+Inf\"}} {}\n"
                 "herd_places_latency_seconds_count{{{}}} {}\n",
                 label, cumulative, label, cumulative);
  return fmt::to_string(out);
}

std::vector<std::string> link_states(size_t peers) {
  std::vector<std::string> states;
  for (size_t i = 0; i < peers; ++i)
    states.emplace_back(metrics::to_string(metrics::get_link_state(i)));
  return states;
}

metrics_actor::behavior_type
metrics_reporter(metrics_actor::stateful_pointer<metrics_state> self,
                 std::string server, std::chrono::seconds interval,
                 std::vector<std::string> peer_names) {
  auto& init = self->state;
  init.server = std::move(server);
  init.interval = interval;
  init.peer_names = std::move(peer_names);
  init.last = metrics::take_snapshot();
  init.last_time = std::chrono::steady_clock::now();
  metrics::actor_spawned(metrics::actor_kind::metrics);
  self->attach_functor(
      [] { metrics::actor_quit(metrics::actor_kind::metrics); });
  if (interval.count() > 0)
    self->delayed_send(self, interval, tick_atom::value);
  return {
      [self](tick_atom) {
        metrics::handler_scope scope(metrics::actor_kind::metrics,
                                     self->mailbox().size());
        auto& st = self->state;
        self->delayed_send(self, st.interval, tick_atom::value);
        auto now = metrics::take_snapshot();
        auto t = std::chrono::steady_clock::now();
        double secs = std::chrono::duration<double>(t - st.last_time).count();
        HERD_LOG_INFO("{}", format_metrics(st.server, now, st.last, secs,
                                           st.peer_names,
                                           link_states(st.peer_names.size())));
        st.last = now;
        st.last_time = t;
      },
      [self](caf::get_atom) -> std::string {
        auto& st = self->state;
        return format_prometheus(st.server, metrics::take_snapshot(),
                                 st.peer_names,
                                 link_states(st.peer_names.size()));
      },
  };
}

} // namespace herd
