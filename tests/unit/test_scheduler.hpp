// An actor system on CAF's deterministic test scheduler, with the node's
// message types: the actor tests run their actors step by step on it.
#pragma once

#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>

#include "actors/atoms.hpp"

namespace herd::test {

struct test_config : caf::actor_system_config {
  test_config() {
    set("scheduler.policy", caf::atom("testing"));
    add_message_types<caf::id_block::herd>();
  }
};

} // namespace herd::test
