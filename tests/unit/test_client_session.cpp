// The session's reply queue: order, and memory that follows what is pending.
#include <catch2/catch.hpp>

#include "actors/client_session.hpp"

using herd::reply_slot;
using herd::slot_queue;

TEST_CASE("the reply queue hands slots back in the order they were added") {
  slot_queue q;
  CHECK(q.empty());
  for (int i = 0; i < 5; ++i)
    q.push_back({false, std::to_string(i)});
  CHECK(q.size() == 5);
  q[2].ready = true;
  CHECK(q.front().bytes == "0");
  q.pop_front();
  CHECK(q.front().bytes == "1");
  CHECK(q[1].ready);
  CHECK(q.size() == 4);
}

TEST_CASE("a reply queue that never drains does not keep what it popped") {
  // A client that always has a WHATSAT in flight: one slot stays pending
  // while thousands pass through behind it.
  slot_queue q;
  for (int i = 0; i < 10000; ++i) {
    q.push_back({true, std::string(1000, 'x')});
    if (q.size() > 3)
      q.pop_front();
    REQUIRE(q.size() <= 3);
    REQUIRE(q.capacity() <= 256);
  }
  CHECK(q.front().bytes.size() == 1000);
}
