#pragma once
// Defines: mse_kernel, loss partial sums and gradient in one pass.

#include <cstdint>

#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// pred, target (n = rows cols), row_weights (rows) or null, total (1) = W (read only
// with row weights) -> grad (n) or null, partial (gridDim.x): per-block sums of
// w_i (pred - target)^2 (w_i = 1 without weights); the gradient is 2 (pred - target) / n,
// or 2 w_i (pred - target) / (cols W).
__global__ void __launch_bounds__(kThreads)
    mse_kernel(double* partial, float* grad, const float* pred, const float* target, const float* row_weights,
               const double* total, int64_t n, int64_t cols) {
  const float scale = 2.0f / static_cast<float>(n);
  const double inv_total = row_weights && *total > 0.0 ? 2.0 / (*total * static_cast<double>(cols)) : 0.0;
  double sum = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const float d = pred[i] - target[i];
    const double w = row_weights ? static_cast<double>(row_weights[i / cols]) : 1.0;
    sum += w * (static_cast<double>(d) * d);
    if (grad) grad[i] = (row_weights ? static_cast<float>(w * inv_total) : scale) * d;
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

}  // namespace customml::CUSTOMML_CUDA_NS
