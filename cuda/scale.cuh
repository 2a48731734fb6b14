#pragma once
// Defines: scale_kernel, a flat buffer scaled in place in float4s (global-norm clipping's
// second pass, the fp16 loss scale).

#include <cstdint>

#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// x (n) *= coef, in double: the coefficient may be below float32's normal range. split
// (vec4_split of x): float4s one per thread, then the head and tail elements.
__global__ void scale_kernel(float* x, int64_t n, Vec4Split split, double coef) {
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t u = first; u < split.vecs; u += stride) {
    float a[4];
    load4(a, x + split.head + 4 * u);
    CUSTOMML_UNROLL
    for (int j = 0; j < 4; ++j) a[j] = static_cast<float>(a[j] * coef);
    store4(x + split.head + 4 * u, a);
  }
  for (int64_t k = first; k < n - 4 * split.vecs; k += stride) {
    const int64_t i = vec4_scalar_index(split, k);
    x[i] = static_cast<float>(x[i] * coef);
  }
}

}  // namespace customml::CUSTOMML_CUDA_NS
