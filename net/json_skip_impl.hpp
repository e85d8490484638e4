// The body of find_close() (net/json_skip.hpp), included once per build
// flavour with JSON_SKIP_NS naming its namespace: compiled plain (SSE2, part
// of x86-64) and with -mavx2 -mpclmul -mpopcnt. Only intrinsics and this
// namespace's own functions in here: an inline function shared with other
// files would let the linker keep the AVX2 copy for every caller.
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace herd::places::detail::JSON_SKIP_NS {

/// Which bytes of a 64-byte block are backslashes, quotes, opening and
/// closing brackets: one bit per byte.
struct block_masks {
  std::uint64_t backslash = 0, quote = 0, open = 0, close = 0;
};

// '[' | 0x20 == '{' and ']' | 0x20 == '}'; no other byte maps there, so
// one compare finds both kinds of bracket.
inline block_masks classify64(const char* block) noexcept {
  block_masks m;
#if defined(__AVX2__)
  const __m256i backslash = _mm256_set1_epi8('\\');
  const __m256i quote = _mm256_set1_epi8('"');
  const __m256i lower = _mm256_set1_epi8(0x20);
  const __m256i open = _mm256_set1_epi8('{');
  const __m256i close = _mm256_set1_epi8('}');
  for (int i = 0; i < 2; ++i) {
    const __m256i v =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 32 * i));
    const __m256i folded = _mm256_or_si256(v, lower);
    auto bits = [](__m256i x) {
      return std::uint64_t{static_cast<std::uint32_t>(_mm256_movemask_epi8(x))};
    };
    const int shift = 32 * i;
    m.backslash |= bits(_mm256_cmpeq_epi8(v, backslash)) << shift;
    m.quote |= bits(_mm256_cmpeq_epi8(v, quote)) << shift;
    m.open |= bits(_mm256_cmpeq_epi8(folded, open)) << shift;
    m.close |= bits(_mm256_cmpeq_epi8(folded, close)) << shift;
  }
#elif defined(__SSE2__)
  const __m128i backslash = _mm_set1_epi8('\\');
  const __m128i quote = _mm_set1_epi8('"');
  const __m128i lower = _mm_set1_epi8(0x20);
  const __m128i open = _mm_set1_epi8('{');
  const __m128i close = _mm_set1_epi8('}');
  for (int i = 0; i < 4; ++i) {
    const __m128i v =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 16 * i));
    const __m128i folded = _mm_or_si128(v, lower);
    auto bits = [](__m128i x) {
      return std::uint64_t{static_cast<std::uint16_t>(_mm_movemask_epi8(x))};
    };
    const int shift = 16 * i;
    m.backslash |= bits(_mm_cmpeq_epi8(v, backslash)) << shift;
    m.quote |= bits(_mm_cmpeq_epi8(v, quote)) << shift;
    m.open |= bits(_mm_cmpeq_epi8(folded, open)) << shift;
    m.close |= bits(_mm_cmpeq_epi8(folded, close)) << shift;
  }
#else
  for (int i = 0; i < 64; ++i) {
    const char c = block[i];
    const std::uint64_t bit = std::uint64_t{1} << i;
    if (c == '\\')
      m.backslash |= bit;
    else if (c == '"')
      m.quote |= bit;
    else if (c == '[' || c == '{')
      m.open |= bit;
    else if (c == ']' || c == '}')
      m.close |= bit;
  }
#endif
  return m;
}

/// Bit i: the xor of bits 0..i of `x` (from where the quotes are, which
/// bytes lie inside a string).
inline std::uint64_t prefix_xor(std::uint64_t x) noexcept {
#if defined(__PCLMUL__)
  const __m128i product = _mm_clmulepi64_si128(
      _mm_set_epi64x(0, static_cast<long long>(x)), _mm_set1_epi8(-1), 0);
  return static_cast<std::uint64_t>(_mm_cvtsi128_si64(product));
#else
  x ^= x << 1;
  x ^= x << 2;
  x ^= x << 4;
  x ^= x << 8;
  x ^= x << 16;
  x ^= x << 32;
  return x;
#endif
}

inline const char* find_close(const char* p, const char* end) noexcept {
  int depth = 1;
  bool in_string = false;
  bool escape_next = false; // the next block's first byte is escaped
  char padded[64];
  const auto size = static_cast<std::size_t>(end - p);
  for (std::size_t offset = 0; offset < size; offset += 64) {
    const char* const q = p + offset;
    const char* block = q;
    const std::size_t left = size - offset;
    if (left < 64) {
      std::memcpy(padded, q, left);
      std::memset(padded + left, ' ', 64 - left);
      block = padded;
    }
    const block_masks m = classify64(block);
    std::uint64_t escaped = escape_next ? 1u : 0u;
    escape_next = false;
    // Backslashes are rare in Places bodies: follow them one by one. A
    // backslash escapes the next byte unless it is escaped itself.
    for (std::uint64_t bs = m.backslash; bs != 0; bs &= bs - 1) {
      const int i = __builtin_ctzll(bs);
      if ((escaped >> i) & 1u)
        continue;
      if (i == 63)
        escape_next = true;
      else
        escaped |= std::uint64_t{1} << (i + 1);
    }
    std::uint64_t inside = prefix_xor(m.quote & ~escaped);
    if (in_string)
      inside = ~inside;
    in_string = (inside >> 63) != 0;
    const std::uint64_t opens = m.open & ~inside;
    const std::uint64_t closes = m.close & ~inside;
#if defined(__POPCNT__)
    // Fewer closes than the depth: it cannot reach 0 in this block.
    const int n_closes = __builtin_popcountll(closes);
    if (n_closes < depth) {
      depth += __builtin_popcountll(opens) - n_closes;
      continue;
    }
#endif
    // Bracket by bracket, without a branch on which kind it is (a coin
    // toss to predict). Without popcnt (not in x86-64's baseline) this is
    // cheaper than the library's popcount.
    for (std::uint64_t s = opens | closes; s != 0; s &= s - 1) {
      const int i = __builtin_ctzll(s);
      depth += 1 - 2 * static_cast<int>((closes >> i) & 1u);
      if (depth == 0)
        return q + i;
    }
  }
  return end;
}

} // namespace herd::places::detail::JSON_SKIP_NS
