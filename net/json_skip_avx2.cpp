// find_close() built with -mavx2 -mpclmul -mpopcnt; net/json_skip.cpp calls
// it only where the processor has them.
#include "net/json_skip.hpp"

#define JSON_SKIP_NS avx2_impl
#include "net/json_skip_impl.hpp"
#undef JSON_SKIP_NS

namespace herd::places::detail::avx2 {

const char* find_close(const char* p, const char* end) noexcept {
  return avx2_impl::find_close(p, end);
}

} // namespace herd::places::detail::avx2
