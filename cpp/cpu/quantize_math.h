#pragma once
// Defines: round_half_even and to_code, the float -> integer code conversion shared by
// quantize and the gemm_s8 requantizing epilogue.
//
// Internal linkage, like gemm_driver.h: each ISA file includes this under its own flags,
// and an out-of-line copy compiled for AVX-512 must never be what the portable path calls.

#include <cstdint>

namespace customml::cpu {
namespace {

// Round half to even for |v| <= 2^22: v + 1.5 * 2^23 lands in [2^23, 2^24), where the
// spacing of float32 is 1, so the (default, nearest-even) rounding of the addition rounds
// v; the subtraction is then exact. Unlike nearbyint, it vectorizes on plain SSE2.
inline float round_half_even(float v) {
  constexpr float kMagic = 12582912.0f;
  return (v + kMagic) - kMagic;
}

// clamp(round_half_even(v) + zero, lo, hi), v = x / scale. Clamping v to the integers
// [lo - zero, hi - zero] first gives the same code (rounding is monotone and fixes
// integers) and keeps |v| small for round_half_even; infinities clamp, and a NaN (which
// only a product of overflowing scales can make) becomes lo instead of undefined behaviour.
inline int32_t to_code(float v, int32_t zero, int32_t lo, int32_t hi) {
  const float a = static_cast<float>(lo - zero), b = static_cast<float>(hi - zero);
  v = v > a ? v : a;
  v = v < b ? v : b;
  return static_cast<int32_t>(round_half_even(v)) + zero;
}

}  // namespace
}  // namespace customml::cpu
