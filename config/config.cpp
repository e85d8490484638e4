#include "config/config.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <fstream>
#include <set>
#include <sstream>

#include <boost/json.hpp>

#include "default_config.hpp"

namespace json = boost::json;

namespace herd {

namespace {

/// Reports errors as "<file>: key "<path>": <what>" so one line says where.
class reader {
 public:
  explicit reader(std::string origin) : origin_(std::move(origin)) {}

  [[noreturn]] void fail(const std::string& key,
                         const std::string& what) const {
    throw config_error(origin_ + ": key \"" + key + "\": " + what);
  }

  [[noreturn]] void fail_value(const std::string& key, const json::value& v,
                               const std::string& what) const {
    fail(key, "value " + json::serialize(v) + " " + what);
  }

  const json::object& object(const json::value& v,
                             const std::string& key) const {
    if (!v.is_object())
      fail_value(key, v, "is not an object");
    return v.get_object();
  }

  std::string string(const json::value& v, const std::string& key) const {
    if (!v.is_string())
      fail_value(key, v, "is not a string");
    return std::string(v.get_string());
  }

  bool boolean(const json::value& v, const std::string& key) const {
    if (!v.is_bool())
      fail_value(key, v, "is not true or false");
    return v.get_bool();
  }

  uint64_t integer(const json::value& v, const std::string& key, uint64_t lo,
                   uint64_t hi) const {
    uint64_t x = 0;
    if (v.is_uint64())
      x = v.get_uint64();
    else if (v.is_int64() && v.get_int64() >= 0)
      x = static_cast<uint64_t>(v.get_int64());
    else
      fail_value(key, v, "is not a non-negative integer");
    if (x < lo || x > hi)
      fail_value(key, v,
                 "is out of range (" + std::to_string(lo) + " to " +
                     std::to_string(hi) + ")");
    return x;
  }

  void only_keys(const json::object& obj, const std::string& where,
                 std::initializer_list<const char*> allowed) const {
    for (const auto& kv : obj) {
      bool known = false;
      for (auto name : allowed)
        known = known || kv.key() == name;
      if (!known) {
        std::string key = where.empty() ? std::string(kv.key())
                                        : where + "." + std::string(kv.key());
        fail(key, "unknown key");
      }
    }
  }

 private:
  std::string origin_;
};

std::string join(const std::string& a, const char* b) {
  return a + "." + b;
}

void read_places(const reader& r, const json::value& v, places_config& out) {
  const std::string at = "places";
  auto& obj = r.object(v, at);
  r.only_keys(
      obj, at,
      {"api", "endpoint", "key_env", "ca_file", "timeout_ms", "max_in_flight"});
  if (auto* x = obj.if_contains("api")) {
    out.api = r.string(*x, join(at, "api"));
    if (out.api != "legacy")
      r.fail_value(join(at, "api"), *x,
                   "is not a supported Places API (supported: \"legacy\")");
  }
  if (auto* x = obj.if_contains("endpoint")) {
    out.endpoint = r.string(*x, join(at, "endpoint"));
    if (out.endpoint.rfind("http://", 0) != 0 &&
        out.endpoint.rfind("https://", 0) != 0)
      r.fail_value(join(at, "endpoint"), *x,
                   "is not an http:// or https:// URL");
  }
  if (auto* x = obj.if_contains("key_env"))
    out.key_env = r.string(*x, join(at, "key_env"));
  if (auto* x = obj.if_contains("ca_file"))
    out.ca_file = r.string(*x, join(at, "ca_file"));
  if (auto* x = obj.if_contains("timeout_ms"))
    out.timeout_ms =
        static_cast<uint32_t>(r.integer(*x, join(at, "timeout_ms"), 1, 600000));
  if (auto* x = obj.if_contains("max_in_flight"))
    out.max_in_flight = static_cast<uint32_t>(
        r.integer(*x, join(at, "max_in_flight"), 0, 1 << 20));
}

void read_limits(const reader& r, const json::value& v, limits_config& out) {
  const std::string at = "limits";
  auto& obj = r.object(v, at);
  r.only_keys(obj, at,
              {"max_line_bytes", "max_pending_lines", "max_output_bytes",
               "write_timeout_ms", "max_connections", "max_peer_output_bytes",
               "max_registry_backlog"});
  auto u32 = [&](const char* name, uint32_t& field, uint64_t lo, uint64_t hi) {
    if (auto* x = obj.if_contains(name))
      field = static_cast<uint32_t>(r.integer(*x, join(at, name), lo, hi));
  };
  u32("max_line_bytes", out.max_line_bytes, 64, 1 << 24);
  u32("max_pending_lines", out.max_pending_lines, 1, 1 << 20);
  u32("max_output_bytes", out.max_output_bytes, 4096, 1u << 30);
  u32("write_timeout_ms", out.write_timeout_ms, 0, 86'400'000);
  u32("max_connections", out.max_connections, 1, 1 << 22);
  u32("max_peer_output_bytes", out.max_peer_output_bytes, 65536, 1u << 31);
  u32("max_registry_backlog", out.max_registry_backlog, 0, 1u << 30);
}

void read_admin(const reader& r, const json::value& v, admin_config& out) {
  const std::string at = "admin";
  auto& obj = r.object(v, at);
  r.only_keys(obj, at, {"host", "port"});
  if (auto* x = obj.if_contains("host")) {
    out.host = r.string(*x, join(at, "host"));
    unsigned char addr[sizeof(in6_addr)];
    if (inet_pton(AF_INET, out.host.c_str(), addr) != 1 &&
        inet_pton(AF_INET6, out.host.c_str(), addr) != 1)
      r.fail_value(join(at, "host"), *x, "is not an IPv4 or IPv6 address");
  }
  if (auto* x = obj.if_contains("port"))
    out.port = static_cast<uint16_t>(r.integer(*x, join(at, "port"), 1, 65535));
  else
    r.fail(join(at, "port"), "missing: the admin endpoint needs a port");
  out.enabled = true;
}

} // namespace

std::vector<std::string>
herd_config::neighbours(const std::string& name) const {
  std::vector<std::string> result;
  for (auto& [a, b] : links) {
    if (a == name)
      result.push_back(b);
    else if (b == name)
      result.push_back(a);
  }
  return result;
}

herd_config parse_config(const std::string& text, const std::string& origin) {
  reader r(origin);
  json::error_code ec;
  json::value root = json::parse(text, ec);
  if (ec)
    throw config_error(origin + ": not valid JSON: " + ec.message());
  auto& obj = r.object(root, "(top level)");
  r.only_keys(obj, "",
              {"servers", "links", "places", "threads", "io_threads",
               "registry_shards", "log_dir", "log_messages", "iamat_fast_path",
               "peer_secret_env", "limits", "metrics_interval_s", "admin"});
  herd_config cfg;
  auto* servers = obj.if_contains("servers");
  if (!servers)
    r.fail("servers", "missing: the config must name at least one server");
  auto& sobj = r.object(*servers, "servers");
  if (sobj.empty())
    r.fail("servers", "is empty: the config must name at least one server");
  for (auto& kv : sobj) {
    std::string name(kv.key());
    std::string at = "servers." + name;
    if (name.empty() || name.find_first_of(" \t\r\n\v\f") != std::string::npos)
      r.fail(at, "a server name must be non-empty and free of white space");
    auto& s = r.object(kv.value(), at);
    r.only_keys(s, at, {"host", "port"});
    server_address addr;
    if (auto* h = s.if_contains("host"))
      addr.host = r.string(*h, at + ".host");
    else
      r.fail(at + ".host", "missing");
    if (addr.host.empty())
      r.fail(at + ".host", "is empty");
    if (auto* p = s.if_contains("port"))
      addr.port = static_cast<uint16_t>(r.integer(*p, at + ".port", 1, 65535));
    else
      r.fail(at + ".port", "missing");
    cfg.servers.emplace(name, addr);
  }
  if (auto* links = obj.if_contains("links")) {
    if (!links->is_array())
      r.fail_value("links", *links, "is not an array of [name, name] pairs");
    std::set<std::pair<std::string, std::string>> seen;
    size_t i = 0;
    for (auto& l : links->get_array()) {
      std::string at = "links[" + std::to_string(i++) + "]";
      if (!l.is_array() || l.get_array().size() != 2 ||
          !l.get_array()[0].is_string() || !l.get_array()[1].is_string())
        r.fail_value(at, l, "is not a [name, name] pair");
      std::string a(l.get_array()[0].get_string());
      std::string b(l.get_array()[1].get_string());
      for (auto* n : {&a, &b})
        if (cfg.servers.count(*n) == 0)
          r.fail_value(at, l, "names \"" + *n + "\", which is not in servers");
      if (a == b)
        r.fail_value(at, l, "links a server to itself");
      auto key = a < b ? std::make_pair(a, b) : std::make_pair(b, a);
      if (!seen.insert(key).second)
        r.fail_value(at, l, "repeats a link");
      cfg.links.emplace_back(a, b);
    }
  }
  if (auto* x = obj.if_contains("places"))
    read_places(r, *x, cfg.places);
  if (auto* x = obj.if_contains("threads"))
    cfg.threads = static_cast<uint32_t>(r.integer(*x, "threads", 1, 1024));
  if (auto* x = obj.if_contains("io_threads"))
    cfg.io_threads = static_cast<uint32_t>(r.integer(*x, "io_threads", 0, 256));
  if (auto* x = obj.if_contains("registry_shards"))
    cfg.registry_shards =
        static_cast<uint32_t>(r.integer(*x, "registry_shards", 1, 256));
  if (auto* x = obj.if_contains("log_dir"))
    cfg.log_dir = r.string(*x, "log_dir");
  if (cfg.log_dir.empty())
    r.fail("log_dir", "is empty");
  if (auto* x = obj.if_contains("log_messages"))
    cfg.log_messages = r.boolean(*x, "log_messages");
  if (auto* x = obj.if_contains("iamat_fast_path"))
    cfg.iamat_fast_path = r.boolean(*x, "iamat_fast_path");
  if (auto* x = obj.if_contains("metrics_interval_s"))
    cfg.metrics_interval_s =
        static_cast<uint32_t>(r.integer(*x, "metrics_interval_s", 0, 86400));
  if (auto* x = obj.if_contains("peer_secret_env"))
    cfg.peer_secret_env = r.string(*x, "peer_secret_env");
  if (auto* x = obj.if_contains("limits"))
    read_limits(r, *x, cfg.limits);
  if (auto* x = obj.if_contains("admin"))
    read_admin(r, *x, cfg.admin);
  return cfg;
}

herd_config load_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw config_error(path + ": cannot be read");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path);
}

const std::string& default_config_text() {
  static const std::string text = detail::default_config_json;
  return text;
}

herd_config default_config() {
  return parse_config(default_config_text(), "(built-in default config)");
}

} // namespace herd
