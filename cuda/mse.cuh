#pragma once
// Defines: mse_kernel, loss partial sums and gradient in one pass.

#include <cstdint>

#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// pred, target (n) -> grad (n) = 2 (pred - target) / n or null, partial (gridDim.x):
// per-block sums of (pred - target)^2.
__global__ void __launch_bounds__(kThreads)
    mse_kernel(double* partial, float* grad, const float* pred, const float* target, int64_t n) {
  const float scale = 2.0f / static_cast<float>(n);
  double sum = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const float d = pred[i] - target[i];
    sum += static_cast<double>(d) * d;
    if (grad) grad[i] = scale * d;
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

}  // namespace customml::CUSTOMML_CUDA_NS
