#include "actors/peer_link.hpp"

#include <caf/send.hpp>

#include "actors/catch_up.hpp"
#include "net/logging.hpp"
#include "net/metrics.hpp"
#include "net/peer_protocol.hpp"
#include "net/protocol.hpp"

namespace herd {

namespace {

using link_ptr = peer_link_actor::stateful_pointer<peer_link_state>;
using phase = peer_link_state::phase;

/// Forwards what the outbound connection reads, tagged with its attempt.
class link_forwarder : public net::connection_handler {
 public:
  link_forwarder(peer_link_actor link, uint64_t attempt)
      : link_(std::move(link)), attempt_(attempt) {}
  void on_lines(std::string& bytes, std::vector<uint32_t>& ends,
                int64_t received_ns) override {
    caf::anon_send(link_, lines_atom::value, attempt_,
                   line_batch{bytes, ends, received_ns});
  }
  void on_eof() override {
    // The neighbour closed its side: treat like a drop.
    caf::anon_send(link_, closed_atom::value, attempt_,
                   std::string("closed by neighbour"));
  }
  void on_closed(net::close_reason why) override {
    caf::anon_send(link_, closed_atom::value, attempt_,
                   std::string(net::to_string(why)));
  }

 private:
  peer_link_actor link_;
  uint64_t attempt_;
};

/// Moves the link to `p`, keeping the process-wide gauge in step.
void set_phase(link_ptr self, phase p) {
  self->state.now = p;
  metrics::set_link_state(self->state.index,
                          static_cast<metrics::link_state>(p));
}

void dial(link_ptr self) {
  auto& st = self->state;
  set_phase(self, phase::connecting);
  auto attempt = ++st.attempt;
  auto handle = caf::actor_cast<peer_link_actor>(self);
  auto node = st.node;
  auto& ctx = node->io->next();
  net::dial(
      ctx, st.address.host, st.address.port, peer_handshake_timeout,
      [handle, attempt, node](const boost::system::error_code& ec,
                              boost::asio::ip::tcp::socket socket) {
        if (ec) {
          caf::anon_send(handle, failed_atom::value, attempt, ec.message());
          return;
        }
        auto limits = node->limits;
        limits.max_line_bytes = node_context::peer_line_limit;
        auto conn =
            std::make_shared<net::connection>(std::move(socket), limits, 0);
        caf::anon_send(handle, connected_atom::value, attempt, std::move(conn));
      });
}

/// Drops the current connection and schedules the next attempt.
void reconnect_later(link_ptr self, bool at_once) {
  auto& st = self->state;
  if (st.conn) {
    st.conn->close(net::close_reason::server_close);
    st.conn = nullptr;
  }
  set_phase(self, phase::down);
  st.awaiting_ok = false;
  if (at_once)
    dial(self);
  else
    self->delayed_send(self, peer_retry_interval, retry_atom::value,
                       st.attempt);
}

void send_line(link_ptr self, std::string line) {
  line += '\n';
  self->state.conn->send(std::move(line), 0);
}

void start_sync(link_ptr self) {
  auto& st = self->state;
  set_phase(self, phase::syncing);
  st.sync_started = std::chrono::steady_clock::now();
  st.sync_bytes_in = st.sync_bytes_out = st.sync_records_in = 0;
  auto attempt = st.attempt;
  gather_digests(self, *st.node, [self, attempt](std::vector<uint64_t>& full) {
    auto& cur = self->state;
    if (cur.attempt != attempt || !cur.conn)
      return;
    uint64_t nonzero = 0;
    for (auto d : full)
      nonzero += d != 0;
    auto buckets = std::max<uint32_t>(64, peer::buckets_for(nonzero * 2));
    auto line = peer::format_sync(peer::fold_digests(full, buckets));
    cur.sync_bytes_out += line.size() + 1;
    send_line(self, std::move(line));
  });
}

/// The neighbour listed the buckets where we differ: push ours in those.
void finish_sync(link_ptr self, uint32_t buckets,
                 const std::vector<uint32_t>& differing) {
  auto& st = self->state;
  auto attempt = st.attempt;
  auto finish = [self, attempt, buckets,
                 n = differing.size()](std::vector<std::string>& lines) {
    auto& cur = self->state;
    if (cur.attempt != attempt || !cur.conn)
      return;
    auto bytes = join_lines(lines);
    cur.sync_bytes_out += bytes.size();
    if (!bytes.empty())
      cur.conn->send(std::move(bytes), 0);
    auto ms = std::chrono::duration<double, std::milli>(
                  std::chrono::steady_clock::now() - cur.sync_started)
                  .count();
    HERD_LOG_INFO("{} catch-up done in {:.1f} ms: {} of {} buckets differed; "
                  "received {} records ({} bytes), sent {} records, {} bytes "
                  "out in all",
                  cur.log_name, ms, n, buckets, cur.sync_records_in,
                  cur.sync_bytes_in, lines.size(), cur.sync_bytes_out);
    set_phase(self, phase::up);
    metrics::add(cur.index, metrics::peer_counter::catchups);
  };
  if (differing.empty()) {
    std::vector<std::string> none;
    finish(none);
    return;
  }
  gather_records(self, *st.node, buckets, differing, std::move(finish));
}

void on_handshake_line(link_ptr self, std::string_view line) {
  auto& st = self->state;
  auto& node = *st.node;
  if (!st.awaiting_ok) {
    auto ch = peer::parse_challenge(line);
    if (!ch) {
      HERD_LOG_WARN("{} refused by neighbour or bad handshake: {}", st.log_name,
                    log::escaped{line.substr(0, 200)});
      reconnect_later(self, false);
      return;
    }
    auto expected =
        peer::handshake_mac(node.peer_secret, "accept", node.server_name,
                            st.neighbour, st.nonce, ch->nonce);
    if (ch->acceptor != st.neighbour || !peer::mac_equal(ch->mac, expected)) {
      HERD_LOG_WARN("{} refused: the neighbour did not prove the herd secret",
                    st.log_name);
      reconnect_later(self, false);
      return;
    }
    send_line(self,
              "HERD-AUTH " + peer::handshake_mac(node.peer_secret, "dial",
                                                 node.server_name, st.neighbour,
                                                 st.nonce, ch->nonce));
    st.awaiting_ok = true;
    return;
  }
  if (line.rfind("HERD-OK", 0) != 0) {
    HERD_LOG_WARN("{} refused by neighbour: {}", st.log_name,
                  log::escaped{line.substr(0, 200)});
    reconnect_later(self, false);
    return;
  }
  st.awaiting_ok = false;
  st.failures = 0;
  st.conn->set_output_limit(node.peer_output_limit);
  HERD_LOG_INFO("{} authenticated{}", st.log_name,
                node.peer_secret.empty() ? " (no secret: unauthenticated)"
                                         : "");
  start_sync(self);
}

void on_lines(link_ptr self, line_batch& batch) {
  auto& st = self->state;
  std::vector<std::vector<location_update>> updates(
      st.node->registry_shards.size());
  uint32_t begin = 0;
  for (auto end : batch.ends) {
    std::string_view line(batch.bytes.data() + begin, end - begin);
    begin = end;
    if (!st.conn)
      break;
    if (st.now == phase::handshake) {
      on_handshake_line(self, line);
      continue;
    }
    auto parsed = proto::parse_line(line);
    if (parsed.kind == proto::line_kind::at) {
      // A catch-up record from the neighbour.
      ++st.sync_records_in;
      st.sync_bytes_in += line.size() + 1;
      auto shard = st.node->shard_index(parsed.at.client_id);
      updates[shard].push_back({std::string(parsed.at.client_id),
                                parsed.at.time_ns, std::string(line)});
    } else if (auto end_msg = peer::parse_sync_end(line)) {
      st.sync_bytes_in += line.size() + 1;
      finish_sync(self, end_msg->first, end_msg->second);
    } else if (parsed.kind != proto::line_kind::blank) {
      HERD_LOG_WARN("{} ignored from neighbour: {}", st.log_name,
                    log::escaped{line.substr(0, 200)});
    }
  }
  for (size_t i = 0; i < updates.size(); ++i)
    if (!updates[i].empty())
      self->send(st.node->registry_shards[i], update_atom::value, st.neighbour,
                 std::move(updates[i]));
  if (st.conn)
    st.conn->send(std::string_view(), static_cast<uint32_t>(batch.ends.size()));
}

} // namespace

peer_link_actor::behavior_type
peer_link(link_ptr self, std::shared_ptr<const node_context> node,
          std::string neighbour, size_t index, server_address address) {
  auto& st = self->state;
  st.index = index;
  metrics::actor_spawned(metrics::actor_kind::peer_link);
  self->attach_functor(
      [] { metrics::actor_quit(metrics::actor_kind::peer_link); });
  st.log_name = "peer_link " + node->server_name + "->" + neighbour;
  st.node = std::move(node);
  st.neighbour = std::move(neighbour);
  st.address = std::move(address);
  dial(self);
  return {
      [self](flood_atom, std::vector<std::string>& lines) {
        auto& cur = self->state;
        metrics::handler_scope scope(metrics::actor_kind::peer_link,
                                     self->mailbox().size());
        if (cur.now != phase::up && cur.now != phase::syncing) {
          metrics::add(cur.index, metrics::peer_counter::floods_dropped,
                       lines.size());
          return;
        }
        metrics::add(cur.index, metrics::peer_counter::floods_sent,
                     lines.size());
        cur.conn->send(join_lines(lines), 0);
      },
      [self](connected_atom, uint64_t attempt,
             std::shared_ptr<net::connection>& conn) {
        auto& cur = self->state;
        if (attempt != cur.attempt) {
          conn->close(net::close_reason::server_close);
          return;
        }
        cur.conn = conn;
        set_phase(self, phase::handshake);
        cur.nonce = peer::make_nonce();
        conn->start(std::make_shared<link_forwarder>(
            caf::actor_cast<peer_link_actor>(self), attempt));
        HERD_LOG_INFO("{} connection opened to {}:{}", cur.log_name,
                      cur.address.host, cur.address.port);
        peer::hello h{peer::protocol_version, cur.node->server_name,
                      cur.neighbour, cur.nonce};
        send_line(self, peer::format_hello(h));
        self->delayed_send(self, peer_handshake_timeout, timeout_atom::value,
                           attempt);
      },
      [self](failed_atom, uint64_t attempt, const std::string& why) {
        auto& cur = self->state;
        if (attempt != cur.attempt)
          return;
        if (cur.failures++ == 0)
          HERD_LOG_INFO("{} cannot connect to {}:{}: {} (retrying every {} ms)",
                        cur.log_name, cur.address.host, cur.address.port, why,
                        peer_retry_interval.count());
        reconnect_later(self, false);
      },
      [self](lines_atom, uint64_t attempt, line_batch& batch) {
        if (attempt == self->state.attempt)
          on_lines(self, batch);
      },
      [self](closed_atom, uint64_t attempt, const std::string& why) {
        auto& cur = self->state;
        if (attempt != cur.attempt || !cur.conn)
          return;
        bool was_up = cur.now == phase::up || cur.now == phase::syncing;
        HERD_LOG_INFO("{} connection dropped: {}", cur.log_name, why);
        // The first retry after a drop goes at once, but at most one per
        // retry interval, so a link that keeps dropping cannot spin.
        auto now = std::chrono::steady_clock::now();
        bool at_once =
            was_up && now - cur.last_immediate >= peer_retry_interval;
        if (at_once)
          cur.last_immediate = now;
        reconnect_later(self, at_once);
      },
      [self](retry_atom, uint64_t attempt) {
        auto& cur = self->state;
        if (attempt == cur.attempt && cur.now == phase::down)
          dial(self);
      },
      [self](timeout_atom, uint64_t attempt) {
        auto& cur = self->state;
        if (attempt != cur.attempt || cur.now != phase::handshake)
          return;
        HERD_LOG_WARN("{} handshake timed out after {} ms", cur.log_name,
                      peer_handshake_timeout.count());
        reconnect_later(self, false);
      },
      [self](status_atom) -> std::string {
        switch (self->state.now) {
        case phase::down:
          return "down";
        case phase::connecting:
          return "connecting";
        case phase::handshake:
          return "handshake";
        case phase::syncing:
          return "syncing";
        case phase::up:
          return "up";
        }
        return "unknown";
      },
  };
}

} // namespace herd
