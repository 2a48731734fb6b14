#pragma once
// Defines: sum_squares_kernel and scale_kernel, the two passes of global-norm clipping.

#include <cstdint>

#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// x (n) -> partial (gridDim.x): per-block sums of x^2 in double.
__global__ void __launch_bounds__(kThreads) sum_squares_kernel(double* partial, const float* x, int64_t n) {
  double sum = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads)
    sum += static_cast<double>(x[i]) * x[i];
  sum = block_sum(sum);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

// x (n) *= coef, in double: the coefficient may be below float32's normal range.
__global__ void scale_kernel(float* x, int64_t n, double coef) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = static_cast<float>(x[i] * coef);
}

}  // namespace customml::CUSTOMML_CUDA_NS
