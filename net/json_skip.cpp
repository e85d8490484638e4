#include "net/json_skip.hpp"

#define JSON_SKIP_NS baseline
#include "net/json_skip_impl.hpp"
#undef JSON_SKIP_NS

namespace herd::places::detail {

#if defined(HERD_JSON_SKIP_AVX2)
namespace avx2 {
const char* find_close(const char* p, const char* end) noexcept;
}

namespace {
bool have_avx2() noexcept {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("pclmul") &&
         __builtin_cpu_supports("popcnt");
}
} // namespace
#endif

const char* find_close(const char* p, const char* end) noexcept {
#if defined(HERD_JSON_SKIP_AVX2)
  static const bool avx2 = have_avx2();
  if (avx2)
    return avx2::find_close(p, end);
#endif
  return baseline::find_close(p, end);
}

const char* find_close_baseline(const char* p, const char* end) noexcept {
  return baseline::find_close(p, end);
}

} // namespace herd::places::detail
