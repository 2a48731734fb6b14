#pragma once
// Defines: binary_cross_entropy_kernel, loss partial sums and gradient in one pass.

#include <cmath>
#include <cstdint>

#include "activation.h"
#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// logits, targets (n) -> grad (n) or null, partial (gridDim.x): per-block sums of
// max(z, 0) - z t + log1p(exp(-|z|)); the gradient is (sigmoid(z) - t) / n.
__global__ void __launch_bounds__(kThreads)
    binary_cross_entropy_kernel(double* partial, float* grad, const float* logits, const float* targets, int64_t n) {
  const float inv_n = 1.0f / static_cast<float>(n);
  double sum = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const float z = logits[i], t = targets[i];
    sum += static_cast<double>(z > 0.0f ? z : 0.0f) - static_cast<double>(z) * t +
           log1p(exp(-static_cast<double>(fabsf(z))));
    if (grad) grad[i] = (act::sigmoid(z) - t) * inv_n;
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

}  // namespace customml::CUSTOMML_CUDA_NS
