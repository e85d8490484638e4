// The catch-up exchange's queries against every registry shard, shared by
// the side that asks (peer_link) and the side that answers (client_session
// in peer mode). Shards hold disjoint clients, so their digests XOR together
// and their records concatenate.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

#include "actors/interfaces.hpp"
#include "actors/node_context.hpp"
#include "net/peer_protocol.hpp"

namespace herd {

/// Calls `done(std::vector<uint64_t>&)` with the node's full-resolution
/// digests, from inside `self`.
template<class Self, class F>
void gather_digests(Self* self, const node_context& node, F done) {
  struct acc {
    size_t waiting;
    std::vector<uint64_t> digests;
    F done;
  };
  auto a = std::make_shared<acc>(
      acc{node.registry_shards.size(),
          std::vector<uint64_t>(peer::max_buckets, 0), std::move(done)});
  for (auto& shard : node.registry_shards)
    self->request(shard, caf::infinite, digest_atom::value)
        .then([a](std::vector<uint64_t>& d) {
          for (size_t i = 0; i < d.size() && i < a->digests.size(); ++i)
            a->digests[i] ^= d[i];
          if (--a->waiting == 0)
            a->done(a->digests);
        });
}

/// Calls `done(std::vector<std::string>&)` with the AT lines of every record
/// in `wanted` buckets (at `buckets` resolution), from inside `self`.
template<class Self, class F>
void gather_records(Self* self, const node_context& node, uint32_t buckets,
                    const std::vector<uint32_t>& wanted, F done) {
  struct acc {
    size_t waiting;
    std::vector<std::string> lines;
    F done;
  };
  auto a = std::make_shared<acc>(
      acc{node.registry_shards.size(), {}, std::move(done)});
  for (auto& shard : node.registry_shards)
    self->request(shard, caf::infinite, records_atom::value, buckets, wanted)
        .then([a](std::vector<std::string>& lines) {
          if (a->lines.empty())
            a->lines = std::move(lines);
          else
            for (auto& l : lines)
              a->lines.push_back(std::move(l));
          if (--a->waiting == 0)
            a->done(a->lines);
        });
}

/// The buckets where `mine` and `theirs` (both at theirs.size() resolution)
/// differ.
inline std::vector<uint32_t>
differing_buckets(const std::vector<uint64_t>& mine,
                  const std::vector<uint64_t>& theirs) {
  std::vector<uint32_t> out;
  for (uint32_t i = 0; i < theirs.size() && i < mine.size(); ++i)
    if (mine[i] != theirs[i])
      out.push_back(i);
  return out;
}

/// Lines joined with '\n' after each, ready for one write.
inline std::string join_lines(const std::vector<std::string>& lines) {
  size_t n = 0;
  for (auto& l : lines)
    n += l.size() + 1;
  std::string out;
  out.reserve(n);
  for (auto& l : lines) {
    out += l;
    out += '\n';
  }
  return out;
}

} // namespace herd
