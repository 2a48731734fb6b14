#pragma once
// Defines: feature_affine_kernel, the per-feature affine map of the preprocessing layers.

#include <cstdint>

#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// x (rows, cols), scale (cols), shift (cols) -> y (rows, cols) = x * scale + shift; a
// grid-stride loop over the n = rows cols elements. nvcc contracts the two into an FMA
// (one rounding fewer than the CPU's product and sum; the tests allow either).
__global__ void __launch_bounds__(kThreads)
    feature_affine_kernel(float* y, const float* x, const float* scale, const float* shift, int64_t n, int64_t cols) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t c = i % cols;
    y[i] = x[i] * scale[c] + shift[c];
  }
}

}  // namespace customml::CUSTOMML_CUDA_NS
