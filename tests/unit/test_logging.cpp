// Log lines: one client line is always one log line, whatever its bytes.
#include <catch2/catch.hpp>

#include <fmt/format.h>

#include "net/logging.hpp"

using namespace herd;

TEST_CASE("control bytes, DEL and backslashes are escaped in log text") {
  CHECK(log::escape("plain text, émoji 🥝") == "plain text, émoji 🥝");
  CHECK(log::escape(std::string_view("a\nb\rc\0d", 7)) ==
        "a\\x0ab\\x0dc\\x00d");
  CHECK(log::escape("tab\there\x7f") == "tab\\x09here\\x7f");
  CHECK(log::escape("back\\slash") == "back\\\\slash");
  CHECK_FALSE(log::needs_escape("IAMAT kiwi +34.068930-118.445127 1.5"));
  CHECK(log::needs_escape("x\n"));
}

TEST_CASE("the escaped formatter writes what escape returns") {
  std::string_view text("in\x01 \\ out\n", 10);
  CHECK(fmt::format("{}", log::escaped{text}) == log::escape(text));
  CHECK(fmt::format("[{}]", log::escaped{"clean"}) == "[clean]");
}
