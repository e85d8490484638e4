// The server-to-server protocol's pure parts: the membership handshake and
// the digests of the catch-up exchange. docs/peer-protocol.md is the
// specification; this is its reference implementation.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace herd::peer {

/// Version spoken in HERD-HELLO.
constexpr int protocol_version = 1;

/// Registries keep digests at this resolution; a SYNC folds them to any
/// power of two up to it.
constexpr uint32_t max_buckets = 4096;
constexpr int max_bucket_bits = 12;

/// A fresh random nonce: 32 hex digits from the OpenSSL CSPRNG.
std::string make_nonce();

/// The MAC proving knowledge of the secret for one side of one handshake:
/// hex(HMAC-SHA256(secret, "herd-v1|<role>|<dialer>|<acceptor>|<dialer
/// nonce>|<acceptor nonce>")), role "accept" or "dial". With an empty
/// secret the MAC is "-": the handshake names the server, proves nothing.
std::string handshake_mac(std::string_view secret, std::string_view role,
                          std::string_view dialer, std::string_view acceptor,
                          std::string_view dialer_nonce,
                          std::string_view acceptor_nonce);

/// Compares two MACs in constant time.
bool mac_equal(std::string_view a, std::string_view b) noexcept;

/// `HERD-HELLO <version> <dialer> <acceptor> <nonce>`.
struct hello {
  int version = 0;
  std::string dialer;
  std::string acceptor;
  std::string nonce;
};

std::string format_hello(const hello& h);
std::optional<hello> parse_hello(std::string_view line);

/// `HERD-CHALLENGE <acceptor> <nonce> <mac>`.
struct challenge {
  std::string acceptor;
  std::string nonce;
  std::string mac;
};

std::string format_challenge(const challenge& c);
std::optional<challenge> parse_challenge(std::string_view line);

/// `HERD-AUTH <mac>` -> the MAC, or nullopt.
std::optional<std::string> parse_auth(std::string_view line);

// -- catch-up digests ---------------------------------------------------------

/// FNV-1a 64 of a client ID: stable across builds and platforms, so two
/// servers agree on buckets.
uint64_t client_hash(std::string_view client_id) noexcept;

/// The bucket of a client at full resolution: the top bits of the client
/// hash after a splitmix64 finalizer (FNV-1a alone barely moves its top bits
/// when IDs differ only at the end, like "user-1" and "user-2").
inline uint32_t bucket_of(uint64_t client_hash) noexcept {
  uint64_t z = client_hash;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<uint32_t>(z >> (64 - max_bucket_bits));
}

/// A record's contribution to its bucket digest (XOR-combined, so the
/// registry updates a digest in O(1) when a record changes).
uint64_t record_hash(uint64_t client_hash, int64_t time_ns) noexcept;

/// Folds full-resolution digests to `buckets` (a power of two <= max).
std::vector<uint64_t> fold_digests(const std::vector<uint64_t>& full,
                                   uint32_t buckets);

/// A bucket count for a registry of `clients` records: about 8 per bucket.
uint32_t buckets_for(uint64_t clients) noexcept;

/// `SYNC <buckets> <hex digest>...`: the asker's digests.
std::string format_sync(const std::vector<uint64_t>& digests);
std::optional<std::vector<uint64_t>> parse_sync(std::string_view line);

/// `SYNC-END <buckets> <bucket>...`: the responder's differing buckets.
std::string format_sync_end(uint32_t buckets,
                            const std::vector<uint32_t>& differing);
std::optional<std::pair<uint32_t, std::vector<uint32_t>>>
parse_sync_end(std::string_view line);

/// True when `host` is a loopback address (127.0.0.0/8, ::1, "localhost").
bool is_loopback_host(std::string_view host);

} // namespace herd::peer
