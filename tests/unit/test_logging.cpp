// Log lines: one client line is always one log line, whatever its bytes.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

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

TEST_CASE("the log file holds ordinary lines and message blocks in the order "
          "they were logged, each message on one line, escaped") {
  namespace fs = std::filesystem;
  auto dir = fs::temp_directory_path() /
             ("herd-log-test-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  log::open(dir.string(), "Unit");
  HERD_LOG_INFO("first {}", 1);
  log::message_block block;
  // 2021-05-19T22:53:47.000001Z plus a few microseconds
  const int64_t when = 1621464827'000'012'000;
  block.add(when, "client#7", "in", "IAMAT kiwi\t+1+2 3");
  block.add(when + 1'000, "client#7", "out", "back\\slash\x7f");
  // Longer than one 16-byte step of the scan: a control byte late in the
  // line, and UTF-8 (bytes above 0x7f), which stays as it is.
  block.add(when, "client#7", "in",
            "WHATSAT a-rather-long-client-id.example 10 5\x01");
  block.add(when, "client#7", "in",
            "IAMAT \xf0\x9f\xa5\x9d.example.with.a.long.name +1+2 3");
  block.flush();
  HERD_LOG_WARN("last {}", 2);
  log::close();

  std::ifstream in(dir / "Unit.log");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    lines.push_back(line);
  fs::remove_all(dir);
  REQUIRE(lines.size() == 6);
  CHECK(lines[0].find(" info first 1") != std::string::npos);
  const std::regex stamp(
      R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.(\d{6})[+-]\d\d:\d\d )");
  std::smatch m;
  REQUIRE(std::regex_search(lines[1], m, stamp));
  CHECK(m[1] == "000012");
  CHECK(lines[1].substr(m[0].length()) ==
        "info client#7 in: IAMAT kiwi\\x09+1+2 3");
  REQUIRE(std::regex_search(lines[2], m, stamp));
  CHECK(m[1] == "000013");
  CHECK(lines[2].substr(m[0].length()) ==
        "info client#7 out: back\\\\slash\\x7f");
  CHECK(lines[3].substr(lines[3].find(" info ")) ==
        " info client#7 in: WHATSAT a-rather-long-client-id.example 10 "
        "5\\x01");
  CHECK(lines[4].substr(lines[4].find(" info ")) ==
        " info client#7 in: IAMAT \xf0\x9f\xa5\x9d.example.with.a.long.name "
        "+1+2 3");
  CHECK(lines[5].find(" warning last 2") != std::string::npos);
}

TEST_CASE("message blocks and ordinary lines from many threads all reach the "
          "file, each thread's in its order") {
  namespace fs = std::filesystem;
  auto dir = fs::temp_directory_path() /
             ("herd-log-threads-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  log::open(dir.string(), "Threads");
  constexpr int threads = 4, rounds = 3000;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([t] {
      log::message_block block;
      const std::string who = "t" + std::to_string(t);
      for (int i = 0; i < rounds; ++i) {
        // Blocks of one to three lines: thousands of buffers per write, more
        // than one writev takes at once.
        for (int k = 0; k <= i % 3; ++k)
          block.add(1621464827'000'000'000, who, "in",
                    std::to_string(i) + " " + std::to_string(k));
        block.flush();
        if (i % 10 == 0)
          HERD_LOG_INFO("{} plain: {} 9", who, i);
      }
    });
  }
  for (auto& th : pool)
    th.join();
  log::close();

  std::ifstream in(dir / "Threads.log");
  // Per thread, the (round, part) of each line, in file order.
  std::vector<std::vector<std::pair<int, int>>> seen(threads);
  size_t other = 0;
  for (std::string line; std::getline(in, line);) {
    const std::regex re(R"( info t(\d) (?:in|plain): (\d+) (\d)$)");
    std::smatch m;
    if (!std::regex_search(line, m, re)) {
      ++other;
      continue;
    }
    seen[std::stoul(m[1])].emplace_back(std::stoi(m[2]), std::stoi(m[3]));
  }
  fs::remove_all(dir);
  CHECK(other == 0);
  for (int t = 0; t < threads; ++t) {
    INFO("thread " << t);
    std::vector<std::pair<int, int>> expected;
    for (int i = 0; i < rounds; ++i) {
      for (int k = 0; k <= i % 3; ++k)
        expected.emplace_back(i, k);
      if (i % 10 == 0)
        expected.emplace_back(i, 9);
    }
    CHECK(seen[static_cast<size_t>(t)] == expected);
  }
}

TEST_CASE("a long log does not stay in the page cache once it is on disk") {
  namespace fs = std::filesystem;
  // Next to the test binary rather than in /tmp, which may be tmpfs (whose
  // pages cannot leave memory).
  auto dir = fs::current_path() /
             ("herd-log-cache-test-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  struct statfs fs_info {};
  REQUIRE(::statfs(fs::current_path().c_str(), &fs_info) == 0);
  if (fs_info.f_type == TMPFS_MAGIC) {
    WARN("the build directory is on tmpfs: nothing to drop, not checked");
    return;
  }
  log::open(dir.string(), "Cache");
  // 48 MB of message lines, handed over and written in 1 MB blocks.
  const std::string text(200, 'x');
  for (int block_no = 0; block_no < 48; ++block_no) {
    log::message_block block;
    for (int i = 0; i < 4500; ++i)
      block.add(1621464827'000'000'000, "client#1", "in", text);
    block.flush();
    log::close(); // writes out everything handed over, on this thread
  }
  auto path = (dir / "Cache.log").string();
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  // Bytes of the file's first `upto` bytes now in the page cache.
  auto cached = [&](const std::string& file, size_t upto) -> size_t {
    int fd = ::open(file.c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    struct stat st {};
    REQUIRE(::fstat(fd, &st) == 0);
    size_t size = std::min(static_cast<size_t>(st.st_size), upto);
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    REQUIRE(map != MAP_FAILED);
    std::vector<unsigned char> resident((size + page - 1) / page);
    REQUIRE(::mincore(map, size, resident.data()) == 0);
    ::munmap(map, size);
    ::close(fd);
    size_t n = 0;
    for (auto r : resident)
      n += r & 1;
    return n * page;
  };
  REQUIRE(fs::file_size(path) > (40u << 20));
  // The writer thread drops the written chunks shortly after their
  // write-out; wait (bounded) until the first 16 MB have left the cache.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  size_t left = cached(path, 16u << 20);
  while (left > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    left = cached(path, 16u << 20);
  }
  CHECK(left == 0);
  // mincore does see the cache: a file just written the ordinary way is in
  // it, so the check above can tell the two apart.
  auto plain = (dir / "plain").string();
  {
    std::ofstream out(plain);
    out << std::string(1 << 20, 'x');
  }
  CHECK(cached(plain, 1u << 20) > 0);
  fs::remove_all(dir);
}
