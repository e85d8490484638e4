// Connections and the listener on their own io_pool (no actors): what a
// handler that throws costs.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "net/tcp_server.hpp"

using namespace std::chrono_literals;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

/// Answers "ok <line>" to every line, and throws on a line "boom". A line
/// "later X" is answered "held X" at the end of the round of reads
/// (send_after_reads), and "now X" with "direct X" at once, after what was
/// held (flush_round_writes).
class echo_handler : public herd::net::connection_handler {
 public:
  echo_handler(std::weak_ptr<herd::net::connection> conn,
               std::promise<herd::net::close_reason>& closed)
      : conn_(std::move(conn)), closed_(closed) {}

  void on_lines(std::string& bytes, std::vector<uint32_t>& ends,
                int64_t) override {
    auto conn = conn_.lock();
    uint32_t begin = 0;
    std::string out;
    uint32_t answered = 0;
    for (auto end : ends) {
      std::string line = bytes.substr(begin, end - begin);
      begin = end;
      if (line == "boom")
        throw std::runtime_error("a handler bug");
      if (line.rfind("later ", 0) == 0) {
        conn->send_after_reads("held " + line.substr(6) + "\n", 1);
      } else if (line.rfind("now ", 0) == 0) {
        herd::net::flush_round_writes();
        conn->send("direct " + line.substr(4) + "\n", 1);
      } else {
        out += "ok " + line + "\n";
        ++answered;
      }
    }
    if (answered > 0)
      conn->send(std::move(out), answered);
  }
  void on_eof() override {}
  void on_closed(herd::net::close_reason why) override {
    closed_.set_value(why);
  }

 private:
  std::weak_ptr<herd::net::connection> conn_;
  std::promise<herd::net::close_reason>& closed_;
};

struct fixture {
  herd::net::io_pool pool{1};
  std::atomic<int> accepted{0};
  std::atomic<bool> refuse_next{false};
  std::mutex mtx;
  std::vector<std::unique_ptr<std::promise<herd::net::close_reason>>> closes;
  std::shared_ptr<herd::net::listener> listener;

  fixture() {
    listener = std::make_shared<herd::net::listener>(
        pool.at(0), pool, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0),
        [this](tcp::socket s) {
          ++accepted;
          if (refuse_next.exchange(false))
            throw std::runtime_error("accept callback failed");
          auto conn = std::make_shared<herd::net::connection>(
              std::move(s), herd::net::connection_limits{}, 1);
          std::lock_guard<std::mutex> guard(mtx);
          closes.push_back(
              std::make_unique<std::promise<herd::net::close_reason>>());
          conn->start(std::make_shared<echo_handler>(conn, *closes.back()));
        });
    listener->start();
    pool.start();
  }
  ~fixture() {
    listener->stop();
    pool.stop();
  }
};

/// Reads until EOF or `limit` bytes; true when the server closed.
bool read_to_close(tcp::socket& s, std::string& got) {
  char buf[256];
  boost::system::error_code ec;
  for (int i = 0; i < 1000; ++i) {
    size_t n = s.read_some(asio::buffer(buf), ec);
    if (ec)
      return ec == asio::error::eof || ec == asio::error::connection_reset;
    got.append(buf, n);
  }
  return false;
}

std::string ask(tcp::socket& s, const std::string& line) {
  asio::write(s, asio::buffer(line + "\n"));
  std::string reply;
  char c = 0;
  while (c != '\n') {
    asio::read(s, asio::buffer(&c, 1));
    reply += c;
  }
  return reply;
}

} // namespace

TEST_CASE_METHOD(fixture, "a handler that throws closes its own connection "
                          "and the io thread serves the others") {
  asio::io_context client_ctx;
  tcp::socket good(client_ctx), bad(client_ctx);
  good.connect({asio::ip::make_address("127.0.0.1"), listener->port()});
  CHECK(ask(good, "first") == "ok first\n");
  bad.connect({asio::ip::make_address("127.0.0.1"), listener->port()});
  asio::write(bad, asio::buffer(std::string("boom\n")));
  std::string got;
  CHECK(read_to_close(bad, got));
  CHECK(got.empty());
  {
    std::lock_guard<std::mutex> guard(mtx);
    REQUIRE(closes.size() == 2);
    auto why = closes[1]->get_future();
    REQUIRE(why.wait_for(2s) == std::future_status::ready);
    CHECK(why.get() == herd::net::close_reason::server_close);
  }
  CHECK(ask(good, "second") == "ok second\n");
}

TEST_CASE_METHOD(fixture, "an accept callback that throws drops that "
                          "connection and the listener goes on") {
  asio::io_context client_ctx;
  refuse_next = true;
  tcp::socket dropped(client_ctx);
  dropped.connect({asio::ip::make_address("127.0.0.1"), listener->port()});
  std::string got;
  CHECK(read_to_close(dropped, got));
  tcp::socket next(client_ctx);
  next.connect({asio::ip::make_address("127.0.0.1"), listener->port()});
  CHECK(ask(next, "hello") == "ok hello\n");
  CHECK(accepted.load() == 2);
}

TEST_CASE_METHOD(fixture, "replies held for the end of the round of reads "
                          "are written, in order, before what follows a "
                          "flush") {
  asio::io_context client_ctx;
  tcp::socket s(client_ctx);
  s.connect({asio::ip::make_address("127.0.0.1"), listener->port()});
  asio::write(s, asio::buffer(std::string("later a\nlater b\n")));
  std::string want = "held a\nheld b\n";
  std::string got(want.size(), '\0');
  asio::read(s, asio::buffer(got));
  CHECK(got == want);
  // One read: "a" is held, the flush writes it before "direct b".
  asio::write(s, asio::buffer(std::string("later a\nnow b\nlater c\n")));
  want = "held a\ndirect b\nheld c\n";
  got.assign(want.size(), '\0');
  asio::read(s, asio::buffer(got));
  CHECK(got == want);
  CHECK(ask(s, "plain") == "ok plain\n");
}
