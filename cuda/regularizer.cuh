#pragma once
// Defines: l1_l2_penalty_kernel, the L1/L2 penalty of a Dense kernel and its gradient.

#include <cstdint>

#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// grad (n) or null, param (n) -> grad += l1 sign(w) + 2 l2 w (sign(0) = 0); partial
// (gridDim.x): per-block sums of l1 |w| + l2 w^2 in double (the host adds them in block
// order). |w| and w^2 are summed apart and scaled once, as on the CPU; a per-element
// l1 |w| + l2 w^2 with a conditional |w| made ptxas spill on sm_90.
__global__ void __launch_bounds__(kThreads)
    l1_l2_penalty_kernel(double* partial, float* grad, const float* param, int64_t n, float l1, float l2) {
  double abs_sum = 0.0, sq_sum = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const float w = param[i];
    abs_sum += fabs(static_cast<double>(w));
    sq_sum += static_cast<double>(w) * w;
    if (grad) grad[i] += l1 * static_cast<float>((w > 0.0f) - (w < 0.0f)) + 2.0f * l2 * w;
  }
  const double sum = block_sum(static_cast<double>(l1) * abs_sum + static_cast<double>(l2) * sq_sum);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

}  // namespace customml::CUSTOMML_CUDA_NS
