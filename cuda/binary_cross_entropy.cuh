#pragma once
// Defines: binary_cross_entropy_with_logits_kernel, loss partial sums and gradient in one pass.

#include <cmath>
#include <cstdint>

#include "activation.h"
#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// logits, targets (n = rows cols), row_weights (rows) or null, total (1) = W (read only
// with row weights) -> grad (n) or null, partial (gridDim.x): per-block sums of
// w_i (max(z, 0) - z t + log1p(exp(-|z|))) (w_i = 1 without weights); the gradient is
// (sigmoid(z) - t) / n, or w_i (sigmoid(z) - t) / (cols W).
__global__ void __launch_bounds__(kThreads)
    binary_cross_entropy_with_logits_kernel(double* partial, float* grad, const float* logits, const float* targets,
                                            const float* row_weights, const double* total, int64_t n, int64_t cols) {
  const float inv_n = 1.0f / static_cast<float>(n);
  const double inv_total = row_weights && *total > 0.0 ? 1.0 / (*total * static_cast<double>(cols)) : 0.0;
  double sum = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const float z = logits[i], t = targets[i];
    const double w = row_weights ? static_cast<double>(row_weights[i / cols]) : 1.0;
    sum += w * (static_cast<double>(z > 0.0f ? z : 0.0f) - static_cast<double>(z) * t +
                log1p(exp(-static_cast<double>(fabsf(z)))));
    if (grad) grad[i] = (act::sigmoid(z) - t) * (row_weights ? static_cast<float>(w * inv_total) : inv_n);
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

}  // namespace customml::CUSTOMML_CUDA_NS
