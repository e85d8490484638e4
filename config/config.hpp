// The herd's configuration as a plain struct, and its loader. The loader
// rejects unknown keys and reports the file, key and value at fault in one
// line, so an operator can fix a config without reading code.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace herd {

struct server_address {
  std::string host;
  uint16_t port = 0;
};

struct places_config {
  std::string api = "legacy"; ///< only "legacy" for now
  std::string endpoint =
      "https://maps.googleapis.com/maps/api/place/nearbysearch/json";
  std::string key_env = "GOOGLE_PLACES_API_KEY";
  std::string ca_file; ///< empty: the system CA store
  uint32_t timeout_ms = 5000;
  /// Requests upstream at once; more wait their turn (0: no limit).
  uint32_t max_in_flight = 512;
};

struct limits_config {
  uint32_t max_line_bytes = 4096;      ///< longer line: connection closed
  uint32_t max_pending_lines = 256;    ///< unanswered lines before reads pause
  uint32_t max_output_bytes = 4 << 20; ///< queued reply bytes: slow reader cut
  /// Queued output with no byte written for this long: slow reader cut
  /// (0: never).
  uint32_t write_timeout_ms = 60000;
  uint32_t max_connections = 20000; ///< accepted connections at once
  /// Unwritten bytes to one neighbour before its link is dropped (and the
  /// neighbour caught up later).
  uint32_t max_peer_output_bytes = 64u << 20;
  /// Messages waiting in a registry shard's mailbox above which the
  /// sessions that send it updates hold their replies until it has caught
  /// up (0: no bound).
  uint32_t max_registry_backlog = 2000;
};

/// The optional admin HTTP endpoint (GET /metrics, GET /healthz). Off unless
/// the config has an "admin" key with a port.
struct admin_config {
  bool enabled = false;
  std::string host = "127.0.0.1"; ///< an IP address; loopback by default
  uint16_t port = 0;
};

struct herd_config {
  std::map<std::string, server_address> servers;
  std::vector<std::pair<std::string, std::string>> links;
  places_config places;
  uint32_t threads = 4;    ///< CAF scheduler worker threads
  uint32_t io_threads = 0; ///< own Asio threads; 0: the scheduler runs sockets
  uint32_t registry_shards = 1;
  std::string log_dir = "logs";
  bool log_messages = true; ///< one log line per message in and out
  /// An idle session's IAMAT batches answered on the thread that read them.
  bool iamat_fast_path = true;
  uint32_t metrics_interval_s = 10; ///< metrics log line period; 0: off
  std::string peer_secret_env = "HERD_PEER_SECRET";
  limits_config limits;
  admin_config admin;

  /// Names of the neighbours of `name`, in config order.
  std::vector<std::string> neighbours(const std::string& name) const;
};

/// Thrown by the loader; what() is the one line for stderr.
struct config_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Parses `text` (the contents of `origin`, a file name used in messages).
herd_config parse_config(const std::string& text, const std::string& origin);

/// Reads and parses a file.
herd_config load_config_file(const std::string& path);

/// The built-in default: the same text as config/herd.json.
herd_config default_config();

/// The built-in default's text.
const std::string& default_config_text();

} // namespace herd
