#include "actors/client_session.hpp"

#include <algorithm>

#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/catch_up.hpp"
#include "actors/places_request.hpp"
#include "net/logging.hpp"
#include "net/metrics.hpp"
#include "net/peer_protocol.hpp"
#include "net/protocol.hpp"

namespace herd {

namespace {

using session_ptr =
    client_session_actor::stateful_pointer<client_session_state>;

/// Updates not yet handed to the registry, by shard index.
using shard_updates = std::vector<std::vector<location_update>>;

/// What the session and the fast path do alike for one IAMAT: appends its
/// AT reply (without newline) to `out` and returns it, and appends its
/// update to `list`.
std::string_view answer_iamat(const node_context& node, const proto::iamat& msg,
                              int64_t received_ns, std::string& out,
                              std::vector<location_update>& list) {
  auto start = out.size();
  proto::append_at(out, node.server_name, received_ns - msg.time_ns, msg);
  auto at = std::string_view(out).substr(start);
  list.push_back({std::string(msg.client_id), msg.time_ns, std::string(at)});
  return at;
}

/// The list of `updates` for `client_id`'s shard, made on first use.
std::vector<location_update>& shard_list(const node_context& node,
                                         shard_updates& updates,
                                         std::string_view client_id,
                                         size_t batch_lines) {
  if (updates.empty())
    updates.resize(node.registry_shards.size());
  auto& list = updates[node.shard_index(client_id)];
  if (list.capacity() == 0)
    list.reserve(batch_lines);
  return list;
}

/// Hands `list` to registry shard `i`'s inbox, waking the shard if the
/// inbox was empty.
void push_to_shard(const node_context& node, size_t i,
                   const std::string& origin,
                   std::vector<location_update> list) {
  if (node.registry_backlogs[i]->inbox.push(origin, std::move(list)))
    caf::anon_send(node.registry_shards[i], wake_atom::value);
}

/// Hands every queued update to its registry shard; calls fed(shard) for
/// each shard fed.
template<class Fed>
void push_updates(const node_context& node, const std::string& origin,
                  shard_updates& updates, Fed fed) {
  for (size_t i = 0; i < updates.size(); ++i) {
    if (updates[i].empty())
      continue;
    push_to_shard(node, i, origin, std::move(updates[i]));
    updates[i] = {};
    fed(i);
  }
}

/// An IAMAT and its AT reply as one line, "in: IAMAT <fields> out: AT
/// <server> <diff> ...": the rest of the AT line is the IAMAT's own fields,
/// echoed verbatim, so the line still holds both messages, in half the
/// bytes of two lines (at full rate the log is most of what a node writes).
void log_iamat_line(log::message_block& msglog, int64_t when_ns,
                    std::string_view who, std::string_view line,
                    std::string_view at) {
  // "AT <server> <diff>": up to the third space.
  size_t end = 0;
  for (int spaces = 0; end < at.size(); ++end)
    if (at[end] == ' ' && ++spaces == 3)
      break;
  msglog.add(when_ns, who, "in", line, {" out: ", at.substr(0, end), " ..."});
}

/// Hands the session's queued updates to the registry. Called before a
/// lookup and before replies are written, so that an acknowledged IAMAT is
/// always with the registry ahead of anything that could observe it (see
/// update_inbox).
void flush_updates(session_ptr self) {
  auto& st = self->state;
  push_updates(*st.node, st.peer_name, st.updates, [&st](size_t i) {
    if (st.fed_shards.empty())
      st.fed_shards.resize(st.updates.size());
    st.fed_shards[i] = true;
  });
}

/// Tells the reader that this session is idle (see session_handoff), when
/// it is: everything it took is answered and written.
void settle(session_ptr self) {
  auto& st = self->state;
  if (st.handoff && st.now == client_session_state::mode::client &&
      !st.first_line && !st.eof && st.waiting.empty() &&
      st.drains_pending == 0 && st.out.empty() && st.out_lines == 0)
    st.handoff->settled.store(st.batches_handled, std::memory_order_release);
}

void flush_output(session_ptr self);
void maybe_finish(session_ptr self);

/// When a shard this session fed is behind (see registry_backlog), holds
/// the ready replies until the shard has handled everything sent so far.
/// Returns true when they are held.
bool hold_for_registry(session_ptr self) {
  auto& st = self->state;
  if (st.drains_pending > 0)
    return true;
  auto& backlogs = st.node->registry_backlogs;
  for (size_t i = 0; i < backlogs.size() && i < st.fed_shards.size(); ++i) {
    if (!st.fed_shards[i] || !backlogs[i]->busy.load(std::memory_order_relaxed))
      continue;
    ++st.drains_pending;
    // The answer covers every update sent so far; later ones set the bit
    // again.
    st.fed_shards[i] = false;
    auto answered = [self] {
      if (--self->state.drains_pending == 0) {
        flush_output(self);
        maybe_finish(self);
        settle(self);
      }
    };
    self->request(st.node->registry_shards[i], caf::infinite, drain_atom::value)
        .then([answered](uint64_t) { answered(); },
              // The registry is gone (shutdown): nothing to wait for.
              [answered](caf::error&) { answered(); });
  }
  if (st.drains_pending == 0)
    return false;
  metrics::add(metrics::counter::updates_held);
  return true;
}

/// Writes every reply that is ready, in order, in one send.
void flush_output(session_ptr self) {
  auto& st = self->state;
  flush_updates(self);
  st.msglog.flush();
  if (st.out.empty() && st.out_lines == 0)
    return;
  if (hold_for_registry(self))
    return;
  // Replies still waiting (a WHATSAT's, and what follows it) acknowledge
  // updates too: forget the shards only when nothing is left to write.
  if (st.waiting.empty())
    std::fill(st.fed_shards.begin(), st.fed_shards.end(), false);
  st.conn->send(std::move(st.out), st.out_lines);
  st.out = {};
  st.out_lines = 0;
}

/// The time of a message log line: the batch's receive time while a batch
/// is handled, else now.
int64_t log_time(const client_session_state& st) {
  return st.batch_time != 0 ? st.batch_time : net::realtime_ns();
}

void log_in(session_ptr self, std::string_view line) {
  auto& st = self->state;
  if (st.node->log_messages)
    st.msglog.add(log_time(st), st.msg_name, "in", line);
}

void log_out(session_ptr self, std::string_view reply) {
  if (!self->state.node->log_messages)
    return;
  while (!reply.empty() && reply.back() == '\n')
    reply.remove_suffix(1);
  auto& st = self->state;
  st.msglog.add(log_time(st), st.msg_name, "out", reply);
}

void log_iamat(session_ptr self, std::string_view line, std::string_view at) {
  auto& st = self->state;
  if (st.node->log_messages)
    log_iamat_line(st.msglog, log_time(st), st.msg_name, line, at);
}

/// A reply whose turn may not have come yet.
void emit(session_ptr self, std::string_view reply) {
  auto& st = self->state;
  log_out(self, reply);
  if (st.waiting.empty()) {
    st.out += reply;
    ++st.out_lines;
  } else {
    st.waiting.push_back({true, std::string(reply)});
  }
}

uint64_t reserve_slot(session_ptr self) {
  auto& st = self->state;
  st.waiting.push_back({false, {}});
  return st.first_waiting + st.waiting.size() - 1;
}

void maybe_finish(session_ptr self) {
  auto& st = self->state;
  if (st.eof && st.waiting.empty() && st.drains_pending == 0) {
    flush_output(self);
    if (st.drains_pending > 0)
      return; // held: the drain's answer comes back here
    st.conn->finish();
  }
}

void fill_slot(session_ptr self, uint64_t seq, std::string bytes) {
  auto& st = self->state;
  if (seq < st.first_waiting || seq - st.first_waiting >= st.waiting.size())
    return;
  auto& s = st.waiting[seq - st.first_waiting];
  s.ready = true;
  s.bytes = std::move(bytes);
  while (!st.waiting.empty() && st.waiting.front().ready) {
    if (st.out.empty())
      st.out.swap(st.waiting.front().bytes); // a WHATSAT reply: no copy
    else
      st.out += st.waiting.front().bytes; // pop_front releases them
    ++st.out_lines;
    st.waiting.pop_front();
    ++st.first_waiting;
  }
  flush_output(self);
  maybe_finish(self);
  settle(self);
}

void handle_whatsat(session_ptr self, const proto::whatsat& msg,
                    std::string_view line) {
  auto& st = self->state;
  flush_updates(self); // the lookup must see this connection's IAMATs
  auto seq = reserve_slot(self);
  places_query query;
  query.radius_m = msg.radius_m;
  query.bound = msg.bound;
  self->request(st.node->shard_for(msg.client_id), caf::infinite,
                lookup_atom::value, std::string(msg.client_id))
      .then(
          [self, seq, query = std::move(query),
           line = std::string(line)](lookup_result& found) mutable {
            if (!found.found) {
              metrics::add(metrics::counter::out_invalid);
              std::string reply;
              proto::append_invalid(reply, line);
              log_out(self, reply);
              fill_slot(self, seq, std::move(reply));
              return;
            }
            query.latitude = std::move(found.latitude);
            query.longitude = std::move(found.longitude);
            self->spawn(places_request,
                        caf::actor_cast<client_session_actor>(self), seq,
                        std::move(found.at_line), std::move(query),
                        self->state.node, self->state.log_name);
          },
          [self, seq, line = std::string(line)](caf::error& err) {
            HERD_LOG_ERROR("{} registry lookup failed: {}",
                           self->state.log_name, caf::to_string(err));
            std::string reply;
            proto::append_invalid(reply, line);
            fill_slot(self, seq, std::move(reply));
          });
}

// -- peer mode
// --------------------------------------------------------------------

void refuse_peer(session_ptr self, const std::string& reason) {
  auto& st = self->state;
  HERD_LOG_WARN("{} peer connection{} refused: {}", st.log_name,
                st.peer_name.empty() ? "" : " from " + st.peer_name, reason);
  st.now = client_session_state::mode::refused;
  st.out += "HERD-REFUSED " + reason + "\n";
  ++st.out_lines;
  st.eof = true; // close once this is written
}

void handle_hello(session_ptr self, std::string_view line) {
  auto& st = self->state;
  auto& node = *st.node;
  auto h = peer::parse_hello(line);
  if (!h) {
    refuse_peer(self, "malformed HERD-HELLO");
    return;
  }
  st.peer_name = h->dialer;
  if (h->version != peer::protocol_version) {
    refuse_peer(self, "unsupported version " + std::to_string(h->version));
    return;
  }
  if (h->acceptor != node.server_name) {
    refuse_peer(self, "this is " + node.server_name + ", not " +
                          log::escape(h->acceptor));
    return;
  }
  if (!node.is_neighbour(h->dialer)) {
    refuse_peer(self, log::escape(h->dialer) + " is not a neighbour of " +
                          node.server_name);
    return;
  }
  HERD_LOG_INFO("{} peer connection opened by {}", st.log_name, st.peer_name);
  st.dialer_nonce = h->nonce;
  st.our_nonce = peer::make_nonce();
  peer::challenge c{node.server_name, st.our_nonce,
                    peer::handshake_mac(node.peer_secret, "accept", h->dialer,
                                        node.server_name, h->nonce,
                                        st.our_nonce)};
  st.out += peer::format_challenge(c) + "\n";
  ++st.out_lines;
  st.now = client_session_state::mode::peer_handshake;
}

void handle_auth(session_ptr self, std::string_view line) {
  auto& st = self->state;
  auto& node = *st.node;
  auto mac = peer::parse_auth(line);
  auto expected =
      peer::handshake_mac(node.peer_secret, "dial", st.peer_name,
                          node.server_name, st.dialer_nonce, st.our_nonce);
  if (!mac || !peer::mac_equal(*mac, expected)) {
    refuse_peer(self, "authentication failed");
    return;
  }
  st.now = client_session_state::mode::peer;
  st.msg_name = "peer " + st.peer_name + "->" + node.server_name;
  st.log_name = st.msg_name + " " + st.conn->remote();
  st.conn->set_output_limit(node.peer_output_limit);
  st.conn->set_line_limit(node_context::peer_line_limit); // before HERD-OK
  st.out += "HERD-OK\n";
  ++st.out_lines;
  HERD_LOG_INFO("{} authenticated{}", st.log_name,
                node.peer_secret.empty() ? " (no secret: unauthenticated)"
                                         : "");
}

/// Answers a neighbour's SYNC: our records in every bucket whose digest
/// differs, then SYNC-END listing those buckets so it can send us its own.
void answer_sync(session_ptr self, std::vector<uint64_t> theirs) {
  auto& st = self->state;
  auto buckets = static_cast<uint32_t>(theirs.size());
  gather_digests(
      self, *st.node,
      [self, theirs = std::move(theirs), buckets](std::vector<uint64_t>& full) {
        auto differing =
            differing_buckets(peer::fold_digests(full, buckets), theirs);
        auto send = [self, buckets,
                     differing](std::vector<std::string>& lines) {
          auto& cur = self->state;
          auto bytes = join_lines(lines);
          bytes += peer::format_sync_end(buckets, differing);
          bytes += '\n';
          HERD_LOG_INFO(
              "{} catch-up asked: {} of {} buckets differ, sending {} "
              "records ({} bytes)",
              cur.log_name, differing.size(), buckets, lines.size(),
              bytes.size());
          cur.conn->send(std::move(bytes), 0);
        };
        if (differing.empty()) {
          std::vector<std::string> none;
          send(none);
        } else {
          gather_records(self, *self->state.node, buckets, differing,
                         std::move(send));
        }
      });
}

void handle_peer_line(session_ptr self, std::string_view line) {
  auto& st = self->state;
  ++st.out_lines; // a neighbour's lines are never answered
  auto parsed = proto::parse_line(line);
  if (parsed.kind == proto::line_kind::at) {
    metrics::add(metrics::counter::in_at);
    log_in(self, line);
    auto shard = st.node->shard_index(parsed.at.client_id);
    if (st.updates.empty())
      st.updates.resize(st.node->registry_shards.size());
    st.updates[shard].push_back({std::string(parsed.at.client_id),
                                 parsed.at.time_ns, std::string(line)});
  } else if (auto theirs = peer::parse_sync(line)) {
    flush_updates(self);
    answer_sync(self, std::move(*theirs));
  } else if (parsed.kind != proto::line_kind::blank) {
    HERD_LOG_WARN("{} ignored from neighbour: {}", st.log_name,
                  log::escaped{line.substr(0, 200)});
  }
}

/// `line` comes without its terminator (the connection strips "\n" or
/// "\r\n"), so it is echoed as it is in a "? " reply.
void handle_line(session_ptr self, std::string_view line, int64_t received_ns) {
  auto& st = self->state;
  using mode = client_session_state::mode;
  switch (st.now) {
  case mode::peer:
    handle_peer_line(self, line);
    return;
  case mode::peer_handshake:
    handle_auth(self, line);
    return;
  case mode::refused:
    ++st.out_lines;
    return;
  case mode::client:
    break;
  }
  if (st.first_line) {
    st.first_line = false;
    if (line.rfind("HERD-HELLO", 0) == 0) {
      handle_hello(self, line);
      return;
    }
  }
  auto parsed = proto::parse_line(line);
  if (parsed.kind == proto::line_kind::blank) {
    ++st.out_lines; // nothing to say, but the line is answered
    return;
  }
  if (parsed.kind != proto::line_kind::iamat)
    log_in(self, line); // an IAMAT is logged with its reply
  std::string reply;
  switch (parsed.kind) {
  case proto::line_kind::iamat: {
    metrics::add(metrics::counter::in_iamat);
    metrics::add(metrics::counter::out_at);
    if (st.waiting.empty()) {
      // The common case: format straight into the output.
      auto at = answer_iamat(*st.node, parsed.iam, received_ns, st.out,
                             shard_list(*st.node, st.updates,
                                        parsed.iam.client_id, st.batch_lines));
      log_iamat(self, line, at);
      st.out += '\n';
      ++st.out_lines;
    } else {
      auto at = answer_iamat(*st.node, parsed.iam, received_ns, reply,
                             shard_list(*st.node, st.updates,
                                        parsed.iam.client_id, st.batch_lines));
      log_iamat(self, line, at);
      reply += '\n';
      st.waiting.push_back({true, std::move(reply)});
    }
    return;
  }
  case proto::line_kind::whatsat:
    metrics::add(metrics::counter::in_whatsat);
    handle_whatsat(self, parsed.wh, line);
    return;
  default:
    // Malformed lines, and AT lines: only an authenticated peer may send
    // those, and a client connection is not one.
    metrics::add(metrics::counter::in_invalid);
    metrics::add(metrics::counter::out_invalid);
    proto::append_invalid(reply, line);
    emit(self, reply);
    return;
  }
}

/// Forwards what a connection reads to its session actor, which it spawns
/// on the first bytes: a connection that never says anything costs a socket
/// and this object, not an actor.
class session_forwarder : public net::connection_handler {
 public:
  session_forwarder(caf::actor_system& sys, std::weak_ptr<net::connection> conn,
                    std::shared_ptr<const node_context> node)
      : sys_(sys), conn_(std::move(conn)), node_(std::move(node)) {}

  void on_lines(std::string& bytes, std::vector<uint32_t>& ends,
                int64_t received_ns) override {
    if (session_ && node_->iamat_fast_path &&
        handoff_->settled.load(std::memory_order_acquire) == forwarded_ &&
        answer_inline(bytes, ends, received_ns))
      return;
    // Replies this connection's earlier reads left for the end of the
    // round go out before anything the session writes.
    net::flush_round_writes();
    ++forwarded_;
    caf::anon_send(session(), lines_atom::value,
                   line_batch{bytes, ends, received_ns});
  }

  void on_eof() override {
    net::flush_round_writes();
    ++forwarded_;
    caf::anon_send(session(), eof_atom::value);
  }

  void on_closed(net::close_reason why) override {
    if (session_) {
      caf::anon_send(session_, closed_atom::value,
                     std::string(net::to_string(why)));
      return;
    }
    // Closed before it said anything: no session to do the bookkeeping.
    if (auto c = conn_.lock())
      HERD_LOG_INFO("client#{} {} connection closed: {}", c->id(), c->remote(),
                    net::to_string(why));
    --node_->open_connections;
    metrics::add(metrics::counter::connections_closed);
  }

 private:
  const client_session_actor& session() {
    if (!session_) {
      handoff_ = std::make_shared<session_handoff>();
      session_ = sys_.spawn(client_session, conn_.lock(), node_, handoff_);
    }
    return session_;
  }

  /// The fast path: a batch of IAMATs answered here, on the thread that
  /// read it, while the session is idle (the caller checked), which spares
  /// the batch a message and the session a turn. It does what the session
  /// would do, in the same order: the updates go to the registry before the
  /// replies that acknowledge them are written. Returns false, having done
  /// nothing, when the batch holds anything but IAMATs or feeds a registry
  /// shard that is busy (its replies must be held): the session takes it.
  bool answer_inline(const std::string& bytes,
                     const std::vector<uint32_t>& ends, int64_t received_ns) {
    const auto& node = *node_;
    // The reading thread's scratch space, kept between batches.
    struct scratch {
      std::vector<std::pair<std::string_view, proto::iamat>> msgs;
      shard_updates updates;
      std::string out;
      std::string who;
      log::message_block msglog;
    };
    thread_local scratch tls;
    auto& s = tls;
    s.msgs.clear();
    uint32_t begin = 0;
    for (auto end : ends) {
      std::string_view line(bytes.data() + begin, end - begin);
      begin = end;
      auto parsed = proto::parse_line(line);
      if (parsed.kind != proto::line_kind::iamat ||
          node.registry_backlogs[node.shard_index(parsed.iam.client_id)]
              ->busy.load(std::memory_order_relaxed))
        return false;
      s.msgs.emplace_back(line, parsed.iam);
    }
    auto conn = conn_.lock();
    if (!conn)
      return false;
    auto lines = static_cast<uint32_t>(s.msgs.size());
    // The session's work, done here: its time counts as the session's.
    metrics::work_scope scope(metrics::counter::fast_path_batches,
                              metrics::actor_kind::client_session);
    metrics::add(metrics::counter::in_iamat, lines);
    metrics::add(metrics::counter::out_at, lines);
    if (node.log_messages)
      s.who = "client#" + std::to_string(conn->id());
    s.out.clear();
    // One shard (the default) takes one list, built here.
    const bool one_shard = node.registry_shards.size() == 1;
    std::vector<location_update> list;
    if (one_shard)
      list.reserve(lines);
    for (auto& [line, msg] : s.msgs) {
      auto at = answer_iamat(
          node, msg, received_ns, s.out,
          one_shard ? list : shard_list(node, s.updates, msg.client_id, lines));
      if (node.log_messages)
        log_iamat_line(s.msglog, received_ns, s.who, line, at);
      s.out += '\n';
    }
    if (one_shard)
      push_to_shard(node, 0, std::string(), std::move(list));
    else
      push_updates(node, std::string(), s.updates, [](size_t) {});
    s.msglog.flush();
    // Written with the round's other replies (see send_after_reads).
    conn->send_after_reads(s.out, lines);
    if (s.out.capacity() > 64 * 1024)
      std::string().swap(s.out); // after a rare large batch
    return true;
  }

  caf::actor_system& sys_;
  std::weak_ptr<net::connection> conn_;
  std::shared_ptr<const node_context> node_;
  client_session_actor session_;
  std::shared_ptr<session_handoff> handoff_; ///< with the session
  uint64_t forwarded_ = 0; ///< line batches and EOF sent to the session
};

} // namespace

client_session_state::~client_session_state() {
  // A session that ends without closing its connection (its actor failed)
  // must not leave the socket open and read: the connection is kept by its
  // io_context's read reactor until it closes.
  if (conn)
    conn->close(net::close_reason::server_close);
  if (node) {
    --node->open_connections;
    metrics::add(metrics::counter::connections_closed);
    metrics::actor_quit(metrics::actor_kind::client_session);
  }
}

std::shared_ptr<net::connection_handler>
make_session_forwarder(caf::actor_system& sys,
                       const std::shared_ptr<net::connection>& conn,
                       std::shared_ptr<const node_context> node) {
  return std::make_shared<session_forwarder>(sys, conn, std::move(node));
}

client_session_actor::behavior_type
client_session(session_ptr self, std::shared_ptr<net::connection> conn,
               std::shared_ptr<const node_context> node,
               std::shared_ptr<session_handoff> handoff) {
  auto& st = self->state;
  st.handoff = std::move(handoff);
  st.msg_name = "client#" + std::to_string(conn->id());
  st.log_name = st.msg_name + " " + conn->remote();
  st.conn = std::move(conn);
  st.node = std::move(node);
  metrics::actor_spawned(metrics::actor_kind::client_session);
  return {
      [self](lines_atom, line_batch& batch) {
        metrics::handler_scope scope(metrics::actor_kind::client_session,
                                     self->mailbox().size());
        ++self->state.batches_handled;
        self->state.batch_lines = batch.ends.size();
        self->state.batch_time = batch.received_ns;
        uint32_t begin = 0;
        for (auto end : batch.ends) {
          handle_line(self,
                      std::string_view(batch.bytes.data() + begin, end - begin),
                      batch.received_ns);
          begin = end;
        }
        self->state.batch_time = 0;
        flush_output(self);
        maybe_finish(self); // a refused peer is closed here
        settle(self);
      },
      [self](eof_atom) {
        ++self->state.batches_handled;
        self->state.eof = true;
        maybe_finish(self);
      },
      [self](closed_atom, const std::string& why) {
        HERD_LOG_INFO("{} connection closed: {}", self->state.log_name, why);
        self->quit();
      },
      [self](places_atom, uint64_t seq, std::string& reply) {
        metrics::handler_scope scope(metrics::actor_kind::client_session, 0);
        metrics::add(metrics::counter::out_whatsat);
        fill_slot(self, seq, std::move(reply));
      },
  };
}

} // namespace herd
