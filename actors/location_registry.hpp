// The location registry: the single owner of every client's newest record.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>

#include "actors/interfaces.hpp"

namespace herd {

struct location_registry_state {
  struct record {
    int64_t time_ns = 0;
    std::string at_line;
  };

  std::unordered_map<std::string, record> clients;

  /// Stores `u` if it is strictly newer than what is held; true if stored.
  bool store(location_update& u);

  static inline const char* name = "location_registry";
};

location_registry_actor::behavior_type
location_registry(location_registry_actor::stateful_pointer<
                  location_registry_state> self);

} // namespace herd
