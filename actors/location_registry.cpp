#include "actors/location_registry.hpp"

#include "net/metrics.hpp"
#include "net/peer_protocol.hpp"
#include "net/protocol.hpp"

namespace herd {

location_registry_state::location_registry_state()
    : digests(peer::max_buckets, 0) {}

auto location_registry_state::store(location_update& u) -> const record* {
  auto [it, inserted] = clients.try_emplace(std::move(u.client_id));
  auto& rec = it->second;
  if (inserted) {
    rec.client_hash = peer::client_hash(it->first);
  } else {
    if (u.time_ns <= rec.time_ns)
      return nullptr; // equal or older: dropped, which is what ends a flood
    digests[peer::bucket_of(rec.client_hash)] ^=
        peer::record_hash(rec.client_hash, rec.time_ns);
  }
  rec.time_ns = u.time_ns;
  rec.at_line = std::move(u.at_line);
  digests[peer::bucket_of(rec.client_hash)] ^=
      peer::record_hash(rec.client_hash, rec.time_ns);
  return &rec;
}

void location_registry_state::note_mailbox(size_t waiting) {
  if (!backlog || backlog->limit == 0)
    return;
  bool busy = backlog->busy.load(std::memory_order_relaxed);
  if (!busy && waiting > backlog->limit)
    backlog->busy.store(true, std::memory_order_relaxed);
  else if (busy && waiting <= backlog->limit / 2)
    backlog->busy.store(false, std::memory_order_relaxed);
}

update_inbox::~update_inbox() {
  take([](const std::string&, std::vector<location_update>&) {});
}

bool update_inbox::push(std::string origin,
                        std::vector<location_update> updates) {
  auto* n = new node{nullptr, std::move(origin), std::move(updates)};
  n->next = head_.load(std::memory_order_relaxed);
  while (!head_.compare_exchange_weak(n->next, n, std::memory_order_release,
                                      std::memory_order_relaxed)) {
  }
  return n->next == nullptr;
}

namespace {

using registry_ptr =
    location_registry_actor::stateful_pointer<location_registry_state>;

/// Stores a batch, counts it (for `origin`, a neighbour, if not empty) and
/// floods what was newer to every neighbour but `origin`.
void apply(registry_ptr self, const std::string& origin,
           std::vector<location_update>& updates) {
  auto& st = self->state;
  uint64_t stored = 0;
  std::vector<std::string> newer;
  for (auto& u : updates) {
    if (auto* rec = st.store(u)) {
      ++stored;
      if (!st.links.empty())
        newer.push_back(rec->at_line);
    }
  }
  metrics::add(metrics::counter::updates_stored, stored);
  metrics::add(metrics::counter::updates_stale, updates.size() - stored);
  if (!origin.empty()) {
    for (size_t i = 0; i < st.links.size(); ++i) {
      if (st.links[i].first == origin) {
        metrics::add(i, metrics::peer_counter::updates_received,
                     updates.size());
        metrics::add(i, metrics::peer_counter::updates_stale,
                     updates.size() - stored);
      }
    }
  }
  if (newer.empty())
    return;
  // The AT line travels as is.
  for (auto& [name, link] : st.links)
    if (name != origin)
      self->send(link, flood_atom::value, newer);
}

/// Where every handler starts: takes the inbox (see update_inbox), then
/// notes the backlog, the messages still waiting and the batches just
/// taken. Returns that backlog.
size_t take_inbox(registry_ptr self, size_t waiting,
                  metrics::handler_scope* scope = nullptr) {
  auto& st = self->state;
  if (st.backlog)
    waiting +=
        st.backlog->inbox.take([self](const std::string& origin,
                                      std::vector<location_update>& updates) {
          apply(self, origin, updates);
        });
  st.note_mailbox(waiting);
  if (scope != nullptr)
    scope->mailbox_seen(waiting);
  return waiting;
}

} // namespace

location_registry_actor::behavior_type location_registry(
    location_registry_actor::stateful_pointer<location_registry_state> self,
    std::shared_ptr<registry_backlog> backlog) {
  self->state.backlog = std::move(backlog);
  metrics::actor_spawned(metrics::actor_kind::location_registry);
  self->attach_functor(
      [] { metrics::actor_quit(metrics::actor_kind::location_registry); });
  return {
      [self](wake_atom) {
        auto waiting = self->mailbox().size();
        metrics::handler_scope scope(metrics::actor_kind::location_registry,
                                     waiting);
        take_inbox(self, waiting, &scope);
      },
      [self](update_atom, const std::string& origin,
             std::vector<location_update>& updates) {
        auto waiting = self->mailbox().size();
        metrics::handler_scope scope(metrics::actor_kind::location_registry,
                                     waiting);
        take_inbox(self, waiting, &scope);
        apply(self, origin, updates);
      },
      [self](lookup_atom, const std::string& client_id) -> lookup_result {
        auto waiting = self->mailbox().size();
        metrics::handler_scope scope(metrics::actor_kind::location_registry,
                                     waiting);
        take_inbox(self, waiting, &scope);
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
      [self](size_atom) -> uint64_t {
        take_inbox(self, self->mailbox().size());
        return self->state.clients.size();
      },
      [self](drain_atom) -> uint64_t {
        return take_inbox(self, self->mailbox().size());
      },
      [self](peers_atom, std::vector<std::string>& names,
             std::vector<peer_link_actor>& links) {
        auto& st = self->state;
        take_inbox(self, self->mailbox().size());
        st.links.clear();
        for (size_t i = 0; i < names.size() && i < links.size(); ++i)
          st.links.emplace_back(std::move(names[i]), std::move(links[i]));
      },
      [self](digest_atom) -> std::vector<uint64_t> {
        take_inbox(self, self->mailbox().size());
        return self->state.digests;
      },
      [self](records_atom, uint32_t buckets,
             const std::vector<uint32_t>& wanted) -> std::vector<std::string> {
        take_inbox(self, self->mailbox().size());
        std::vector<bool> want(buckets, false);
        for (auto b : wanted)
          if (b < buckets)
            want[b] = true;
        int shift = peer::max_bucket_bits;
        for (uint32_t b = buckets; b > 1; b >>= 1)
          --shift;
        std::vector<std::string> lines;
        for (auto& [id, rec] : self->state.clients)
          if (want[peer::bucket_of(rec.client_hash) >> shift])
            lines.push_back(rec.at_line);
        return lines;
      },
  };
}

} // namespace herd
