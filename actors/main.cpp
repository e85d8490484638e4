// herd-node: one server of the herd.
#include <malloc.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "actors/node.hpp"
#include "config/config.hpp"

namespace {

constexpr const char* usage = R"(usage: herd-node NAME [options]

Starts the herd server NAME, as named in the config's "servers".

options:
  --config FILE      read the herd config from FILE (JSON) instead of the
                     built-in default (the same as config/herd.json)
  --threads N        CAF scheduler worker threads (overrides "threads")
  --io-threads N     socket I/O threads of their own (overrides "io_threads");
                     0: the scheduler threads run the sockets too
  --log-dir DIR      directory of the log file NAME.log (overrides "log_dir")
  --quiet            no per-message log lines (overrides "log_messages")
  --print-config     print the built-in default config and exit
  --help             this text

Environment: the Places API key is read from the variable that the config's
places.key_env names (default GOOGLE_PLACES_API_KEY); the peer secret from the
one peer_secret_env names (default HERD_PEER_SECRET). Neither is ever logged.

Exit codes: 0 after SIGINT or SIGTERM, 1 when the node cannot start (port in
use, log directory not writable), 2 for a bad command line or config.
)";

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "herd-node: %s\n", message.c_str());
  std::exit(2);
}

uint32_t parse_count(std::string_view option, const char* text, uint32_t max,
                     uint32_t min = 1) {
  char* end = nullptr;
  errno = 0;
  unsigned long v = std::strtoul(text, &end, 10);
  if (*text == '\0' || *end != '\0' || errno != 0 || v < min || v > max ||
      *text == '-' || *text == '+')
    die(std::string(option) + ": \"" + text + "\" is not a number from " +
        std::to_string(min) + " to " + std::to_string(max));
  return static_cast<uint32_t>(v);
}

} // namespace

int main(int argc, char** argv) {
#if !defined(HERD_JEMALLOC)
  // Built with glibc's malloc (no jemalloc, which keeps freed pages a while
  // on its own): keep freed heap memory for reuse instead of returning it
  // to the kernel after every large free. A node frees a 40 KB Places body
  // per WHATSAT, and glibc's default (trim above 128 KB free, adjusted on
  // the fly) made every next body fault its pages in again, a tenth of a
  // WHATSAT's cost. Memory still goes back once 64 MB lie free at the top
  // of the heap.
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
  std::string name, config_file, log_dir;
  uint32_t threads = 0;
  int64_t io_threads = -1; // -1: as the config says
  bool quiet = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc)
        die(std::string(arg) + " needs a value (see --help)");
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(usage, stdout);
      return 0;
    } else if (arg == "--print-config") {
      std::fputs(herd::default_config_text().c_str(), stdout);
      return 0;
    } else if (arg == "--config") {
      config_file = value();
    } else if (arg == "--threads") {
      threads = parse_count(arg, value(), 1024);
    } else if (arg == "--io-threads") {
      io_threads = parse_count(arg, value(), 256, 0);
    } else if (arg == "--log-dir") {
      log_dir = value();
      if (log_dir.empty())
        die("--log-dir: the directory name is empty");
    } else if (arg == "--quiet") {
      quiet = true;
    } else if (arg.size() > 1 && arg[0] == '-') {
      die("unknown option " + std::string(arg) + " (see --help)");
    } else if (name.empty()) {
      name = arg;
    } else {
      die("more than one server name given: " + name + " and " +
          std::string(arg));
    }
  }
  if (name.empty())
    die("no server name given (usage: herd-node NAME [options]; see --help)");

  herd::node_options opts;
  opts.name = name;
  try {
    if (config_file.empty()) {
      opts.cfg = herd::default_config();
      opts.config_origin = "(built-in default config)";
    } else {
      opts.cfg = herd::load_config_file(config_file);
      opts.config_origin = config_file;
    }
  } catch (const herd::config_error& e) {
    die(e.what());
  }
  if (opts.cfg.servers.count(name) == 0) {
    std::string known;
    for (auto& [n, addr] : opts.cfg.servers)
      known += (known.empty() ? "" : ", ") + n;
    die(opts.config_origin + ": unknown server name \"" + name +
        "\" (key \"servers\" names: " + known + ")");
  }
  if (threads != 0)
    opts.cfg.threads = threads;
  if (io_threads >= 0)
    opts.cfg.io_threads = static_cast<uint32_t>(io_threads);
  if (!log_dir.empty())
    opts.cfg.log_dir = log_dir;
  if (quiet)
    opts.cfg.log_messages = false;
  return herd::run_node(opts);
}
