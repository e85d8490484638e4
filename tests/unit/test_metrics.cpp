#include <chrono>
#include <thread>

#include <catch2/catch.hpp>

#include "net/metrics.hpp"

using namespace herd;
using std::chrono::steady_clock;

namespace {

/// Handles `n` messages of `kind` on a thread of its own (so a block of
/// its own), the i-th taking at least work(i); returns the snapshot delta.
template<class Work>
metrics::snapshot::actor handle(metrics::actor_kind kind, uint64_t n,
                                Work work) {
  auto before = metrics::take_snapshot();
  std::thread([&] {
    for (uint64_t i = 0; i < n; ++i) {
      metrics::handler_scope scope(kind, i);
      auto until = steady_clock::now() + work(i);
      while (steady_clock::now() < until) {
      }
    }
  }).join();
  auto d = metrics::delta(metrics::take_snapshot(), before);
  return d.actors[static_cast<size_t>(kind)];
}

} // namespace

TEST_CASE("handler time is sampled on one message in busy_sample_every and "
          "counted that many times over") {
  using namespace std::chrono_literals;
  constexpr auto every = metrics::busy_sample_every;
  SECTION("a sampled message counts for the ones after it") {
    auto a = handle(metrics::actor_kind::peer_link, every,
                    [](uint64_t i) { return i == 0 ? 2ms : 0ms; });
    CHECK(a.messages == every);
    CHECK(a.busy_ns >= every * 2'000'000);
  }
  SECTION("the messages between samples are counted, not timed") {
    auto a = handle(metrics::actor_kind::metrics, every,
                    [](uint64_t i) { return i == 0 ? 0ms : 2ms; });
    CHECK(a.messages == every);
    CHECK(a.busy_ns < 2'000'000);
  }
  SECTION("the largest mailbox is kept") {
    auto a = handle(metrics::actor_kind::places_request, 3,
                    [](uint64_t) { return 0ms; });
    CHECK(a.messages == 3);
    CHECK(a.max_mailbox >= 2);
  }
}

TEST_CASE("work done for an actor outside its handlers counts in its busy "
          "time and in its own counter, not as messages") {
  using namespace std::chrono_literals;
  constexpr auto every = metrics::busy_sample_every;
  auto before = metrics::take_snapshot();
  std::thread([&] {
    for (uint64_t i = 0; i < every; ++i) {
      metrics::work_scope scope(metrics::counter::fast_path_batches,
                                metrics::actor_kind::client_session);
      auto until = steady_clock::now() + (i == 0 ? 2ms : 0ms);
      while (steady_clock::now() < until) {
      }
    }
  }).join();
  auto d = metrics::delta(metrics::take_snapshot(), before);
  auto& a = d.actors[static_cast<size_t>(metrics::actor_kind::client_session)];
  CHECK(d.get(metrics::counter::fast_path_batches) == every);
  CHECK(a.messages == 0);
  CHECK(a.busy_ns >= every * 2'000'000);
}
