// A Places request actor on CAF's deterministic test scheduler, with a
// stand-in for its session.
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <catch2/catch.hpp>

#include "test_scheduler.hpp"

#include "actors/places_request.hpp"
#include "net/places_client.hpp"

using namespace herd;

namespace {

using herd::test::test_config;

/// What the stand-in session received: (seq, reply) pairs.
using received = std::vector<std::pair<uint64_t, std::string>>;

client_session_actor::behavior_type
session_stand_in(client_session_actor::pointer, std::shared_ptr<received> got) {
  return {
      [](lines_atom, line_batch&) {},
      [](eof_atom) {},
      [](closed_atom, const std::string&) {},
      [got](places_atom, uint64_t seq, std::string& reply) {
        got->emplace_back(seq, std::move(reply));
      },
  };
}

} // namespace

TEST_CASE("a Places request that is killed before its answer still answers "
          "its session, with UNKNOWN_ERROR") {
  // The upstream call never completes here (its io_context never runs), so
  // only the request's end can answer the slot the session holds for it.
  boost::asio::io_context ioc;
  net::places_settings settings;
  settings.endpoint = "http://127.0.0.1:9/maps/api/place/nearbysearch/json";
  settings.api_key = "unit-test-key";
  auto node = std::make_shared<node_context>();
  node->places = std::make_shared<net::places_client>(ioc, settings);
  node->log_messages = false;

  test_config cfg;
  caf::actor_system sys{cfg};
  auto& sched =
      dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
  auto got = std::make_shared<received>();
  auto session = sys.spawn(session_stand_in, got);
  const std::string at_line =
      "AT Alpha +0.000000001 kiwi +34.068930-118.445127 1621464827.9";
  places_query query{"+34.068930", "-118.445127", "10000", 5};
  auto request =
      sys.spawn(places_request, session, 7, at_line, query, node, "test");
  sched.run();
  CHECK(got->empty()); // still waiting for upstream

  caf::anon_send_exit(request, caf::exit_reason::kill);
  sched.run();
  REQUIRE(got->size() == 1);
  CHECK(got->front().first == 7);
  const auto& reply = got->front().second;
  INFO(reply);
  CHECK(reply.rfind(at_line + "\n{", 0) == 0);
  CHECK(reply.find("\"UNKNOWN_ERROR\"") != std::string::npos);
  CHECK(reply.find("request ended") != std::string::npos);
  CHECK(reply.size() > 2);
  CHECK(reply.substr(reply.size() - 2) == "\n\n");

  caf::anon_send_exit(session, caf::exit_reason::user_shutdown);
  sched.run();
}
