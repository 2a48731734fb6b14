#pragma once
// Defines: l1_l2_penalty_kernel, the L1/L2 penalty of a Dense kernel and its gradient.

#include <cstdint>

#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// grad (n) or null, param (n) -> grad += l1 sign(w) + 2 l2 w; partial (gridDim.x): per-block
// sums of l1 |w| + l2 w^2 in double (the host adds them in block order).
__global__ void __launch_bounds__(kThreads) l1_l2_penalty_kernel(double* partial, float* grad, const float* param,
                                                                  int64_t n, float l1, float l2) {
  double sum = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const float w = param[i];
    const double wd = static_cast<double>(w);
    sum += static_cast<double>(l1) * (wd < 0.0 ? -wd : wd) + static_cast<double>(l2) * wd * wd;
    if (grad) {
      const float sign = w > 0.0f ? 1.0f : (w < 0.0f ? -1.0f : 0.0f);
      grad[i] += l1 * sign + 2.0f * l2 * w;
    }
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

}  // namespace customml::CUSTOMML_CUDA_NS
