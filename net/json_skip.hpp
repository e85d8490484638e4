// Stepping over JSON without validating it: what the Places cut does with
// the result elements past the bound. Bit masks of a 64-byte block's quotes,
// backslashes and brackets (the first stage of simdjson), so the cost is a
// few instructions per 64 bytes, not a branch per byte. x86-64 processors
// with AVX2 and carry-less multiplication get a build of it for them
// (net/json_skip_avx2.cpp), chosen once at run time; others the SSE2 one.
#pragma once

namespace herd::places::detail {

/// From `p`, which lies inside one open array or object and outside any
/// string, the first byte (a ']' or '}') that closes it, following strings
/// and their escapes so that brackets inside strings do not count; `end` if
/// the input ends first.
const char* find_close(const char* p, const char* end) noexcept;

/// find_close() as built for any x86-64 (SSE2) or other processor; the
/// fallback, and for tests that check the two builds agree.
const char* find_close_baseline(const char* p, const char* end) noexcept;

} // namespace herd::places::detail
