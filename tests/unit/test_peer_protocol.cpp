// The peer protocol's pure parts: handshake messages, MACs and digests.
#include <catch2/catch.hpp>

#include "net/peer_protocol.hpp"

using namespace herd::peer;

TEST_CASE("a hello round-trips through its text form") {
  hello h{protocol_version, "Clark", "Bona", make_nonce()};
  auto parsed = parse_hello(format_hello(h));
  REQUIRE(parsed);
  CHECK(parsed->version == 1);
  CHECK(parsed->dialer == "Clark");
  CHECK(parsed->acceptor == "Bona");
  CHECK(parsed->nonce == h.nonce);
  CHECK_FALSE(parse_hello("HERD-HELLO 1 Clark Bona"));
  CHECK_FALSE(parse_hello("HERD-HELLO x Clark Bona n"));
  CHECK_FALSE(parse_hello("AT Clark Bona 1 2"));
}

TEST_CASE("nonces are fresh and hex") {
  auto a = make_nonce();
  auto b = make_nonce();
  CHECK(a.size() == 32);
  CHECK(a != b);
  CHECK(a.find_first_not_of("0123456789abcdef") == std::string::npos);
}

TEST_CASE("a MAC depends on the secret, the role, both names and both "
          "nonces") {
  auto base = handshake_mac("s3cret", "dial", "Clark", "Bona", "n1", "n2");
  CHECK(base.size() == 64);
  CHECK(base == handshake_mac("s3cret", "dial", "Clark", "Bona", "n1", "n2"));
  CHECK(base != handshake_mac("other", "dial", "Clark", "Bona", "n1", "n2"));
  CHECK(base != handshake_mac("s3cret", "accept", "Clark", "Bona", "n1", "n2"));
  CHECK(base != handshake_mac("s3cret", "dial", "Bona", "Clark", "n1", "n2"));
  CHECK(base != handshake_mac("s3cret", "dial", "Clark", "Bona", "n3", "n2"));
  CHECK(base != handshake_mac("s3cret", "dial", "Clark", "Bona", "n1", "n3"));
  // The secret itself never appears in what travels.
  CHECK(base.find("s3cret") == std::string::npos);
}

TEST_CASE("without a secret the MAC proves nothing and says so") {
  CHECK(handshake_mac("", "dial", "Clark", "Bona", "n1", "n2") == "-");
}

TEST_CASE("MACs compare equal only when identical") {
  CHECK(mac_equal("abc", "abc"));
  CHECK_FALSE(mac_equal("abc", "abd"));
  CHECK_FALSE(mac_equal("abc", "abcd"));
}

TEST_CASE("a challenge and an auth line parse back") {
  challenge c{"Bona", "nonce", "mac"};
  auto parsed = parse_challenge(format_challenge(c));
  REQUIRE(parsed);
  CHECK(parsed->acceptor == "Bona");
  CHECK(parsed->mac == "mac");
  CHECK(parse_auth("HERD-AUTH abc") == std::optional<std::string>("abc"));
  CHECK_FALSE(parse_auth("HERD-AUTH"));
  CHECK_FALSE(parse_auth("HERD-AUTH a b"));
}

TEST_CASE("client hashes are FNV-1a 64, stable across builds") {
  CHECK(client_hash("") == 14695981039346656037ull);
  CHECK(client_hash("a") == 0xaf63dc4c8601ec8cull);
  CHECK(bucket_of(client_hash("a")) < max_buckets);
}

TEST_CASE("IDs that differ only at the end spread over the buckets") {
  std::vector<int> used(max_buckets, 0);
  size_t distinct = 0;
  for (int i = 0; i < 1000; ++i)
    distinct +=
        used[bucket_of(client_hash("user-" + std::to_string(i)))]++ == 0;
  // 1,000 random draws from 4,096 buckets hit about 885 distinct ones.
  CHECK(distinct > 800);
}

TEST_CASE("folding keeps the XOR of every bucket's children") {
  std::vector<uint64_t> full(max_buckets, 0);
  full[0] = 1;
  full[1] = 2;
  full[max_buckets - 1] = 4;
  auto folded = fold_digests(full, 2);
  REQUIRE(folded.size() == 2);
  CHECK(folded[0] == 3);
  CHECK(folded[1] == 4);
  CHECK(fold_digests(full, max_buckets) == full);
}

TEST_CASE("a record's digest changes with its time") {
  auto h = client_hash("kiwi");
  CHECK(record_hash(h, 1) != record_hash(h, 2));
  CHECK(record_hash(h, 1) != record_hash(client_hash("kiwj"), 1));
}

TEST_CASE("bucket counts grow with the registry, within limits") {
  CHECK(buckets_for(0) == 16);
  CHECK(buckets_for(1000) == 128);
  CHECK(buckets_for(100'000'000) == max_buckets);
}

TEST_CASE("SYNC and SYNC-END round-trip and reject malformed input") {
  std::vector<uint64_t> d{0, 0xffffffffffffffffull, 42, 7};
  auto parsed = parse_sync(format_sync(d));
  REQUIRE(parsed);
  CHECK(*parsed == d);
  CHECK_FALSE(parse_sync("SYNC 3 1 2 3")); // not a power of two
  CHECK_FALSE(parse_sync("SYNC 2 1"));     // too few digests
  CHECK_FALSE(parse_sync("SYNC 2 1 zz"));  // not hex
  auto end = parse_sync_end(format_sync_end(4, {1, 3}));
  REQUIRE(end);
  CHECK(end->first == 4);
  CHECK(end->second == std::vector<uint32_t>{1, 3});
  CHECK_FALSE(parse_sync_end("SYNC-END 4 4")); // bucket out of range
  CHECK(parse_sync_end("SYNC-END 4"));
}

TEST_CASE("loopback hosts are recognised") {
  CHECK(is_loopback_host("127.0.0.1"));
  CHECK(is_loopback_host("127.1.2.3"));
  CHECK(is_loopback_host("::1"));
  CHECK(is_loopback_host("localhost"));
  CHECK_FALSE(is_loopback_host("10.0.0.1"));
  CHECK_FALSE(is_loopback_host("example.com"));
}
