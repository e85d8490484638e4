#include "net/peer_protocol.hpp"

#include <charconv>

#include <boost/asio/ip/address.hpp>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "net/protocol.hpp"

namespace herd::peer {

namespace {

constexpr char hex_digits[] = "0123456789abcdef";

std::string to_hex(const unsigned char* data, size_t size) {
  std::string out;
  out.reserve(size * 2);
  for (size_t i = 0; i < size; ++i) {
    out += hex_digits[data[i] >> 4];
    out += hex_digits[data[i] & 0xf];
  }
  return out;
}

std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && proto::is_space(line[i]))
      ++i;
    size_t start = i;
    while (i < line.size() && !proto::is_space(line[i]))
      ++i;
    if (i > start)
      out.push_back(line.substr(start, i - start));
  }
  return out;
}

bool is_token(std::string_view s, size_t max = 256) {
  return !s.empty() && s.size() <= max;
}

template<class T> bool parse_number(std::string_view s, T& out, int base = 10) {
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out, base);
  return ec == std::errc{} && ptr == s.data() + s.size();
}

bool is_power_of_two(uint32_t x) {
  return x != 0 && (x & (x - 1)) == 0;
}

} // namespace

std::string make_nonce() {
  unsigned char buf[16];
  if (RAND_bytes(buf, sizeof(buf)) != 1)
    throw std::runtime_error("no randomness for a handshake nonce");
  return to_hex(buf, sizeof(buf));
}

std::string handshake_mac(std::string_view secret, std::string_view role,
                          std::string_view dialer, std::string_view acceptor,
                          std::string_view dialer_nonce,
                          std::string_view acceptor_nonce) {
  if (secret.empty())
    return "-";
  std::string msg = "herd-v1|";
  msg += role;
  msg += '|';
  msg += dialer;
  msg += '|';
  msg += acceptor;
  msg += '|';
  msg += dialer_nonce;
  msg += '|';
  msg += acceptor_nonce;
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), out,
       &len);
  return to_hex(out, len);
}

bool mac_equal(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() &&
         CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string format_hello(const hello& h) {
  return "HERD-HELLO " + std::to_string(h.version) + " " + h.dialer + " " +
         h.acceptor + " " + h.nonce;
}

std::optional<hello> parse_hello(std::string_view line) {
  auto f = fields(line);
  hello h;
  if (f.size() != 5 || f[0] != "HERD-HELLO" || !parse_number(f[1], h.version) ||
      !is_token(f[2]) || !is_token(f[3]) || !is_token(f[4], 64))
    return std::nullopt;
  h.dialer = f[2];
  h.acceptor = f[3];
  h.nonce = f[4];
  return h;
}

std::string format_challenge(const challenge& c) {
  return "HERD-CHALLENGE " + c.acceptor + " " + c.nonce + " " + c.mac;
}

std::optional<challenge> parse_challenge(std::string_view line) {
  auto f = fields(line);
  if (f.size() != 4 || f[0] != "HERD-CHALLENGE" || !is_token(f[1]) ||
      !is_token(f[2], 64) || !is_token(f[3], 128))
    return std::nullopt;
  return challenge{std::string(f[1]), std::string(f[2]), std::string(f[3])};
}

std::optional<std::string> parse_auth(std::string_view line) {
  auto f = fields(line);
  if (f.size() != 2 || f[0] != "HERD-AUTH" || !is_token(f[1], 128))
    return std::nullopt;
  return std::string(f[1]);
}

uint64_t client_hash(std::string_view client_id) noexcept {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : client_id) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

uint64_t record_hash(uint64_t client_hash, int64_t time_ns) noexcept {
  // splitmix64 finalizer over the client hash mixed with the time.
  uint64_t z =
      client_hash ^ (static_cast<uint64_t>(time_ns) * 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::vector<uint64_t> fold_digests(const std::vector<uint64_t>& full,
                                   uint32_t buckets) {
  std::vector<uint64_t> out(buckets, 0);
  uint32_t shift = 0;
  while ((max_buckets >> shift) > buckets)
    ++shift;
  for (uint32_t i = 0; i < full.size(); ++i)
    out[i >> shift] ^= full[i];
  return out;
}

uint32_t buckets_for(uint64_t clients) noexcept {
  uint32_t b = 16;
  while (b < max_buckets && b * 8ull < clients)
    b *= 2;
  return b;
}

std::string format_sync(const std::vector<uint64_t>& digests) {
  std::string out = "SYNC " + std::to_string(digests.size());
  out.reserve(out.size() + digests.size() * 17);
  for (auto d : digests) {
    char buf[16];
    auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), d, 16);
    (void)ec;
    out += ' ';
    out.append(buf, end);
  }
  return out;
}

std::optional<std::vector<uint64_t>> parse_sync(std::string_view line) {
  auto f = fields(line);
  uint32_t n = 0;
  if (f.size() < 2 || f[0] != "SYNC" || !parse_number(f[1], n) ||
      !is_power_of_two(n) || n > max_buckets || f.size() != n + 2u)
    return std::nullopt;
  std::vector<uint64_t> out(n);
  for (uint32_t i = 0; i < n; ++i)
    if (!parse_number(f[i + 2], out[i], 16))
      return std::nullopt;
  return out;
}

std::string format_sync_end(uint32_t buckets,
                            const std::vector<uint32_t>& differing) {
  std::string out = "SYNC-END " + std::to_string(buckets);
  for (auto b : differing) {
    out += ' ';
    out += std::to_string(b);
  }
  return out;
}

std::optional<std::pair<uint32_t, std::vector<uint32_t>>>
parse_sync_end(std::string_view line) {
  auto f = fields(line);
  uint32_t n = 0;
  if (f.size() < 2 || f[0] != "SYNC-END" || !parse_number(f[1], n) ||
      !is_power_of_two(n) || n > max_buckets)
    return std::nullopt;
  std::vector<uint32_t> buckets;
  for (size_t i = 2; i < f.size(); ++i) {
    uint32_t b = 0;
    if (!parse_number(f[i], b) || b >= n)
      return std::nullopt;
    buckets.push_back(b);
  }
  return std::make_pair(n, std::move(buckets));
}

bool is_loopback_host(std::string_view host) {
  if (host == "localhost")
    return true;
  boost::system::error_code ec;
  auto addr = boost::asio::ip::make_address(std::string(host), ec);
  return !ec && addr.is_loopback();
}

} // namespace herd::peer
