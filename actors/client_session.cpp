#include "actors/client_session.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/places_request.hpp"
#include "net/logging.hpp"
#include "net/protocol.hpp"

namespace herd {

namespace {

using session_ptr
  = client_session_actor::stateful_pointer<client_session_state>;

/// Hands every queued update to its registry shard. Called before a lookup
/// and before replies are written, so that an acknowledged IAMAT is always
/// in the registry's mailbox ahead of anything that could observe it.
void flush_updates(session_ptr self) {
  auto& st = self->state;
  for (size_t i = 0; i < st.updates.size(); ++i) {
    if (st.updates[i].empty())
      continue;
    self->send(st.node->registry_shards[i], update_atom::value, std::string{},
               std::move(st.updates[i]));
    st.updates[i] = {};
  }
}

/// Writes every reply that is ready, in order, in one send.
void flush_output(session_ptr self) {
  auto& st = self->state;
  flush_updates(self);
  if (st.out.empty() && st.out_lines == 0)
    return;
  st.conn->send(std::move(st.out), st.out_lines);
  st.out = {};
  st.out_lines = 0;
}

void log_out(session_ptr self, std::string_view reply) {
  if (!self->state.node->log_messages)
    return;
  while (!reply.empty() && reply.back() == '\n')
    reply.remove_suffix(1);
  HERD_LOG_INFO("{} out: {}", self->state.log_name, log::escape(reply));
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
  if (st.eof && st.waiting.empty()) {
    flush_output(self);
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
    st.out += st.waiting.front().bytes;
    ++st.out_lines;
    st.waiting.pop_front();
    ++st.first_waiting;
  }
  flush_output(self);
  maybe_finish(self);
}

void handle_whatsat(session_ptr self, const proto::whatsat& msg,
                    std::string_view line) {
  auto& st = self->state;
  flush_updates(self); // the lookup must see this connection's IAMATs
  auto seq = reserve_slot(self);
  places_query query;
  query.radius_m = msg.radius_m;
  query.bound = msg.bound;
  self
    ->request(st.node->shard_for(msg.client_id), caf::infinite,
              lookup_atom::value, std::string(msg.client_id))
    .then(
      [self, seq, query = std::move(query),
       line = std::string(line)](lookup_result& found) mutable {
        if (!found.found) {
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
        HERD_LOG_ERROR("{} registry lookup failed: {}", self->state.log_name,
                       caf::to_string(err));
        std::string reply;
        proto::append_invalid(reply, line);
        fill_slot(self, seq, std::move(reply));
      });
}

/// `line` comes without its terminator (the connection strips "\n" or
/// "\r\n"), so it is echoed as it is in a "? " reply.
void handle_line(session_ptr self, std::string_view line,
                 int64_t received_ns) {
  auto& st = self->state;
  auto parsed = proto::parse_line(line);
  if (parsed.kind == proto::line_kind::blank) {
    ++st.out_lines; // nothing to say, but the line is answered
    return;
  }
  if (st.node->log_messages)
    HERD_LOG_INFO("{} in: {}", st.log_name, log::escape(line));
  std::string reply;
  switch (parsed.kind) {
    case proto::line_kind::iamat: {
      auto& msg = parsed.iam;
      proto::append_at(reply, st.node->server_name,
                       received_ns - msg.time_ns, msg);
      auto shard = st.node->shard_index(msg.client_id);
      st.updates[shard].push_back(
        {std::string(msg.client_id), msg.time_ns, reply});
      reply += '\n';
      emit(self, reply);
      return;
    }
    case proto::line_kind::whatsat:
      handle_whatsat(self, parsed.wh, line);
      return;
    default:
      // Malformed lines, and AT lines: only an authenticated peer may send
      // those, and a client connection is not one.
      proto::append_invalid(reply, line);
      emit(self, reply);
      return;
  }
}

class session_forwarder : public net::connection_handler {
public:
  explicit session_forwarder(client_session_actor session)
    : session_(std::move(session)) {
  }

  void on_lines(std::string bytes, std::vector<uint32_t> ends,
                int64_t received_ns) override {
    caf::anon_send(session_, lines_atom::value,
                   line_batch{std::move(bytes), std::move(ends), received_ns});
  }

  void on_eof() override {
    caf::anon_send(session_, eof_atom::value);
  }

  void on_closed(net::close_reason why) override {
    caf::anon_send(session_, closed_atom::value,
                   std::string(net::to_string(why)));
  }

private:
  client_session_actor session_;
};

} // namespace

std::shared_ptr<net::connection_handler>
make_session_forwarder(client_session_actor session) {
  return std::make_shared<session_forwarder>(std::move(session));
}

client_session_actor::behavior_type
client_session(session_ptr self, std::shared_ptr<net::connection> conn,
               std::shared_ptr<const node_context> node) {
  auto& st = self->state;
  st.log_name = "client#" + std::to_string(conn->id()) + " " + conn->remote();
  st.conn = std::move(conn);
  st.updates.resize(node->registry_shards.size());
  st.node = std::move(node);
  HERD_LOG_INFO("{} connection opened", st.log_name);
  return {
    [self](lines_atom, line_batch& batch) {
      uint32_t begin = 0;
      for (auto end : batch.ends) {
        handle_line(self,
                    std::string_view(batch.bytes.data() + begin, end - begin),
                    batch.received_ns);
        begin = end;
      }
      flush_output(self);
    },
    [self](eof_atom) {
      self->state.eof = true;
      maybe_finish(self);
    },
    [self](closed_atom, const std::string& why) {
      HERD_LOG_INFO("{} connection closed: {}", self->state.log_name, why);
      self->quit();
    },
    [self](places_atom, uint64_t seq, std::string& reply) {
      fill_slot(self, seq, std::move(reply));
    },
  };
}

} // namespace herd
