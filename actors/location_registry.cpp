#include "actors/location_registry.hpp"

#include "net/protocol.hpp"

namespace herd {

bool location_registry_state::store(location_update& u) {
  auto [it, inserted] = clients.try_emplace(std::move(u.client_id));
  auto& rec = it->second;
  if (!inserted && u.time_ns <= rec.time_ns)
    return false; // equal or older: dropped, which is what ends a flood
  rec.time_ns = u.time_ns;
  rec.at_line = std::move(u.at_line);
  return true;
}

location_registry_actor::behavior_type
location_registry(location_registry_actor::stateful_pointer<
                  location_registry_state> self) {
  return {
    [self](update_atom, const std::string&,
           std::vector<location_update>& updates) {
      for (auto& u : updates)
        self->state.store(u);
    },
    [self](lookup_atom, const std::string& client_id) -> lookup_result {
      lookup_result result;
      auto it = self->state.clients.find(client_id);
      if (it == self->state.clients.end())
        return result;
      result.found = true;
      result.at_line = it->second.at_line;
      // The stored line was produced or validated by this code base, so it
      // parses; take the location from it rather than storing it twice.
      auto parsed = proto::parse_line(result.at_line);
      result.latitude = std::string(parsed.at.where.latitude);
      result.longitude = std::string(parsed.at.where.longitude);
      return result;
    },
    [self](size_atom) -> uint64_t { return self->state.clients.size(); },
  };
}

} // namespace herd
