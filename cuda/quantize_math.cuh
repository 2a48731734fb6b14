#pragma once
// Defines: quantize_value, the float -> integer code conversion shared by the quantize
// kernels and gemm_s8's requantizing epilogue (the device twin of cpu/quantize_math.h).

#include <cstdint>

#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// The code of x for scale and zero in [lo, hi]: clamp(round_half_even(x / scale) + zero).
// The clamp is taken before the zero point is added and before the conversion to int,
// so a quotient far outside int range (x huge, scale tiny, or infinite) stays defined.
__device__ __forceinline__ int32_t quantize_value(float x, float scale, int32_t zero, int32_t lo, int32_t hi) {
  float r = rintf(x / scale);  // rintf: round half to even, the default rounding mode
  r = fminf(fmaxf(r, static_cast<float>(lo - zero)), static_cast<float>(hi - zero));
  return static_cast<int32_t>(r) + zero;
}

}  // namespace customml::CUSTOMML_CUDA_NS
