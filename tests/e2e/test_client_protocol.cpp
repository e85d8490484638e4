// The client side of the protocol against a real herd-node: IAMAT, framing,
// invalid lines, connection handling, the command line and the log.
#include <catch2/catch.hpp>

#include "harness.hpp"

#include <csignal>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace e2e;

namespace {

const std::string kiwi = "kiwi.cs.ucla.edu";
const std::string ucla = "+34.068930-118.445127";
const std::string old_time = "1621464827.959498503";

/// One node "Alpha" with the given config tweaks; no Places upstream.
struct one_node {
  temp_dir dir;
  herd h;
  explicit one_node(config_spec spec = single_node_config())
      : h(dir, std::move(spec)) {
    h.start("Alpha");
  }
  std::uint16_t port() const { return h.port("Alpha"); }
};

/// Checks an AT reply (with its '\n') field by field; returns the time
/// difference in nanoseconds.
int64_t check_at_reply(const std::string& reply, const std::string& server,
                       const std::string& client_id,
                       const std::string& location, const std::string& time) {
  INFO("reply: \"" << printable(reply) << "\"");
  REQUIRE(!reply.empty());
  REQUIRE(reply.back() == '\n');
  auto at = parse_at(std::string_view(reply).substr(0, reply.size() - 1));
  REQUIRE(at.has_value());
  CHECK(at->server == server);
  CHECK(at->client_id == client_id);
  CHECK(at->location == location);
  CHECK(at->time == time);
  auto diff = parse_diff_ns(at->diff);
  INFO("time difference: " << at->diff);
  REQUIRE(diff.has_value());
  CHECK(reply == "AT " + server + " " + at->diff + " " + client_id + " " +
                     location + " " + time + "\n");
  return *diff;
}

/// Sends one IAMAT with the given time text and checks that the time
/// difference lies between what the server could have seen; returns it.
std::string check_time_difference(const std::string& time) {
  one_node n;
  client c(n.port());
  int64_t client_ns = parse_time_ns(time);
  int64_t before = now_ns();
  c.send(iamat(kiwi, ucla, time));
  auto reply = c.read_line();
  int64_t after = now_ns();
  auto diff = check_at_reply(reply, "Alpha", kiwi, ucla, time);
  CHECK(diff >= before - client_ns);
  CHECK(diff <= after - client_ns);
  auto at = parse_at(reply.substr(0, reply.size() - 1));
  return at ? at->diff : std::string();
}

} // namespace

TEST_CASE("an IAMAT with a current time gets an AT line with a small positive "
          "time difference") {
  int64_t t = now_ns();
  std::string time = time_text(t, 9);
  one_node n;
  client c(n.port());
  c.send(iamat(kiwi, ucla, time));
  auto reply = c.read_line();
  int64_t after = now_ns();
  auto diff = check_at_reply(reply, "Alpha", kiwi, ucla, time);
  auto at = parse_at(reply.substr(0, reply.size() - 1));
  REQUIRE(at);
  CHECK(at->diff[0] == '+');
  CHECK(diff >= 0);
  CHECK(diff <= after - t);
  CHECK(diff < 2000000000);
}

TEST_CASE("a client time in the future gives a negative time difference") {
  std::string time = time_text(now_ns() + 1000 * int64_t{1000000000}, 9);
  auto diff = check_time_difference(time);
  REQUIRE(!diff.empty());
  CHECK(diff[0] == '-');
  CHECK(diff.rfind("-99", 0) == 0);
}

TEST_CASE("an old client time gives a large difference in fixed notation") {
  auto diff = check_time_difference(old_time);
  REQUIRE(!diff.empty());
  CHECK(diff[0] == '+');
  CHECK(diff.find_first_of("eE") == std::string::npos);
}

TEST_CASE("a time with twelve fraction digits is echoed verbatim") {
  std::string time = time_text(now_ns() - 5 * int64_t{1000000000}, 9) + "987";
  REQUIRE(time.size() - time.find('.') - 1 == 12);
  check_time_difference(time);
}

TEST_CASE("a time without a fraction is accepted") {
  check_time_difference(time_text(now_ns() - int64_t{1000000000}, 0));
}

TEST_CASE("coordinates are echoed verbatim, trailing zeros and all") {
  one_node n;
  client c(n.port());
  for (std::string loc : {"+34.068930-118.445127", "+34.0689300000-118.4451270",
                          "+90.000000-180.000000", "-90.0+180.0",
                          "-00.000000+000.000000", "+1.5+2.25"}) {
    INFO("location " << loc);
    c.send(iamat(kiwi, loc, old_time));
    check_at_reply(c.read_line(), "Alpha", kiwi, loc, old_time);
  }
}

TEST_CASE("fields separated by runs of white space are answered with single "
          "spaces") {
  one_node n;
  client c(n.port());
  c.send(" \t IAMAT\t" + kiwi + " \v\f " + ucla + "\t\t" + old_time + " \t\n");
  check_at_reply(c.read_line(), "Alpha", kiwi, ucla, old_time);
}

TEST_CASE("client IDs in UTF-8, emoji or invalid UTF-8 are echoed byte for "
          "byte") {
  one_node n;
  client c(n.port());
  for (std::string id : {"\xf0\x9f\xa5\x9d.example", // kiwi fruit emoji
                         "caf\xc3\xa9-\xe6\x9d\xb1\xe4\xba\xac", // café-東京
                         "bad\xff\xfe\x80utf8\xc3", // invalid UTF-8
                         "no\xc2\xa0space",         // U+00A0 is no space
                         "line\xe2\x80\xa8sep"}) {  // U+2028 neither
    INFO("client ID " << printable(id));
    c.send(iamat(id, ucla, old_time));
    check_at_reply(c.read_line(), "Alpha", id, ucla, old_time);
  }
}

TEST_CASE("a NUL byte inside a client ID is part of the ID") {
  one_node n;
  client c(n.port());
  std::string id("nul\0byte", 8);
  c.send(iamat(id, ucla, old_time));
  check_at_reply(c.read_line(), "Alpha", id, ucla, old_time);
}

TEST_CASE("invalid lines are answered with a question mark and the line as "
          "received") {
  one_node n;
  {
    // The client is known, so the WHATSAT lines below fail on their fields.
    client c(n.port());
    c.send(iamat(kiwi, ucla, old_time));
    check_at_reply(c.read_line(), "Alpha", kiwi, ucla, old_time);
  }
  const std::string t = old_time;
  const std::vector<std::string> lines{
      "HELLO world",
      "iamat " + kiwi + " " + ucla + " " + t,
      "IAMATX " + kiwi + " " + ucla + " " + t,
      "IAMAT",
      "IAMAT " + kiwi,
      "IAMAT " + kiwi + " " + ucla,
      "IAMAT " + kiwi + " " + ucla + " " + t + " extra",
      "IAMAT " + kiwi + " +34.068930 -118.445127 " + t,
      // bad coordinates
      "IAMAT " + kiwi + " 34.068930-118.445127 " + t,
      "IAMAT " + kiwi + " +34.068930118.445127 " + t,
      "IAMAT " + kiwi + " +34.068930 " + t,
      "IAMAT " + kiwi + " +91.000000-118.445127 " + t,
      "IAMAT " + kiwi + " +90.000001-118.445127 " + t,
      "IAMAT " + kiwi + " +34.068930-180.000001 " + t,
      "IAMAT " + kiwi + " +34.068930-118.445127+1.0 " + t,
      "IAMAT " + kiwi + " +34.0689x0-118.445127 " + t,
      "IAMAT " + kiwi + " ++34.068930-118.445127 " + t,
      "IAMAT " + kiwi + " +34.068930-118.445127x " + t,
      "IAMAT " + kiwi + " +3e1-118.445127 " + t,
      // bad times
      "IAMAT " + kiwi + " " + ucla + " -1621464827.959498503",
      "IAMAT " + kiwi + " " + ucla + " +1621464827.959498503",
      "IAMAT " + kiwi + " " + ucla + " 1621464827.",
      "IAMAT " + kiwi + " " + ucla + " .5",
      "IAMAT " + kiwi + " " + ucla + " 1.6e9",
      "IAMAT " + kiwi + " " + ucla + " abc",
      "IAMAT " + kiwi + " " + ucla + " 1621464827.95949850x",
      "IAMAT " + kiwi + " " + ucla + " 99999999999999999999999999",
      // WHATSAT fields
      "WHATSAT",
      "WHATSAT " + kiwi,
      "WHATSAT " + kiwi + " 10",
      "WHATSAT " + kiwi + " 10 5 6",
      "WHATSAT " + kiwi + " 0 5",
      "WHATSAT " + kiwi + " 0.0 5",
      "WHATSAT " + kiwi + " 51 5",
      "WHATSAT " + kiwi + " 50.001 5",
      "WHATSAT " + kiwi + " -1 5",
      "WHATSAT " + kiwi + " abc 5",
      "WHATSAT " + kiwi + " 1e1 5",
      "WHATSAT " + kiwi + " 10 21",
      "WHATSAT " + kiwi + " 10 -1",
      "WHATSAT " + kiwi + " 10 5.5",
      "WHATSAT " + kiwi + " 10 abc",
      "whatsat " + kiwi + " 10 5",
      // unknown client, and an AT line from a client
      "WHATSAT nobody.example 10 5",
      "AT Alpha +0.263873386 " + kiwi + " " + ucla + " " + t,
      // white space around an invalid line is part of the echo
      "  HELLO  world \t",
  };
  for (auto& line : lines) {
    INFO("line \"" << printable(line) << "\"");
    client c(n.port());
    c.send(line + "\n");
    CHECK(printable(c.read_line()) == printable("? " + line + "\n"));
  }
}

TEST_CASE("blank and white-space-only lines get no reply at all") {
  one_node n;
  client c(n.port());
  c.send("\n   \n\t\r\n\r\n \v\f \n" + iamat(kiwi, ucla, old_time));
  check_at_reply(c.read_line(), "Alpha", kiwi, ucla, old_time);
  c.send("\n \n");
  c.shutdown_write();
  CHECK(printable(c.read_until_closed()).empty());
}

TEST_CASE("CRLF line endings are accepted and the CR is not echoed") {
  one_node n;
  client c(n.port());
  c.send("IAMAT " + kiwi + " " + ucla + " " + old_time + "\r\n");
  check_at_reply(c.read_line(), "Alpha", kiwi, ucla, old_time);
  c.send("BAD\r\n");
  CHECK(printable(c.read_line()) == printable("? BAD\n"));
  c.send("BAD \r\n");
  CHECK(printable(c.read_line()) == printable("? BAD \n"));
  c.send("BA\rD\n");
  CHECK(printable(c.read_line()) == printable("? BA\rD\n"));
}

TEST_CASE("connections that all become readable at once are all answered") {
  // The node is stopped (SIGSTOP) while 600 clients each send an IAMAT, so
  // when it continues they are all ready together: more than its read
  // reactor takes in one turn (four batches of 128 sockets).
  one_node n;
  const int count = 600;
  std::vector<std::unique_ptr<client>> clients;
  for (int i = 0; i < count; ++i)
    clients.push_back(std::make_unique<client>(n.port()));
  // A first round trip each: every connection is accepted, watched and
  // read dry, so what comes next reaches it through the reactor.
  for (auto& c : clients)
    c->send(iamat(kiwi, ucla, old_time));
  for (auto& c : clients)
    check_at_reply(c->read_line(), "Alpha", kiwi, ucla, old_time);
  const pid_t pid = n.h.at("Alpha").proc().pid();
  REQUIRE(::kill(pid, SIGSTOP) == 0);
  struct resume {
    pid_t pid;
    ~resume() { ::kill(pid, SIGCONT); }
  } resume_node{pid};
  for (int i = 0; i < count; ++i)
    clients[static_cast<std::size_t>(i)]->send(
        iamat("many-" + std::to_string(i) + ".example", ucla, old_time));
  REQUIRE(::kill(pid, SIGCONT) == 0);
  for (int i = 0; i < count; ++i)
    check_at_reply(clients[static_cast<std::size_t>(i)]->read_line(), "Alpha",
                   "many-" + std::to_string(i) + ".example", ucla, old_time);
}

TEST_CASE("a pipelined burst far over the pending-line limit and the read "
          "buffer is answered whole and in order") {
  // 6,000 IAMATs (about 400 KB) in one write, with at most 16 lines
  // unanswered: reading pauses and resumes hundreds of times, and the
  // reader takes more than four 64 KiB buffers in a row. A read lost across
  // a pause (the socket is watched edge-triggered) would leave replies
  // missing and the read below would time out.
  auto spec = single_node_config();
  spec.limits = limits_spec{};
  spec.limits->max_pending_lines = 16;
  one_node n(spec);
  client c(n.port());
  std::string burst;
  const int lines = 6000;
  for (int i = 0; i < lines; ++i)
    burst += iamat("burst-" + std::to_string(i) + ".example", ucla, old_time);
  REQUIRE(burst.size() > 4 * 64 * 1024);
  // try_send: a send that cannot finish (replies not read) fails the test
  // instead of throwing on the writer thread.
  bool sent = false;
  // Joined however the reads below end (a read that times out throws).
  scoped_thread writer([&] { sent = c.try_send(burst); });
  int answered = 0;
  for (int i = 0; i < lines; ++i) {
    auto reply = c.read_line();
    if (reply.find(" burst-" + std::to_string(i) + ".example ") ==
        std::string::npos) {
      FAIL_CHECK("reply " << i << " out of order or missing: " << reply);
      break;
    }
    ++answered;
  }
  writer.join();
  CHECK(sent);
  CHECK(answered == lines);
  // The connection still works.
  c.send(iamat(kiwi, ucla, old_time));
  check_at_reply(c.read_line(), "Alpha", kiwi, ucla, old_time);
}

TEST_CASE("many lines pipelined in one write are answered in order") {
  one_node n;
  client c(n.port());
  std::string batch;
  std::vector<std::string> expected; // a client ID, or a "? ..." reply
  for (int i = 0; i < 200; ++i) {
    std::string id = "client-" + std::to_string(i) + ".example";
    switch (i % 4) {
    case 0:
    case 1:
      batch += iamat(id, ucla, old_time);
      expected.push_back(id);
      break;
    case 2:
      batch += "NOPE " + std::to_string(i) + "\n";
      expected.push_back("? NOPE " + std::to_string(i) + "\n");
      break;
    default:
      batch += " \t\n"; // no reply
      break;
    }
  }
  c.send(batch);
  for (auto& e : expected) {
    auto reply = c.read_line();
    if (e[0] == '?')
      CHECK(printable(reply) == printable(e));
    else
      check_at_reply(reply, "Alpha", e, ucla, old_time);
  }
  c.shutdown_write();
  CHECK(printable(c.read_until_closed()).empty());
}

TEST_CASE("a last line without a newline before the half-close is answered, "
          "then the server closes") {
  one_node n;
  client c(n.port());
  c.send("IAMAT " + kiwi + " " + ucla + " " + old_time);
  c.shutdown_write();
  auto all = c.read_until_closed();
  REQUIRE(count_lines(all) == 1);
  check_at_reply(all, "Alpha", kiwi, ucla, old_time);
  CHECK_FALSE(c.was_reset());
}

TEST_CASE("an invalid last line without a newline is answered before the "
          "close") {
  one_node n;
  client c(n.port());
  c.send(iamat(kiwi, ucla, old_time) + "NOT A COMMAND");
  c.shutdown_write();
  auto all = c.read_until_closed();
  auto first = all.substr(0, all.find('\n') + 1);
  check_at_reply(first, "Alpha", kiwi, ucla, old_time);
  CHECK(printable(all.substr(first.size())) == printable("? NOT A COMMAND\n"));
}

TEST_CASE("a connection that only half-closes gets no bytes and is closed") {
  one_node n;
  client c(n.port());
  c.shutdown_write();
  CHECK(printable(c.read_until_closed()).empty());
  CHECK_FALSE(c.was_reset());
}

TEST_CASE("an older IAMAT is still answered with its own AT line") {
  one_node n;
  client c(n.port());
  std::string newer = "1700000000.000000002";
  std::string older = "1700000000.000000001";
  c.send(iamat(kiwi, ucla, newer));
  check_at_reply(c.read_line(), "Alpha", kiwi, ucla, newer);
  c.send(iamat(kiwi, "+1.000000+2.000000", older));
  check_at_reply(c.read_line(), "Alpha", kiwi, "+1.000000+2.000000", older);
  c.send(iamat(kiwi, "+3.000000+4.000000", newer));
  check_at_reply(c.read_line(), "Alpha", kiwi, "+3.000000+4.000000", newer);
}

TEST_CASE("binary and NUL bytes in an invalid line are echoed in the reply") {
  one_node n;
  client c(n.port());
  const std::vector<std::string> lines{
      std::string("\x01\x02\xff\xfe\x7f\x1b[31m", 10),
      std::string("HELLO\0WORLD", 11),
      std::string("IAMAT\0 ", 7) + kiwi + " " + ucla + " " + old_time,
      std::string("\0", 1),
      std::string("\xc0\x80\xed\xa0\x80", 5),
  };
  for (auto& line : lines) {
    INFO("line \"" << printable(line) << "\"");
    c.send(line + "\n");
    CHECK(printable(c.read_line()) == printable("? " + line + "\n"));
  }
}

TEST_CASE("an over-long line without a newline closes only that connection") {
  auto spec = single_node_config();
  spec.limits = limits_spec{};
  spec.limits->max_line_bytes = 4096;
  one_node n(spec);
  client idle(n.port());
  client partial(n.port());
  partial.send("IAMAT " + kiwi);
  client bad(n.port());
  bad.send(iamat(kiwi, ucla, old_time));
  check_at_reply(bad.read_line(), "Alpha", kiwi, ucla, old_time);
  bad.try_send(std::string(5000, 'x'));
  CHECK(printable(bad.read_until_closed()).empty());

  client other(n.port());
  other.send(iamat("other.example", ucla, old_time));
  check_at_reply(other.read_line(), "Alpha", "other.example", ucla, old_time);
  partial.send(" " + ucla + " " + old_time + "\n");
  check_at_reply(partial.read_line(), "Alpha", kiwi, ucla, old_time);
  // A long line within the limit is fine.
  std::string long_line(4000, 'y');
  other.send(long_line + "\n");
  CHECK(other.read_line() == "? " + long_line + "\n");

  // The session logs the close when it takes the news, which may be after
  // the replies above.
  CHECK(wait_for_file_containing(n.h.log_path("Alpha"), "line too long"));
  auto stopped = n.h.stop("Alpha");
  CHECK(describe(stopped) ==
        describe(exit_status{true, 0, 0, false, stopped.elapsed}));
}

TEST_CASE("an over-long line with a newline closes only that connection") {
  auto spec = single_node_config();
  spec.limits = limits_spec{};
  spec.limits->max_line_bytes = 4096;
  one_node n(spec);
  client bad(n.port());
  client other(n.port());
  bad.try_send("IAMAT " + std::string(5000, 'k') + " " + ucla + " " + old_time +
               "\n");
  CHECK(printable(bad.read_until_closed()).empty());
  other.send(iamat(kiwi, ucla, old_time));
  check_at_reply(other.read_line(), "Alpha", kiwi, ucla, old_time);
  client later(n.port());
  later.send(iamat(kiwi, ucla, old_time));
  check_at_reply(later.read_line(), "Alpha", kiwi, ucla, old_time);
  CHECK(wait_for_file_containing(n.h.log_path("Alpha"), "line too long"));
}

TEST_CASE("clients that connect and send nothing do not hold up others") {
  one_node n;
  std::vector<std::unique_ptr<client>> idle;
  for (int i = 0; i < 20; ++i)
    idle.push_back(std::make_unique<client>(n.port()));
  idle[3]->send("IAMAT half-a-line");
  auto start = std::chrono::steady_clock::now();
  client c(n.port());
  c.send(iamat(kiwi, ucla, old_time));
  check_at_reply(c.read_line(1000ms), "Alpha", kiwi, ucla, old_time);
  CHECK(std::chrono::steady_clock::now() - start < 1000ms);
  for (auto& i : idle)
    CHECK(printable(i->peek_now()).empty());
}

TEST_CASE("a client that vanishes mid-stream does not disturb others") {
  one_node n;
  {
    client gone(n.port());
    std::string many;
    for (int i = 0; i < 2000; ++i)
      many += iamat("gone-" + std::to_string(i), ucla, old_time);
    gone.send(many);
  } // closed with replies unread: the server sees a reset
  client c(n.port());
  c.send(iamat(kiwi, ucla, old_time));
  check_at_reply(c.read_line(), "Alpha", kiwi, ucla, old_time);
}

TEST_CASE("the node accepts connections within half a second of its "
          "launch") {
  temp_dir dir;
  herd h(dir, single_node_config());
  launch_options opts;
  opts.wait = false;
  auto& n = h.start("Alpha", opts);
  auto took = n.wait_listening(5000ms);
  INFO("stderr: " << n.proc().stderr_text());
  REQUIRE(took.has_value());
  CHECK(took->count() < 500);
}

TEST_CASE("an unknown server name exits with code 2 and one stderr line "
          "naming the config file") {
  temp_dir dir;
  herd h(dir, single_node_config());
  auto err = refused_start(dir, {"Nobody", "--config", h.config_path()}, 2);
  CHECK(contains(err, h.config_path()));
  CHECK(contains(err, "Nobody"));
}

TEST_CASE("a config with an unknown key exits with code 2 and one stderr line "
          "naming the file and the key") {
  temp_dir dir;
  auto spec = single_node_config();
  spec.extra["colour_scheme"] = "green";
  herd h(dir, spec);
  auto err = refused_start(dir, {"Alpha", "--config", h.config_path()}, 2);
  CHECK(contains(err, h.config_path()));
  CHECK(contains(err, "colour_scheme"));
  CHECK_FALSE(wait_listening(h.port("Alpha"), 0ms));
}

TEST_CASE("an unknown key inside places or limits is rejected too") {
  temp_dir dir;
  auto spec = single_node_config();
  spec.limits = limits_spec{};
  herd h(dir, spec);
  auto text = read_file(h.config_path());
  auto at = text.find("\"limits\":{");
  REQUIRE(at != std::string::npos);
  text.insert(at + 10, "\"max_everything\":1");
  write_file(h.config_path(), text);
  auto err = refused_start(dir, {"Alpha", "--config", h.config_path()}, 2);
  CHECK(contains(err, h.config_path()));
  CHECK(contains(err, "max_everything"));
}

TEST_CASE("herd-node --help exits 0 and names --config, --threads and "
          "--log-dir") {
  temp_dir dir;
  process p({herd_node_bin(), "--help"}, {}, dir.file("help.stdout"),
            dir.file("help.stderr"));
  auto status = p.wait_exit(5000ms);
  CHECK(describe(status) ==
        describe(exit_status{true, 0, 0, false, status.elapsed}));
  auto out = p.stdout_text();
  INFO("stdout: " << out);
  CHECK(contains(out, "--config"));
  CHECK(contains(out, "--threads"));
  CHECK(contains(out, "--log-dir"));
}

TEST_CASE("SIGTERM stops the node with exit code 0 within a second and the "
          "log records connections, messages and the stop") {
  one_node n;
  std::string reply;
  {
    client c(n.port());
    c.send(iamat(kiwi, ucla, old_time) + "BOGUS\n");
    reply = c.read_line();
    check_at_reply(reply, "Alpha", kiwi, ucla, old_time);
    CHECK(c.read_line() == "? BOGUS\n");
    c.shutdown_write();
    CHECK(c.read_until_closed().empty());
  }
  // The log is written asynchronously; the closed connection shows up
  // within its flush interval.
  CHECK(wait_for_file_containing(n.h.log_path("Alpha"), "connection closed"));
  client still_open(n.port());
  auto status = n.h.stop("Alpha", 5000ms);
  CHECK(describe(status) ==
        describe(exit_status{true, 0, 0, false, status.elapsed}));
  CHECK(status.elapsed < 1000ms);
  auto log = n.h.log_text("Alpha");
  INFO("log:\n" << log);
  CHECK(contains(log, "connection opened"));
  CHECK(contains(log, "connection closed"));
  // An IAMAT and its AT share a line: the AT's server and time difference,
  // then "..." for the fields it echoes.
  const std::string prefix =
      "in: IAMAT " + kiwi + " " + ucla + " " + old_time + " out: AT Alpha ";
  auto at = log.find(prefix);
  REQUIRE(at != std::string::npos);
  auto eol = log.find('\n', at);
  const std::string diff = reply.substr(9, reply.find(' ', 9) - 9);
  CHECK(log.substr(at + prefix.size(), eol - at - prefix.size()) ==
        diff + " ...");
  CHECK(contains(log, "in: BOGUS"));
  CHECK(contains(log, "out: ? BOGUS"));
  CHECK(contains(log, "node Alpha stopped"));
  CHECK_FALSE(contains(log, test_api_key));
}

TEST_CASE("a node started with --log-dir writes its log there") {
  temp_dir dir;
  herd h(dir, single_node_config());
  launch_options opts;
  opts.extra_args = {"--log-dir", dir.file("elsewhere")};
  h.start("Alpha", opts);
  {
    client c(h.port("Alpha"));
    c.send(iamat(kiwi, ucla, old_time));
    check_at_reply(c.read_line(), "Alpha", kiwi, ucla, old_time);
  }
  auto status = h.stop("Alpha");
  CHECK(describe(status) ==
        describe(exit_status{true, 0, 0, false, status.elapsed}));
  CHECK(contains(read_file(dir.file("elsewhere/Alpha.log")),
                 "node Alpha stopped"));
}

TEST_CASE("a client that never reads its replies is cut off and others are "
          "not held up") {
  auto spec = single_node_config();
  spec.limits = limits_spec{};
  spec.limits->max_output_bytes = 65536;
  one_node n(spec);
  client hog(n.port());
  client other(n.port());
  // Requests pipelined without reading a reply: once the kernel's buffers
  // and the node's 64 KiB of queued replies are full, the node must drop
  // this connection rather than keep its replies in memory. Bounded: at
  // most 40 chunks of 5,000 lines (about 18 MB of replies in all).
  std::string chunk;
  for (int i = 0; i < 5000; ++i)
    chunk += iamat("hog-" + std::to_string(i), ucla, old_time);
  bool cut = false;
  for (int round = 0; round < 40 && !cut; ++round)
    cut = !hog.try_send(chunk, 2000ms);
  INFO("the node kept reading and queueing replies for the hog");
  REQUIRE(wait_for_file_containing(n.h.log_path("Alpha"),
                                   "slow reader (output limit)", 5000ms));
  other.send(iamat(kiwi, ucla, old_time));
  check_at_reply(other.read_line(), "Alpha", kiwi, ucla, old_time);
}

namespace {

/// 40 chunks of 5,000 IAMATs: about 15 MB of requests and 19 MB of replies,
/// more than loopback's socket buffers hold on both sides together.
constexpr int stall_chunks = 40;
constexpr int stall_chunk_lines = 5000;

/// A node whose output limit is out of the way, so that the write timeout
/// (500 ms) is what ends a connection that stops reading.
config_spec stall_spec() {
  auto spec = single_node_config();
  spec.limits = limits_spec{};
  spec.limits->max_output_bytes = 64u << 20;
  spec.limits->write_timeout_ms = 500;
  return spec;
}

std::string stall_chunk(int round) {
  std::string chunk;
  for (int i = 0; i < stall_chunk_lines; ++i)
    chunk += iamat("q" + std::to_string(round) + "-" + std::to_string(i), ucla,
                   old_time);
  return chunk;
}

} // namespace

TEST_CASE("a client that stops reading with replies queued is closed after "
          "write_timeout_ms, and others are not held up") {
  one_node n(stall_spec());
  client stalled(n.port());
  client other(n.port());
  // Requests without reading a reply: once the socket buffers are full the
  // node's queue stops moving, and it must close the connection rather
  // than hold the queue (and the connection) for ever.
  for (int round = 0; round < stall_chunks; ++round)
    if (!stalled.try_send(stall_chunk(round), 5000ms))
      break; // already closed
  REQUIRE(wait_for_file_containing(n.h.log_path("Alpha"),
                                   "slow reader (no write progress)", 10000ms));
  other.send(iamat(kiwi, ucla, old_time));
  check_at_reply(other.read_line(), "Alpha", kiwi, ucla, old_time);
}

TEST_CASE("a client that reads slowly but steadily is not cut off by "
          "write_timeout_ms") {
  one_node n(stall_spec());
  client c(n.port());
  bool sent = true;
  scoped_thread writer([&] {
    for (int round = 0; round < stall_chunks && sent; ++round)
      sent = c.try_send(stall_chunk(round), 10000ms);
  });
  // About 100,000 replies a second, slower than the node writes them, so
  // its queue grows, but never a pause of more than a few milliseconds.
  const int lines = stall_chunks * stall_chunk_lines;
  int answered = 0;
  for (; answered < lines; ++answered) {
    if (answered % 2000 == 0)
      std::this_thread::sleep_for(20ms); // the slow reader under test
    auto reply = c.read_line();
    if (reply.rfind("AT Alpha ", 0) != 0) {
      FAIL_CHECK("reply " << answered << ": " << printable(reply));
      break;
    }
  }
  writer.join();
  CHECK(sent);
  CHECK(answered == lines);
  CHECK_FALSE(contains(read_file(n.h.log_path("Alpha")), "no write progress"));
}

TEST_CASE("a refused peer reads its refusal and an orderly close, however "
          "much it sent behind its hello") {
  one_node n;
  client c(n.port());
  // Half a megabyte behind the hello: more than the node reads before it
  // refuses, so bytes are still unread when it has written the refusal.
  // Closing then makes the kernel send a reset, which discards whatever of
  // the refusal is still unsent or unacknowledged (on loopback it has
  // always arrived, so the test looks for the reset itself).
  std::string burst = "HERD-HELLO not-a-hello\n";
  const std::string filler = "AT Bravo +0.1 x +1+2 1\n";
  while (burst.size() < 512 * 1024)
    burst += filler;
  c.try_send(burst);
  auto reply = c.read_line();
  INFO("reply: \"" << printable(reply) << "\"");
  CHECK(reply.rfind("HERD-REFUSED ", 0) == 0);
  CHECK(printable(c.read_until_closed()).empty());
  CHECK(c.peer_closed());
  CHECK_FALSE(c.reset_arrived());
  // The node still reads (and drops) what comes, until this side closes.
  CHECK(c.try_send("more after the refusal\n"));
  CHECK_FALSE(c.reset_arrived());
  // And not forever: with this side still open, it closes after
  // finish_linger. The log names the connection as the refusal did.
  auto log = n.h.log_path("Alpha");
  REQUIRE(wait_for_log_after(log, 0, "peer connection refused", default_wait));
  auto text = read_file(log);
  auto refused = text.find("peer connection refused");
  auto line_start = text.rfind('\n', refused) + 1;
  auto name_start = text.find("client#", line_start);
  REQUIRE(name_start < refused);
  auto who = text.substr(name_start, refused - name_start); // "client#N ADDR "
  CHECK(wait_for_log_after(log, refused, who + "connection closed: finished",
                           default_wait));
}
