#pragma once
// Defines: apply_mask_kernel, a pruning mask applied to a flat parameter buffer.

#include <cstdint>

#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// param: (n) -> param[i] = +0 where keep[i] == 0. Four elements per thread: one 16-byte
// load / store of param and one 4-byte load of keep where both are aligned.
constexpr int kMaskVec = 4;
__global__ void apply_mask_kernel(float* param, const uint8_t* keep, int64_t n) {
  const bool aligned = (reinterpret_cast<uintptr_t>(param) & 15) == 0 && (reinterpret_cast<uintptr_t>(keep) & 3) == 0;
  for (int64_t i0 = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * kMaskVec; i0 < n;
       i0 += static_cast<int64_t>(gridDim.x) * blockDim.x * kMaskVec) {
    if (aligned && i0 + kMaskVec <= n) {
      const uint32_t k4 = *reinterpret_cast<const uint32_t*>(keep + i0);
      if (k4 == 0x01010101u) continue;  // the common case of a mask: nothing to clear
      float4 p4 = *reinterpret_cast<const float4*>(param + i0);
      if (!(k4 & 0xFFu)) p4.x = 0.0f;
      if (!(k4 & 0xFF00u)) p4.y = 0.0f;
      if (!(k4 & 0xFF0000u)) p4.z = 0.0f;
      if (!(k4 & 0xFF000000u)) p4.w = 0.0f;
      *reinterpret_cast<float4*>(param + i0) = p4;
      continue;
    }
    for (int64_t i = i0; i < n && i < i0 + kMaskVec; ++i)
      if (!keep[i]) param[i] = 0.0f;
  }
}

}  // namespace customml::CUSTOMML_CUDA_NS
