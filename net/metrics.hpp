// Counters for the metrics line and /metrics, cheap enough for the hot path:
// every thread adds into its own block of relaxed atomics (a load and a
// store, no read-modify-write, no lock, no allocation), and a reader sums the
// blocks. Blocks are registered once per thread and never freed, so a
// snapshot may read a block whose thread has ended.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace herd::metrics {

enum class counter : uint16_t {
  connections_accepted,
  connections_closed,
  connections_refused,
  in_iamat,
  in_whatsat,
  in_at,       ///< AT lines from authenticated peers
  in_invalid,  ///< lines answered with "? "
  out_at,      ///< IAMAT replies
  out_whatsat, ///< WHATSAT replies (AT line + Places JSON)
  out_invalid,
  updates_stored,
  updates_stale,
  updates_held,      ///< reply batches held until a busy registry caught up
  fast_path_batches, ///< IAMAT batches answered without a session message
  places_calls,
  places_errors,   ///< no usable body: transport error, 5xx, not JSON
  places_timeouts, ///< subset of errors: the deadline passed
  count_
};

/// Per-neighbour counters, indexed by the neighbour's position in config.
enum class peer_counter : uint16_t {
  floods_sent,
  floods_dropped, ///< link down: left to the catch-up
  updates_received,
  updates_stale,
  catchups,
  count_
};

enum class actor_kind : uint16_t {
  client_session,
  location_registry,
  places_request,
  peer_link,
  metrics,
  count_
};

const char* to_string(counter c);
const char* to_string(peer_counter c);
const char* to_string(actor_kind k);

constexpr size_t max_peers = 64;

/// Latency histogram: log-linear buckets (8 per power of two) in µs.
struct histogram {
  static constexpr size_t buckets = 8 * 40;
  std::array<std::atomic<uint64_t>, buckets> counts{};

  static size_t bucket_of(uint64_t us) noexcept;
  static uint64_t upper_bound_us(size_t bucket) noexcept;
};

struct actor_stats {
  std::atomic<uint64_t> spawned{0};
  std::atomic<uint64_t> quit{0};
  std::atomic<uint64_t> messages{0};
  std::atomic<uint64_t> busy_ns{0};
  std::atomic<uint64_t> max_mailbox{0};
};

/// One thread's counters.
struct block {
  std::array<std::atomic<uint64_t>, static_cast<size_t>(counter::count_)>
      counters{};
  std::array<std::array<std::atomic<uint64_t>,
                        static_cast<size_t>(peer_counter::count_)>,
             max_peers>
      peers{};
  std::array<actor_stats, static_cast<size_t>(actor_kind::count_)> actors{};
  histogram places_latency;
};

/// This thread's block (registered on first use).
block& local() noexcept;

inline void bump(std::atomic<uint64_t>& x, uint64_t n = 1) noexcept {
  x.store(x.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

inline void add(counter c, uint64_t n = 1) noexcept {
  bump(local().counters[static_cast<size_t>(c)], n);
}

inline void add(size_t peer, peer_counter c, uint64_t n = 1) noexcept {
  if (peer < max_peers)
    bump(local().peers[peer][static_cast<size_t>(c)], n);
}

void record_places_latency(std::chrono::nanoseconds d) noexcept;

inline void actor_spawned(actor_kind k) noexcept {
  bump(local().actors[static_cast<size_t>(k)].spawned);
}
inline void actor_quit(actor_kind k) noexcept {
  bump(local().actors[static_cast<size_t>(k)].quit);
}

/// Handler time is measured on one message in this many of each actor kind
/// on each thread, and counted this many times over: two clock reads per
/// message were a tenth of an IAMAT's user time. Over a metrics interval
/// (thousands of messages) the estimate is close; a kind that handles
/// only a few messages has its first one timed.
inline constexpr uint64_t busy_sample_every = 8;

/// Adds one to `n` (this thread's) and returns what it was.
inline uint64_t count_one(std::atomic<uint64_t>& n) noexcept {
  auto seen = n.load(std::memory_order_relaxed);
  n.store(seen + 1, std::memory_order_relaxed);
  return seen;
}

/// Times the `seen`-th unit of some work into `stats`' busy time if it is
/// one of the sampled ones (see busy_sample_every), counted that many times
/// over. Use as a guard.
class busy_sample {
 public:
  busy_sample(actor_stats& stats, uint64_t seen) noexcept : stats_(stats) {
    if (seen % busy_sample_every == 0)
      start_ = std::chrono::steady_clock::now();
  }
  ~busy_sample() {
    if (start_ == std::chrono::steady_clock::time_point{})
      return;
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                  std::chrono::steady_clock::now() - start_)
                  .count();
    bump(stats_.busy_ns, static_cast<uint64_t>(ns) * busy_sample_every);
  }
  busy_sample(const busy_sample&) = delete;
  busy_sample& operator=(const busy_sample&) = delete;

 private:
  actor_stats& stats_;
  std::chrono::steady_clock::time_point start_{}; ///< unset: not sampled
};

/// Counts one handled message of an actor kind, samples its time (see
/// busy_sample_every), and keeps the largest mailbox seen. Use as a guard
/// at the top of a handler.
class handler_scope {
 public:
  handler_scope(actor_kind k, size_t mailbox) noexcept
      : stats_(local().actors[static_cast<size_t>(k)]),
        sample_(stats_, count_one(stats_.messages)) {
    mailbox_seen(mailbox);
  }
  /// Keeps `mailbox` as the largest seen if it is (a backlog learned
  /// inside the handler).
  void mailbox_seen(size_t mailbox) noexcept {
    if (mailbox > stats_.max_mailbox.load(std::memory_order_relaxed))
      stats_.max_mailbox.store(mailbox, std::memory_order_relaxed);
  }

 private:
  actor_stats& stats_;
  busy_sample sample_;
};

/// Counts one unit of counter `c` and samples its time, as handler_scope
/// does, into the busy time of actor kind `k`, without counting a message:
/// work done for an actor outside its handlers (the IAMAT fast path, for
/// client_session, counted in fast_path_batches).
class work_scope {
 public:
  work_scope(counter c, actor_kind k) noexcept
      : sample_(local().actors[static_cast<size_t>(k)],
                count_one(local().counters[static_cast<size_t>(c)])) {}

 private:
  busy_sample sample_;
};

/// A peer link's state as a process-wide gauge (written by its link only).
enum class link_state : uint8_t { down, connecting, handshake, syncing, up };
const char* to_string(link_state s);
void set_link_state(size_t peer, link_state s) noexcept;
link_state get_link_state(size_t peer) noexcept;

/// The sum over every thread's block, as plain numbers.
struct snapshot {
  std::array<uint64_t, static_cast<size_t>(counter::count_)> counters{};
  std::array<std::array<uint64_t, static_cast<size_t>(peer_counter::count_)>,
             max_peers>
      peers{};
  struct actor {
    uint64_t spawned = 0, quit = 0, messages = 0, busy_ns = 0, max_mailbox = 0;
  };
  std::array<actor, static_cast<size_t>(actor_kind::count_)> actors{};
  std::array<uint64_t, histogram::buckets> places_latency{};
  /// Places requests upstream now, waiting for a slot now, and that ever
  /// had to wait (from the places source, if one is set).
  uint64_t places_in_flight = 0, places_waiting = 0, places_waited = 0;

  uint64_t get(counter c) const { return counters[static_cast<size_t>(c)]; }
  /// The latency quantile q (0..1) of the histogram `h`, in µs.
  static double quantile_us(const std::array<uint64_t, histogram::buckets>& h,
                            double q);
};

snapshot take_snapshot();

/// Where take_snapshot() reads the Places gauges (the node's Places client);
/// set once at start, before any snapshot.
struct places_load {
  uint64_t in_flight = 0, waiting = 0, waited = 0;
};
void set_places_source(std::function<places_load()> source);

/// `after` minus `before`, counter by counter (maxima are kept as is).
snapshot delta(const snapshot& after, const snapshot& before);

} // namespace herd::metrics
