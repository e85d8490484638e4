// The location registry on CAF's deterministic test scheduler.
#include <atomic>
#include <thread>

#include <catch2/catch.hpp>

#include "test_scheduler.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include "actors/location_registry.hpp"
#include "actors/node_context.hpp"

using namespace herd;

namespace {

using herd::test::test_config;

struct fixture {
  test_config cfg;
  caf::actor_system sys{cfg};
  caf::scheduler::test_coordinator& sched =
      dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
  location_registry_actor registry =
      sys.spawn(location_registry, std::shared_ptr<registry_backlog>());
  caf::scoped_actor self{sys};

  ~fixture() {
    // The system waits for every actor at shutdown: let the registry quit.
    caf::anon_send_exit(registry, caf::exit_reason::user_shutdown);
    sched.run();
  }

  static location_update update(const std::string& client, int64_t t,
                                const std::string& server = "Clark") {
    auto loc = "+34.068930-118.445127";
    auto line = "AT " + server + " +0.000000001 " + client + " " + loc + " " +
                std::to_string(t);
    return {client, t * 1'000'000'000, line};
  }

  void send_updates(std::vector<location_update> updates,
                    const std::string& origin = "") {
    self->send(registry, update_atom::value, origin, std::move(updates));
  }

  lookup_result lookup(const std::string& client) {
    self->send(registry, lookup_atom::value, client);
    sched.run();
    lookup_result result;
    self->receive([&](lookup_result& r) { result = std::move(r); });
    return result;
  }
};

} // namespace

TEST_CASE_METHOD(fixture, "a lookup after an update from the same sender "
                          "sees that update") {
  send_updates({update("kiwi", 100)});
  auto r = lookup("kiwi");
  REQUIRE(r.found);
  CHECK(r.at_line == update("kiwi", 100).at_line);
  CHECK(r.latitude == "+34.068930");
  CHECK(r.longitude == "-118.445127");
}

TEST_CASE_METHOD(fixture, "a lookup for a client never seen finds nothing") {
  send_updates({update("kiwi", 100)});
  CHECK_FALSE(lookup("apple").found);
}

TEST_CASE_METHOD(fixture, "an update that is not strictly newer is dropped") {
  send_updates({update("kiwi", 100, "Clark")});
  send_updates({update("kiwi", 100, "Bona")});  // equal: dropped
  send_updates({update("kiwi", 99, "Jaquez")}); // older: dropped
  CHECK(lookup("kiwi").at_line == update("kiwi", 100, "Clark").at_line);
}

TEST_CASE_METHOD(fixture,
                 "the newest client time wins whatever the arrival order") {
  send_updates({update("kiwi", 1), update("kiwi", 3), update("kiwi", 2)});
  CHECK(lookup("kiwi").at_line == update("kiwi", 3).at_line);
  send_updates({update("kiwi", 4)}, "Bona");
  CHECK(lookup("kiwi").at_line == update("kiwi", 4).at_line);
}

TEST_CASE_METHOD(fixture, "a lookup from another actor enqueued after an "
                          "update sees that update") {
  // This is the cross-connection guarantee: a session hands its update to
  // the registry before it writes the AT reply, so a lookup caused by that
  // reply is enqueued behind the update.
  send_updates({update("kiwi", 7)});
  caf::scoped_actor other{sys};
  other->send(registry, lookup_atom::value, std::string("kiwi"));
  sched.run();
  bool found = false;
  other->receive([&](lookup_result& r) { found = r.found; });
  CHECK(found);
}

TEST_CASE_METHOD(fixture, "the registry counts the clients it stores") {
  std::vector<location_update> batch;
  for (int i = 0; i < 100; ++i)
    batch.push_back(update("client" + std::to_string(i % 40), i));
  send_updates(std::move(batch));
  self->send(registry, size_atom::value);
  sched.run();
  uint64_t n = 0;
  self->receive([&](uint64_t x) { n = x; });
  CHECK(n == 40);
}

TEST_CASE("registry shards are chosen by client ID alone") {
  test_config cfg;
  caf::actor_system sys{cfg};
  sys.await_actors_before_shutdown(false);
  node_context ctx;
  for (int i = 0; i < 4; ++i)
    ctx.registry_shards.push_back(
        sys.spawn(location_registry, std::shared_ptr<registry_backlog>()));
  for (auto id : {"kiwi", "apple", "\xF0\x9F\xA5\x9D", "x"}) {
    auto a = ctx.shard_index(id);
    CHECK(a < 4);
    CHECK(ctx.shard_index(std::string(id)) == a);
    CHECK(ctx.shard_for(id) == ctx.registry_shards[a]);
  }
}

TEST_CASE("a registry is busy while more than its limit waits, until half of "
          "it is left, and a drain is answered after what came before") {
  test_config cfg;
  caf::actor_system sys{cfg};
  auto& sched =
      dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
  auto backlog = std::make_shared<registry_backlog>(10);
  auto registry = sys.spawn(location_registry, backlog);
  caf::scoped_actor self{sys};
  auto send = [&](int i) {
    std::vector<location_update> one{{"c" + std::to_string(i), i + 1,
                                      "AT x +0.1 c +1+2 " + std::to_string(i)}};
    self->send(registry, update_atom::value, std::string(), std::move(one));
  };
  // 20 updates and a drain; a handler sees the messages behind its own.
  for (int i = 0; i < 20; ++i)
    send(i);
  self->send(registry, drain_atom::value);
  CHECK_FALSE(backlog->busy.load());
  sched.run_once(); // 20 wait: busy
  CHECK(backlog->busy.load());
  for (int i = 0; i < 14; ++i)
    sched.run_once(); // 6 wait: more than half the limit
  CHECK(backlog->busy.load());
  sched.run_once(); // 5 wait: half of it
  CHECK_FALSE(backlog->busy.load());
  sched.run();
  uint64_t waiting = 99;
  self->receive([&](uint64_t x) { waiting = x; });
  CHECK(waiting == 0); // the drain came last
  self->send(registry, size_atom::value);
  sched.run();
  uint64_t stored = 0;
  self->receive([&](uint64_t x) { stored = x; });
  CHECK(stored == 20);
  caf::anon_send_exit(registry, caf::exit_reason::user_shutdown);
  sched.run();
}

namespace {

/// A registry with a backlog (so an inbox) on the test scheduler.
struct inbox_fixture {
  test_config cfg;
  caf::actor_system sys{cfg};
  caf::scheduler::test_coordinator& sched =
      dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
  std::shared_ptr<registry_backlog> backlog =
      std::make_shared<registry_backlog>(10);
  location_registry_actor registry = sys.spawn(location_registry, backlog);
  caf::scoped_actor self{sys};

  ~inbox_fixture() {
    caf::anon_send_exit(registry, caf::exit_reason::user_shutdown);
    sched.run();
  }

  template<class T> T ask_and_run(T) {
    sched.run();
    T result{};
    self->receive([&](T& x) { result = std::move(x); });
    return result;
  }

  uint64_t size() {
    self->send(registry, size_atom::value);
    return ask_and_run(uint64_t{});
  }
};

} // namespace

TEST_CASE_METHOD(inbox_fixture,
                 "a registry takes its inbox before the next message it "
                 "handles, whether or not the wake-up came") {
  // A session pushes its batch, then writes the AT reply; a lookup caused
  // by that reply must see the update even if the session's wake-up is
  // still behind other messages (or was never needed).
  CHECK(backlog->inbox.push("", {fixture::update("kiwi", 5)}));
  CHECK_FALSE(backlog->inbox.push("", {fixture::update("kiwi", 6)}));
  self->send(registry, lookup_atom::value, std::string("kiwi"));
  auto found = ask_and_run(lookup_result{});
  REQUIRE(found.found);
  CHECK(found.at_line == fixture::update("kiwi", 6).at_line);
  // Taken: the next push finds the inbox empty again.
  CHECK(backlog->inbox.push("", {fixture::update("apple", 1)}));
  self->send(registry, wake_atom::value);
  sched.run();
  CHECK(size() == 2);
}

TEST_CASE_METHOD(inbox_fixture,
                 "batches waiting in the inbox count towards the backlog") {
  for (int i = 0; i < 20; ++i)
    backlog->inbox.push("", {fixture::update("c" + std::to_string(i), 1)});
  self->send(registry, wake_atom::value);
  CHECK_FALSE(backlog->busy.load());
  sched.run_once(); // 20 batches were waiting: busy
  CHECK(backlog->busy.load());
  self->send(registry, drain_atom::value);
  CHECK(ask_and_run(uint64_t{}) == 0);
  CHECK_FALSE(backlog->busy.load()); // nothing waits any more
  CHECK(size() == 20);
}

TEST_CASE("an update inbox hands over every batch, each sender's in order, "
          "while senders push and a taker takes at the same time") {
  constexpr int senders = 4;
  constexpr int per_sender = 20'000;
  update_inbox inbox;
  std::atomic<int> done{0};
  std::vector<int64_t> last(senders, -1);
  size_t taken = 0;
  bool in_order = true;
  auto take = [&] {
    taken += inbox.take(
        [&](const std::string& origin, std::vector<location_update>& u) {
          auto s = static_cast<size_t>(std::stoi(origin));
          if (u.size() != 1 || u[0].time_ns != last[s] + 1)
            in_order = false;
          last[s] = u[0].time_ns;
        });
  };
  std::vector<std::thread> threads;
  for (int s = 0; s < senders; ++s)
    threads.emplace_back([&, s] {
      for (int i = 0; i < per_sender; ++i)
        inbox.push(std::to_string(s), {{"c", i, "AT"}});
      ++done;
    });
  while (done.load() < senders)
    take();
  for (auto& t : threads)
    t.join();
  take();
  CHECK(in_order);
  CHECK(taken == size_t{senders} * per_sender);
  for (auto l : last)
    CHECK(l == per_sender - 1);
  // Empty now: the next push is the one that has to wake the taker.
  CHECK(inbox.push("0", {}));
}
