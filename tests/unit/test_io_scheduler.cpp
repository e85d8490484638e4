// The scheduler whose workers run the sockets: wake-ups, socket handlers on
// the workers, and stealing.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include "actors/io_scheduler.hpp"

using namespace std::chrono_literals;

namespace {

struct io_config : caf::actor_system_config {
  explicit io_config(size_t workers) {
    set("scheduler.max-threads", workers);
    set("scheduler.max-throughput", herd::actor_turn_messages);
    herd::use_io_scheduler(*this);
  }
};

caf::behavior echo(caf::event_based_actor*) {
  return {[](int x) { return x; }};
}

} // namespace

TEST_CASE("the io scheduler gives each worker an io_context; CAF's own "
          "scheduler has none") {
  io_config cfg(3);
  caf::actor_system sys{cfg};
  auto contexts = herd::worker_io_contexts(sys);
  REQUIRE(contexts.size() == 3);
  CHECK(contexts[0] != contexts[1]);
  CHECK(contexts[1] != contexts[2]);

  caf::actor_system_config plain_cfg;
  caf::actor_system plain{plain_cfg};
  CHECK(herd::worker_io_contexts(plain).empty());
}

TEST_CASE("messages from a foreign thread always wake an idle worker") {
  // A lost wake-up leaves a worker blocked in epoll with a job queued: with
  // one worker nothing else would ever run it, so each reply is awaited
  // with a bound.
  for (size_t workers : {1, 2}) {
    INFO(workers << " worker(s)");
    io_config cfg(workers);
    caf::actor_system sys{cfg};
    auto e = sys.spawn(echo);
    caf::scoped_actor self{sys};
    int answered = 0;
    for (int i = 0; i < 2000; ++i) {
      if (i % 100 == 0)
        std::this_thread::sleep_for(1ms); // let the workers go idle
      self->request(e, 2s, i).receive(
          [&](int x) {
            if (x == i)
              ++answered;
          },
          [&](caf::error&) {});
    }
    CHECK(answered == 2000);
    caf::anon_send_exit(e, caf::exit_reason::user_shutdown);
  }
}

TEST_CASE("socket handlers run on the workers and can message actors") {
  io_config cfg(2);
  caf::actor_system sys{cfg};
  auto contexts = herd::worker_io_contexts(sys);
  caf::scoped_actor self{sys};
  for (auto* ctx : contexts) {
    std::promise<std::thread::id> ran_on;
    auto timer = std::make_shared<boost::asio::steady_timer>(*ctx, 5ms);
    timer->async_wait([&, timer](const boost::system::error_code&) {
      ran_on.set_value(std::this_thread::get_id());
      caf::anon_send(caf::actor_cast<caf::actor>(self), 42);
    });
    auto id = ran_on.get_future();
    REQUIRE(id.wait_for(2s) == std::future_status::ready);
    CHECK(id.get() != std::this_thread::get_id());
    bool got = false;
    self->receive([&](int x) { got = x == 42; },
                  caf::after(std::chrono::seconds(2)) >> [] {});
    CHECK(got);
  }
}

TEST_CASE("an idle worker steals a job queued behind a long handler") {
  io_config cfg(2);
  caf::actor_system sys{cfg};
  std::atomic<bool> ran{false};
  auto flag = sys.spawn([&](caf::event_based_actor*) -> caf::behavior {
    return {[&](int) { ran.store(true); }};
  });
  // The spinner sends to `flag`, which queues `flag` on the spinner's own
  // worker, then keeps that worker busy: only the other worker can run it.
  auto spinner = sys.spawn([&](caf::event_based_actor* me) -> caf::behavior {
    return {[&, me](int) {
      me->send(flag, 1);
      auto deadline = std::chrono::steady_clock::now() + 5s;
      while (!ran.load() && std::chrono::steady_clock::now() < deadline)
        std::this_thread::yield();
      return ran.load();
    }};
  });
  caf::scoped_actor self{sys};
  bool stolen = false;
  self->request(spinner, 10s, 0)
      .receive([&](bool x) { stolen = x; }, [&](caf::error&) {});
  CHECK(stolen);
  caf::anon_send_exit(spinner, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(flag, caf::exit_reason::user_shutdown);
}

TEST_CASE("an actor flooded faster than it handles does not starve the "
          "others on its worker") {
  // One worker: the flooded actor and the echo share its queue. The flooder
  // sends faster than the actor handles (1 us a message), so without a
  // bound on a turn the actor's turn lasts until the flood ends, and the
  // echo answers only after that.
  io_config cfg(1);
  caf::actor_system sys{cfg};
  auto flooded = sys.spawn([](caf::event_based_actor*) -> caf::behavior {
    return {[](int) {
      auto until = std::chrono::steady_clock::now() + 1us;
      while (std::chrono::steady_clock::now() < until) {
      }
    }};
  });
  auto e = sys.spawn(echo);
  constexpr int flood = 1'000'000;
  std::atomic<int> sent{0};
  std::atomic<bool> stop{false};
  std::thread flooder([&] {
    for (int i = 0; i < flood && !stop.load(std::memory_order_relaxed); ++i) {
      caf::anon_send(flooded, i);
      sent.store(i + 1, std::memory_order_relaxed);
    }
  });
  // Let the flooded actor's turn begin and its mailbox fill.
  while (sent.load() < 2000)
    std::this_thread::yield();
  caf::scoped_actor self{sys};
  int answer = 0;
  self->request(e, 30s, 7).receive([&](int x) { answer = x; },
                                   [](caf::error&) {});
  int sent_by_then = sent.load();
  stop.store(true);
  flooder.join();
  CHECK(answer == 7);
  INFO("the echo answered after " << sent_by_then << " of " << flood
                                  << " flood messages were sent");
  CHECK(sent_by_then < flood);
  caf::anon_send_exit(flooded, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(e, caf::exit_reason::user_shutdown);
}

TEST_CASE("timeouts, delayed messages and exits still work with the clock "
          "that skips needless cancellations") {
  io_config cfg(2);
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  // A request to an actor that never answers times out.
  auto silent = sys.spawn([](caf::event_based_actor*) -> caf::behavior {
    return {[](int) -> caf::result<int> { return caf::delegated<int>{}; }};
  });
  bool timed_out = false;
  self->request(silent, 50ms, 1)
      .receive([](int) {},
               [&](caf::error& err) {
                 timed_out = err == caf::sec::request_timeout;
               });
  CHECK(timed_out);
  // A receive timeout fires, and a delayed message arrives.
  auto me_handle = caf::actor_cast<caf::actor>(self);
  auto waiter = sys.spawn([me_handle](caf::event_based_actor* me) {
    return caf::behavior{[](int) {},
                         caf::after(std::chrono::milliseconds(20)) >>
                             [me, me_handle] {
                               caf::anon_send(me_handle, 7);
                               me->quit();
                             }};
  });
  int got = 0;
  self->receive([&](int x) { got = x; },
                caf::after(std::chrono::seconds(2)) >> [] {});
  CHECK(got == 7);
  self->delayed_send(self, 20ms, 8);
  got = 0;
  self->receive([&](int x) { got = x; },
                caf::after(std::chrono::seconds(2)) >> [] {});
  CHECK(got == 8);
  // Many short-lived actors come and go (each exit asks the clock to
  // cancel its timeouts; none had any).
  for (int i = 0; i < 500; ++i) {
    auto e = sys.spawn(echo);
    int r = -1;
    self->request(e, 2s, i).receive([&](int x) { r = x; }, [](caf::error&) {});
    REQUIRE(r == i);
    caf::anon_send_exit(e, caf::exit_reason::user_shutdown);
  }
  caf::anon_send_exit(silent, caf::exit_reason::user_shutdown);
  (void)waiter;
}
