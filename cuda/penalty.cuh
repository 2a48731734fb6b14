#pragma once
// Defines: the device functions (no kernels, so any launcher file may include this) of the
// L1/L2 kernel penalties: an element's gradient and a block's share of a penalty's sum (the
// terms' total: penalties_total in cuda/loss_epilogue.cuh). kernel_penalties_kernel, the
// loss launches that sum the penalties (cuda/loss_epilogue.cuh) and the dense backward's
// dW store that adds their gradient (store_c, cuda/dense.cuh) share them: the same bits on
// every path.

#include <cstdint>

#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

constexpr int kPenaltyTerms = 8;

// The gradient of l1 |w| + l2 w^2 at w (sign(0) = 0, as Keras' gradient of |w|).
__device__ __forceinline__ float penalty_gradient(float l1, float l2, float w) {
  return l1 * static_cast<float>((w > 0.0f) - (w < 0.0f)) + 2.0f * l2 * w;
}

// Block x of `blocks` over term t takes its elements i = x kThreads + thread, stepping by
// blocks kThreads: t.grad += penalty_gradient when t.grad is set, and the block's sum of
// l1 |w| + l2 w^2 in double, valid in thread 0. |w| and w^2 are summed apart and scaled
// once, as on the CPU; a per-element l1 |w| + l2 w^2 with a conditional |w| made ptxas
// spill on sm_90.
__device__ __forceinline__ double penalty_block_sum(const PenaltyTerm& t, int64_t x, int64_t blocks) {
  double abs_sum = 0.0, sq_sum = 0.0;
  for (int64_t i = x * kThreads + threadIdx.x; i < t.n; i += blocks * kThreads) {
    const float w = t.param[i];
    abs_sum += fabs(static_cast<double>(w));
    sq_sum += static_cast<double>(w) * w;
    if (t.grad) t.grad[i] += penalty_gradient(t.l1, t.l2, w);
  }
  return block_sum(static_cast<double>(t.l1) * abs_sum + static_cast<double>(t.l2) * sq_sum);
}

// terms[k] for the block-uniform k < kPenaltyTerms: constant indices, so the launch's
// parameters are read in place (a dynamic index would copy the array to local memory).
__device__ __forceinline__ PenaltyTerm penalty_term(const PenaltyTerm (&terms)[kPenaltyTerms], int k) {
  PenaltyTerm t;
  CUSTOMML_UNROLL
  for (int j = 0; j < kPenaltyTerms; ++j)
    if (j == k) t = terms[j];
  return t;
}

}  // namespace customml::CUSTOMML_CUDA_NS
