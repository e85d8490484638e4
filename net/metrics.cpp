#include "net/metrics.hpp"

#include <memory>
#include <mutex>

namespace herd::metrics {

namespace {

struct block_list {
  std::mutex mtx;
  std::vector<block*> blocks;
};

block_list& all_blocks() {
  static auto* list = new block_list; // outlives every thread
  return *list;
}

block* register_block() {
  auto* b = new block; // never freed: a snapshot may read it after its thread
  auto& list = all_blocks();
  std::lock_guard<std::mutex> guard(list.mtx);
  list.blocks.push_back(b);
  return b;
}

} // namespace

const char* to_string(counter c) {
  switch (c) {
  case counter::connections_accepted:
    return "connections_accepted";
  case counter::connections_closed:
    return "connections_closed";
  case counter::connections_refused:
    return "connections_refused";
  case counter::in_iamat:
    return "in_iamat";
  case counter::in_whatsat:
    return "in_whatsat";
  case counter::in_at:
    return "in_at";
  case counter::in_invalid:
    return "in_invalid";
  case counter::out_at:
    return "out_at";
  case counter::out_whatsat:
    return "out_whatsat";
  case counter::out_invalid:
    return "out_invalid";
  case counter::updates_stored:
    return "updates_stored";
  case counter::updates_stale:
    return "updates_stale";
  case counter::updates_held:
    return "updates_held";
  case counter::fast_path_batches:
    return "fast_path_batches";
  case counter::places_calls:
    return "places_calls";
  case counter::places_errors:
    return "places_errors";
  case counter::places_timeouts:
    return "places_timeouts";
  case counter::count_:
    break;
  }
  return "unknown";
}

const char* to_string(peer_counter c) {
  switch (c) {
  case peer_counter::floods_sent:
    return "floods_sent";
  case peer_counter::floods_dropped:
    return "floods_dropped";
  case peer_counter::updates_received:
    return "updates_received";
  case peer_counter::updates_stale:
    return "updates_stale";
  case peer_counter::catchups:
    return "catchups";
  case peer_counter::count_:
    break;
  }
  return "unknown";
}

const char* to_string(actor_kind k) {
  switch (k) {
  case actor_kind::client_session:
    return "client_session";
  case actor_kind::location_registry:
    return "location_registry";
  case actor_kind::places_request:
    return "places_request";
  case actor_kind::peer_link:
    return "peer_link";
  case actor_kind::metrics:
    return "metrics";
  case actor_kind::count_:
    break;
  }
  return "unknown";
}

namespace {

std::array<std::atomic<uint8_t>, max_peers> link_states{};

} // namespace

const char* to_string(link_state s) {
  switch (s) {
  case link_state::down:
    return "down";
  case link_state::connecting:
    return "connecting";
  case link_state::handshake:
    return "handshake";
  case link_state::syncing:
    return "syncing";
  case link_state::up:
    return "up";
  }
  return "unknown";
}

void set_link_state(size_t peer, link_state s) noexcept {
  if (peer < max_peers)
    link_states[peer].store(static_cast<uint8_t>(s), std::memory_order_relaxed);
}

link_state get_link_state(size_t peer) noexcept {
  if (peer >= max_peers)
    return link_state::down;
  return static_cast<link_state>(
      link_states[peer].load(std::memory_order_relaxed));
}

size_t histogram::bucket_of(uint64_t us) noexcept {
  if (us < 8)
    return static_cast<size_t>(us);
  int log2 = 63 - __builtin_clzll(us); // >= 3
  auto sub = static_cast<size_t>((us >> (log2 - 3)) & 7);
  size_t b = static_cast<size_t>(log2 - 2) * 8 + sub;
  return b < buckets ? b : buckets - 1;
}

uint64_t histogram::upper_bound_us(size_t bucket) noexcept {
  if (bucket < 8)
    return bucket + 1;
  size_t log2 = bucket / 8 + 2;
  uint64_t sub = bucket % 8;
  return ((8 + sub + 1) << (log2 - 3));
}

block& local() noexcept {
  thread_local block* b = register_block();
  return *b;
}

void record_places_latency(std::chrono::nanoseconds d) noexcept {
  auto us = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(d).count());
  bump(local().places_latency.counts[histogram::bucket_of(us)]);
}

double snapshot::quantile_us(const std::array<uint64_t, histogram::buckets>& h,
                             double q) {
  uint64_t total = 0;
  for (auto c : h)
    total += c;
  if (total == 0)
    return 0;
  auto rank = static_cast<uint64_t>(q * static_cast<double>(total - 1)) + 1;
  uint64_t seen = 0;
  for (size_t i = 0; i < h.size(); ++i) {
    seen += h[i];
    if (seen >= rank)
      return static_cast<double>(histogram::upper_bound_us(i));
  }
  return static_cast<double>(histogram::upper_bound_us(h.size() - 1));
}

namespace {
std::function<places_load()>& places_source() {
  static std::function<places_load()> source;
  return source;
}

void sum_blocks(snapshot& s) {
  auto& list = all_blocks();
  std::lock_guard<std::mutex> guard(list.mtx);
  auto rd = [](const std::atomic<uint64_t>& x) {
    return x.load(std::memory_order_relaxed);
  };
  for (auto* b : list.blocks) {
    for (size_t i = 0; i < s.counters.size(); ++i)
      s.counters[i] += rd(b->counters[i]);
    for (size_t p = 0; p < max_peers; ++p)
      for (size_t i = 0; i < s.peers[p].size(); ++i)
        s.peers[p][i] += rd(b->peers[p][i]);
    for (size_t k = 0; k < s.actors.size(); ++k) {
      auto& a = b->actors[k];
      s.actors[k].spawned += rd(a.spawned);
      s.actors[k].quit += rd(a.quit);
      s.actors[k].messages += rd(a.messages);
      s.actors[k].busy_ns += rd(a.busy_ns);
      s.actors[k].max_mailbox =
          std::max(s.actors[k].max_mailbox, rd(a.max_mailbox));
    }
    for (size_t i = 0; i < histogram::buckets; ++i)
      s.places_latency[i] += rd(b->places_latency.counts[i]);
  }
}

} // namespace

snapshot take_snapshot() {
  snapshot s;
  sum_blocks(s);
  // Outside the blocks' lock: the source may take locks of its own.
  if (places_source()) {
    auto load = places_source()();
    s.places_in_flight = load.in_flight;
    s.places_waiting = load.waiting;
    s.places_waited = load.waited;
  }
  return s;
}

void set_places_source(std::function<places_load()> source) {
  places_source() = std::move(source);
}

snapshot delta(const snapshot& after, const snapshot& before) {
  snapshot d = after;
  for (size_t i = 0; i < d.counters.size(); ++i)
    d.counters[i] -= before.counters[i];
  for (size_t p = 0; p < max_peers; ++p)
    for (size_t i = 0; i < d.peers[p].size(); ++i)
      d.peers[p][i] -= before.peers[p][i];
  for (size_t k = 0; k < d.actors.size(); ++k) {
    d.actors[k].messages -= before.actors[k].messages;
    d.actors[k].busy_ns -= before.actors[k].busy_ns;
  }
  for (size_t i = 0; i < histogram::buckets; ++i)
    d.places_latency[i] -= before.places_latency[i];
  return d;
}

} // namespace herd::metrics
