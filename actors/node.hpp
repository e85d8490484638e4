// The node: wires the actor system, the io threads, the registry, the Places
// client and the listener for one named server, and runs until a signal.
#pragma once

#include <string>

#include "config/config.hpp"

namespace herd {

struct node_options {
  std::string name;          ///< this server's name in cfg.servers
  herd_config cfg;           ///< with command-line overrides applied
  std::string config_origin; ///< file name (or built-in) for messages
};

/// Runs the node until SIGINT or SIGTERM. Returns the process exit code:
/// 0 after a signal, 1 when start-up fails (the reason is on stderr).
int run_node(const node_options& opts);

} // namespace herd
