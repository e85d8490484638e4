// The config loader: defaults, overrides and one-line errors.
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

#include "config/config.hpp"

using namespace herd;

namespace {

std::string error_of(const std::string& text) {
  try {
    parse_config(text, "test.json");
  } catch (const config_error& e) {
    return e.what();
  }
  return "(no error)";
}

const char* minimal = R"({"servers": {"A": {"host": "127.0.0.1", "port": 1}}})";

} // namespace

TEST_CASE("the built-in default config is the shipped config file") {
  std::ifstream in(HERD_SOURCE_DIR "/config/herd.json");
  std::ostringstream text;
  text << in.rdbuf();
  CHECK(default_config_text() == text.str());
  auto cfg = default_config();
  CHECK(cfg.servers.size() == 5);
  CHECK(cfg.servers.at("Clark").port == 10003);
  CHECK(cfg.links.size() == 6);
  CHECK(cfg.places.key_env == "GOOGLE_PLACES_API_KEY");
  CHECK(cfg.peer_secret_env == "HERD_PEER_SECRET");
  CHECK(cfg.limits.max_line_bytes == 4096);
}

TEST_CASE("neighbours come from the links in both directions") {
  auto cfg = default_config();
  CHECK(cfg.neighbours("Campbell") ==
        std::vector<std::string>{"Bailey", "Bona", "Jaquez"});
  CHECK(cfg.neighbours("Clark") == std::vector<std::string>{"Jaquez", "Bona"});
}

TEST_CASE("a minimal config gets sane defaults") {
  auto cfg = parse_config(minimal, "test.json");
  CHECK(cfg.threads == 4);
  CHECK(cfg.places.timeout_ms == 5000);
  CHECK(cfg.places.endpoint.rfind("https://maps.googleapis.com/", 0) == 0);
  CHECK(cfg.log_messages);
  CHECK(cfg.iamat_fast_path);
  CHECK(cfg.limits.max_registry_backlog == 2000);
  CHECK(cfg.limits.write_timeout_ms == 60000);
}

TEST_CASE("the write timeout can be set, or turned off with 0, up to a day") {
  auto cfg = parse_config(R"({"servers": {"A": {"host": "h", "port": 1}},
                              "limits": {"write_timeout_ms": 0}})",
                          "test.json");
  CHECK(cfg.limits.write_timeout_ms == 0);
  CHECK(error_of(R"({"servers": {"A": {"host": "h", "port": 1}},
                     "limits": {"write_timeout_ms": 86400001}})")
            .find("key \"limits.write_timeout_ms\"") != std::string::npos);
}

TEST_CASE("the registry backlog limit can be set, or turned off with 0") {
  auto cfg = parse_config(R"({"servers": {"A": {"host": "h", "port": 1}},
                              "limits": {"max_registry_backlog": 0}})",
                          "test.json");
  CHECK(cfg.limits.max_registry_backlog == 0);
  CHECK(error_of(R"({"servers": {"A": {"host": "h", "port": 1}},
                     "limits": {"max_registry_backlog": -1}})")
            .find("key \"limits.max_registry_backlog\"") != std::string::npos);
}

TEST_CASE("the IAMAT fast path can be turned off, with a boolean only") {
  auto cfg = parse_config(R"({"servers": {"A": {"host": "h", "port": 1}},
                              "iamat_fast_path": false})",
                          "test.json");
  CHECK_FALSE(cfg.iamat_fast_path);
  CHECK(error_of(R"({"servers": {"A": {"host": "h", "port": 1}},
                     "iamat_fast_path": "no"})")
            .find("key \"iamat_fast_path\"") != std::string::npos);
}

TEST_CASE("an unknown key is an error naming the file and the key") {
  auto err =
      error_of(R"({"servers": {"A": {"host": "h", "port": 1}}, "thread": 4})");
  CHECK(err == "test.json: key \"thread\": unknown key");
  err = error_of(R"({"servers": {"A": {"host": "h", "port": 1}},
                     "places": {"timeout": 5}})");
  CHECK(err == "test.json: key \"places.timeout\": unknown key");
}

TEST_CASE("a bad value is an error naming the key and the value") {
  CHECK(error_of(R"({"servers": {"A": {"host": "h", "port": 70000}}})") ==
        "test.json: key \"servers.A.port\": value 70000 is out of range "
        "(1 to 65535)");
  CHECK(error_of(R"({"servers": {"A": {"host": "h", "port": "x"}}})") ==
        "test.json: key \"servers.A.port\": value \"x\" is not a "
        "non-negative integer");
  CHECK(error_of(R"({"servers": {"A": {"host": "h", "port": 1}},
                     "threads": 0})") ==
        "test.json: key \"threads\": value 0 is out of range (1 to 1024)");
  CHECK(error_of(R"({"servers": {"A": {"host": "h", "port": 1}},
                     "places": {"endpoint": "ftp://x"}})")
            .find("key \"places.endpoint\": value \"ftp://x\"") !=
        std::string::npos);
}

TEST_CASE("links must name configured servers, once each") {
  auto two = std::string(R"({"servers": {"A": {"host": "h", "port": 1},
                                          "B": {"host": "h", "port": 2}},)");
  CHECK(error_of(two + R"("links": [["A", "C"]]})") ==
        "test.json: key \"links[0]\": value [\"A\",\"C\"] names \"C\", "
        "which is not in servers");
  CHECK(error_of(two + R"("links": [["A", "B"], ["B", "A"]]})")
            .find("repeats a link") != std::string::npos);
  CHECK(error_of(two + R"("links": [["A", "A"]]})").find("itself") !=
        std::string::npos);
}

TEST_CASE("text that is not JSON is an error naming the file") {
  CHECK(error_of("{nope").rfind("test.json: not valid JSON", 0) == 0);
  CHECK(error_of("[]") == "test.json: key \"(top level)\": value [] is not "
                          "an object");
  CHECK(error_of("{}").find("key \"servers\": missing") != std::string::npos);
}

TEST_CASE("the admin endpoint is off unless the config names a port",
          "[admin]") {
  auto cfg = parse_config(minimal, "test.json");
  CHECK_FALSE(cfg.admin.enabled);
  CHECK(cfg.admin.host == "127.0.0.1");
  CHECK(cfg.admin.port == 0);
  CHECK_FALSE(default_config().admin.enabled);
}

TEST_CASE("an admin key with a port turns the endpoint on, on loopback unless "
          "a host is given",
          "[admin]") {
  auto cfg = parse_config(R"({"servers": {"A": {"host": "h", "port": 1}},
                              "admin": {"port": 9100}})",
                          "test.json");
  CHECK(cfg.admin.enabled);
  CHECK(cfg.admin.host == "127.0.0.1");
  CHECK(cfg.admin.port == 9100);
  cfg = parse_config(R"({"servers": {"A": {"host": "h", "port": 1}},
                         "admin": {"host": "::1", "port": 65535}})",
                     "test.json");
  CHECK(cfg.admin.enabled);
  CHECK(cfg.admin.host == "::1");
  CHECK(cfg.admin.port == 65535);
}

TEST_CASE("a bad admin port, host or sub-key is an error naming the key",
          "[admin]") {
  auto with_admin = [](const std::string& admin) {
    return error_of(
        R"({"servers": {"A": {"host": "h", "port": 1}}, "admin": )" + admin +
        "}");
  };
  CHECK(with_admin(R"({"port": 0})") ==
        "test.json: key \"admin.port\": value 0 is out of range (1 to "
        "65535)");
  CHECK(with_admin(R"({"port": 70000})") ==
        "test.json: key \"admin.port\": value 70000 is out of range (1 to "
        "65535)");
  CHECK(with_admin(R"({"port": "9100"})") ==
        "test.json: key \"admin.port\": value \"9100\" is not a "
        "non-negative integer");
  CHECK(with_admin(R"({"host": "127.0.0.1"})") ==
        "test.json: key \"admin.port\": missing: the admin endpoint needs "
        "a port");
  CHECK(with_admin(R"({"host": "localhost", "port": 9100})") ==
        "test.json: key \"admin.host\": value \"localhost\" is not an IPv4 "
        "or IPv6 address");
  CHECK(with_admin(R"({"port": 9100, "path": "/metrics"})") ==
        "test.json: key \"admin.path\": unknown key");
  CHECK(with_admin("9100") ==
        "test.json: key \"admin\": value 9100 is not an object");
}
