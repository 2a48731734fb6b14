#pragma once
// Defines: kernel_penalties_kernel, the L1/L2 penalties of up to kPenaltyTerms Dense
// kernels, their gradients and their sum in one launch.

#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/loss_epilogue.cuh"

namespace customml::CUSTOMML_CUDA_NS {

constexpr int kPenaltyTerms = 8;

// One launch's terms (by value: no device table to upload) and where their sum goes.
struct PenaltyLaunch {
  PenaltyTerm terms[kPenaltyTerms];
  int count;
  bool first;       // penalty starts from 0 (else it is added to)
  double* penalty;  // (1)
  double* sum;      // (1) += penalty * weight unless gate skips the step; null: not
  double weight;
  const StepState* gate;
  unsigned* ticket;  // (1), 0 between launches (the last block puts it back)
};

// Block (x, y) takes term y's elements i = x kThreads + t, stepping by gridDim.x kThreads:
// grad += l1 sign(w) + 2 l2 w (sign(0) = 0), and partial[y gridDim.x + x] = the block's
// sum of l1 |w| + l2 w^2 in double. |w| and w^2 are summed apart and scaled once, as on
// the CPU; a per-element l1 |w| + l2 w^2 with a conditional |w| made ptxas spill on sm_90.
// The grid's last block to finish (a ticket after a fence, as finish_loss_grid) adds each
// term's partials in block order (sum_partials_kernel's ordered_sum) and the terms in
// order: the bits of one penalty kernel and one finishing launch per layer.
__global__ void __launch_bounds__(kThreads) kernel_penalties_kernel(double* partial, PenaltyLaunch p) {
  PenaltyTerm t;
  CUSTOMML_UNROLL
  for (int k = 0; k < kPenaltyTerms; ++k)  // constant indices: no local copy of the parameters
    if (k == static_cast<int>(blockIdx.y)) t = p.terms[k];
  double abs_sum = 0.0, sq_sum = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < t.n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const float w = t.param[i];
    abs_sum += fabs(static_cast<double>(w));
    sq_sum += static_cast<double>(w) * w;
    if (t.grad) t.grad[i] += t.l1 * static_cast<float>((w > 0.0f) - (w < 0.0f)) + 2.0f * t.l2 * w;
  }
  const double sum = block_sum(static_cast<double>(t.l1) * abs_sum + static_cast<double>(t.l2) * sq_sum);
  __shared__ unsigned last;
  CUSTOMML_POISON_SHARED(last);
  if (threadIdx.x == 0) partial[blockIdx.y * gridDim.x + blockIdx.x] = sum;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(p.ticket, 1u) == gridDim.x * gridDim.y - 1 ? 1u : 0u;
  __syncthreads();
  if (last == 0u) return;
  __threadfence();
  double penalty = p.first ? 0.0 : *p.penalty;
  for (int k = 0; k < p.count; ++k) {
    const double term = ordered_sum(partial + k * gridDim.x, gridDim.x);
    penalty += term;  // thread 0's is the sum
  }
  if (threadIdx.x != 0) return;
  *p.penalty = penalty;
  if (p.sum && !(p.gate && p.gate->skip != 0.0)) *p.sum += penalty * p.weight;
  *p.ticket = 0u;
}

}  // namespace customml::CUSTOMML_CUDA_NS
