#pragma once
// Defines: host_bf16_bits, host_fp16_bits and round_to_half_host, the
// host's rounding of floats to a 16-bit tensor-core format (bf16 or IEEE fp16) as bits: round to nearest even, overflow
// to inf (fp16 past 65504), subnormals kept, NaN kept a quiet NaN of the same sign. These are the bits the device's
// rounding gives (cuda/half_bits.cuh: __float2bfloat16_rn /
// __float2half_rn, and the SIMT emulator's conversions, which this mirrors), so a batch
// rounded while the host gathers it (Trainer's first Dense layer, docs/decisions.md, CUDA)
// is what the GEMM would have rounded as it staged the float batch. Only a NaN's payload
// may differ from the hardware's canonical NaN; a NaN operand makes the same NaN sums.
// tests/test_half_staging.py checks the bits against Backend::round_to_half at every ISA
// level (cpu/elementwise_kernels.h compiles the loop for each: ElementwiseKernels::round_to_half).

#include <cmath>
#include <cstdint>
#include <cstring>

namespace customml {

// fp16 without branches, so that a batch's loop vectorizes (0.5 ns a value in the portable
// build, SSE2, against 9 with a branch per case; 0.08 with AVX-512; Zen 5): the float adder
// does the rounding. |f| times 4 (through 2^112, so that values past fp16's range overflow
// to inf) is added to k = 2^(e + 15), e = max(f's exponent, -14): the sum keeps f's bits
// down to fp16's ulp at f's exponent (or the subnormals'), rounded to nearest even, and its
// low bits are the fp16 exponent and mantissa (the exponent's bias sums in). Checked against
// the branchy form (the emulator's __float2half) over all 2^32 floats.
inline uint16_t host_fp16_bits(float f) {
  // signed 32-bit integers only: what SSE2 compares and selects in vectors
  int32_t w;
  std::memcpy(&w, &f, 4);
  const int32_t abs = w & 0x7FFFFFFF, sign = (w >> 16) & 0x8000;
  int32_t exponent = abs & 0x7F800000;
  exponent = exponent < 0x38800000 ? 0x38800000 : exponent;  // at least 2^-14's: the subnormals' ulp
  const int32_t k_bits = exponent + 0x07800000;              // 2^(e + 15)
  float k, base = (std::fabs(f) * 0x1.0p+112f) * 0x1.0p-110f;
  std::memcpy(&k, &k_bits, 4);
  base += k;
  int32_t bits;
  std::memcpy(&bits, &base, 4);
  const int32_t nonsign = ((bits >> 13) & 0x7C00) + (bits & 0x0FFF);
  // NaN: a quiet one of f's sign. A mask, not a branch: the sum above would move into the
  // branch, and GCC (trapping math) neither vectorizes nor if-converts a conditional sum.
  const int32_t nan = -static_cast<int32_t>(abs > 0x7F800000);
  return static_cast<uint16_t>(sign | (nan & 0x7E00) | (~nan & nonsign));
}

// bf16: the top half of the float, rounded to nearest even.
inline uint16_t host_bf16_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7FFFu + ((x >> 16) & 1u);  // a carry into the exponent is correct (up to inf)
  return static_cast<uint16_t>(x >> 16);
}

// dst (n) = src rounded to bf16 (bf16) or fp16, as bits.
inline void round_to_half_host(uint16_t* dst, const float* src, int64_t n, bool bf16) {
  if (bf16) {
    for (int64_t i = 0; i < n; ++i) dst[i] = host_bf16_bits(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = host_fp16_bits(src[i]);
  }
}

}  // namespace customml
