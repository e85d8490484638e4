#include "actors/node.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>

#include <boost/asio/signal_set.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/client_session.hpp"
#include "actors/io_scheduler.hpp"
#include "actors/location_registry.hpp"
#include "actors/metrics.hpp"
#include "actors/node_context.hpp"
#include "actors/peer_link.hpp"
#include "net/admin_server.hpp"
#include "net/logging.hpp"
#include "net/metrics.hpp"
#include "net/peer_protocol.hpp"
#include "net/tcp_server.hpp"

namespace asio = boost::asio;

namespace herd {

namespace {

std::string env_or_empty(const std::string& name) {
  if (name.empty())
    return {};
  const char* v = std::getenv(name.c_str());
  return v != nullptr ? std::string(v) : std::string{};
}

} // namespace

int run_node(const node_options& opts) {
  const auto& cfg = opts.cfg;
  const auto& self_addr = cfg.servers.at(opts.name);

  try {
    log::open(cfg.log_dir, opts.name);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "herd-node: %s\n", e.what());
    return 1;
  }
  HERD_LOG_INFO("node {} starting: config {}, {} scheduler threads, {} io "
                "threads, {} registry shard(s)",
                opts.name, opts.config_origin, cfg.threads, cfg.io_threads,
                cfg.registry_shards);

  // Membership: with no secret, a herd may only run on one machine.
  std::string secret = env_or_empty(cfg.peer_secret_env);
  if (secret.empty()) {
    for (auto& [name, addr] : cfg.servers) {
      if (!peer::is_loopback_host(addr.host)) {
        std::fprintf(stderr,
                     "herd-node: %s: key \"servers.%s.host\": value \"%s\" "
                     "is not a loopback address, and no peer secret is set "
                     "(environment variable %s, named by \"peer_secret_env\"); "
                     "refusing to run an unauthenticated herd across hosts\n",
                     opts.config_origin.c_str(), name.c_str(),
                     addr.host.c_str(), cfg.peer_secret_env.c_str());
        HERD_LOG_ERROR("no peer secret and server {} is not on loopback: "
                       "refusing to start",
                       name);
        log::close();
        return 2;
      }
    }
    HERD_LOG_WARN("no peer secret in {}: peers are unauthenticated (allowed "
                  "because every server is on loopback)",
                  cfg.peer_secret_env);
  } else {
    HERD_LOG_INFO("peer secret read from {}: peer connections must "
                  "authenticate",
                  cfg.peer_secret_env);
  }

  caf::actor_system_config sys_cfg;
  sys_cfg.set("scheduler.max-threads", static_cast<size_t>(cfg.threads));
  sys_cfg.set("scheduler.max-throughput", actor_turn_messages);
  sys_cfg.add_message_types<caf::id_block::herd>();
  // io_threads 0: the scheduler's workers run the sockets themselves.
  if (cfg.io_threads == 0)
    use_io_scheduler(sys_cfg);
  caf::actor_system sys{sys_cfg};
  // Shutdown does not wait for sessions: see the end of this function.
  sys.await_actors_before_shutdown(false);

  net::io_pool pool = cfg.io_threads == 0
                          ? net::io_pool(worker_io_contexts(sys))
                          : net::io_pool(cfg.io_threads);

  auto ctx = std::make_shared<node_context>();
  ctx->server_name = opts.name;
  ctx->log_messages = cfg.log_messages;
  ctx->iamat_fast_path = cfg.iamat_fast_path;
  ctx->peer_secret = std::move(secret);
  ctx->neighbours = cfg.neighbours(opts.name);
  ctx->io = &pool;
  for (uint32_t i = 0; i < cfg.registry_shards; ++i) {
    ctx->registry_backlogs.push_back(
        std::make_shared<registry_backlog>(cfg.limits.max_registry_backlog));
    ctx->registry_shards.push_back(
        sys.spawn(location_registry, ctx->registry_backlogs.back()));
  }

  net::places_settings places;
  places.endpoint = cfg.places.endpoint;
  places.api_key = env_or_empty(cfg.places.key_env);
  places.ca_file = cfg.places.ca_file;
  places.timeout = std::chrono::milliseconds(cfg.places.timeout_ms);
  places.max_in_flight = cfg.places.max_in_flight;
  if (places.api_key.empty())
    HERD_LOG_WARN("places: environment variable {} is not set; upstream will "
                  "answer REQUEST_DENIED",
                  cfg.places.key_env);
  try {
    // New upstream connections go round the io_contexts, so TLS and HTTP
    // work spreads over the threads that run sockets.
    ctx->places = std::make_shared<net::places_client>(
        [&pool]() -> asio::io_context& { return pool.next(); },
        std::move(places));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "herd-node: %s: key \"places\": %s\n",
                 opts.config_origin.c_str(), e.what());
    HERD_LOG_ERROR("places client: {}", e.what());
    log::close();
    return 2;
  }
  HERD_LOG_INFO("places: {} API at {}", cfg.places.api,
                ctx->places->endpoint());
  metrics::set_places_source(
      [places = std::weak_ptr<net::places_client>(ctx->places)] {
        auto client = places.lock();
        if (!client)
          return metrics::places_load{};
        auto s = client->stats();
        return metrics::places_load{s.in_flight, s.waiting, s.waited};
      });

  net::connection_limits limits;
  limits.max_line_bytes = cfg.limits.max_line_bytes;
  limits.max_pending_lines = cfg.limits.max_pending_lines;
  limits.max_output_bytes = cfg.limits.max_output_bytes;
  limits.write_timeout_ms = cfg.limits.write_timeout_ms;
  const uint32_t max_connections = cfg.limits.max_connections;
  ctx->limits = limits;
  ctx->peer_output_limit = cfg.limits.max_peer_output_bytes;

  asio::io_context main_ctx(1);
  asio::signal_set signals(main_ctx, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (!ec)
      HERD_LOG_INFO("node {} stopping on signal {}", opts.name, sig);
  });
  std::atomic<uint64_t> next_id{1};
  std::shared_ptr<net::listener> server;
  try {
    asio::ip::tcp::endpoint where(asio::ip::make_address(self_addr.host),
                                  self_addr.port);
    server = std::make_shared<net::listener>(
        pool.at(0), pool, where,
        [&sys, ctx, limits, &next_id,
         max_connections](asio::ip::tcp::socket socket) {
          auto id = next_id.fetch_add(1, std::memory_order_relaxed);
          if (ctx->open_connections.load() >= max_connections) {
            HERD_LOG_WARN("client#{} refused: {} connections open (limit)", id,
                          max_connections);
            metrics::add(metrics::counter::connections_refused);
            return; // the socket closes as it goes out of scope
          }
          ++ctx->open_connections;
          metrics::add(metrics::counter::connections_accepted);
          auto conn =
              std::make_shared<net::connection>(std::move(socket), limits, id);
          HERD_LOG_INFO("client#{} {} connection opened", id, conn->remote());
          // The session, spawned on the first bytes, counts the connection
          // down when it ends.
          conn->start(make_session_forwarder(sys, conn, ctx));
        });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "herd-node: cannot listen on %s:%u: %s\n",
                 self_addr.host.c_str(), self_addr.port, e.what());
    HERD_LOG_ERROR("cannot listen on {}:{}: {}", self_addr.host, self_addr.port,
                   e.what());
    log::close();
    return 1;
  }

  // One link per neighbour; the registry floods through them.
  const std::vector<std::string> link_names = ctx->neighbours;

  // The admin endpoint reads the metrics itself: take_snapshot locks only a
  // registration mutex and reads relaxed atomics, so any thread may call it.
  std::unique_ptr<net::admin_server> admin;
  if (cfg.admin.enabled) {
    try {
      admin = std::make_unique<net::admin_server>(
          pool.at(0), cfg.admin.host, cfg.admin.port,
          [name = opts.name, link_names] {
            return format_prometheus(name, metrics::take_snapshot(), link_names,
                                     link_states(link_names.size()));
          });
    } catch (const std::exception& e) {
      std::fprintf(stderr,
                   "herd-node: %s: key \"admin.port\": cannot listen on "
                   "%s:%u for the admin endpoint: %s\n",
                   opts.config_origin.c_str(), cfg.admin.host.c_str(),
                   cfg.admin.port, e.what());
      HERD_LOG_ERROR("cannot listen on {}:{} for the admin endpoint: {}",
                     cfg.admin.host, cfg.admin.port, e.what());
      log::close();
      return 1;
    }
  }

  server->start();
  pool.start();

  std::vector<peer_link_actor> links;
  for (auto& n : ctx->neighbours) {
    links.push_back(sys.spawn(peer_link,
                              std::shared_ptr<const node_context>(ctx), n,
                              links.size(), cfg.servers.at(n)));
  }
  for (auto& shard : ctx->registry_shards)
    caf::anon_send(shard, peers_atom::value, link_names, links);
  auto reporter =
      sys.spawn(metrics_reporter, opts.name,
                std::chrono::seconds(cfg.metrics_interval_s), link_names);
  HERD_LOG_INFO("node {} listening on {}:{}", opts.name, self_addr.host,
                server->port());
  if (admin) {
    bool v6 = cfg.admin.host.find(':') != std::string::npos;
    HERD_LOG_INFO("admin endpoint on http://{}{}{}:{} (/metrics, /healthz)",
                  v6 ? "[" : "", cfg.admin.host, v6 ? "]" : "", admin->port());
    if (!peer::is_loopback_host(cfg.admin.host))
      HERD_LOG_WARN("admin endpoint on {} is not on loopback: /metrics and "
                    "/healthz answer anyone who can reach it",
                    cfg.admin.host);
  }

  main_ctx.run();

  server->stop();
  if (admin)
    admin->stop();
  pool.stop();
  for (auto& shard : ctx->registry_shards)
    caf::anon_send_exit(shard, caf::exit_reason::user_shutdown);
  HERD_LOG_INFO("node {} stopped", opts.name);
  log::close();
  // Everything durable (the log) is flushed. The registry lives in memory
  // only, and the kernel closes every socket; tearing down thousands of
  // sessions one by one would only delay the exit an operator asked for.
  std::fflush(nullptr);
  std::_Exit(0);
}

} // namespace herd
