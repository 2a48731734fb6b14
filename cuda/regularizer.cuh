#pragma once
// Defines: kernel_penalties_kernel, the L1/L2 penalties of up to kPenaltyTerms Dense
// kernels, their gradients and their sum in one launch.

#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/loss_epilogue.cuh"
#include "cuda/penalty.cuh"

namespace customml::CUSTOMML_CUDA_NS {

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

// Block (x, y) takes term y's share x of gridDim.x (penalty_block_sum: the gradient added,
// partial[y gridDim.x + x] = the block's sum). The grid's last block to finish (a ticket
// after a fence, as finish_loss_grid) adds each term's partials in block order
// (sum_partials_kernel's ordered_sum) and the terms in order: the bits of one penalty
// kernel and one finishing launch per layer.
__global__ void __launch_bounds__(kThreads) kernel_penalties_kernel(double* partial, PenaltyLaunch p) {
  const double sum = penalty_block_sum(penalty_term(p.terms, static_cast<int>(blockIdx.y)), blockIdx.x, gridDim.x);
  __shared__ unsigned last;
  CUSTOMML_POISON_SHARED(last);
  if (threadIdx.x == 0) partial[blockIdx.y * gridDim.x + blockIdx.x] = sum;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(p.ticket, 1u) == gridDim.x * gridDim.y - 1 ? 1u : 0u;
  __syncthreads();
  if (last == 0u) return;
  __threadfence();
  const double penalty = penalties_total(partial, p.count, gridDim.x, p.first ? 0.0 : *p.penalty);
  if (threadIdx.x != 0) return;
  *p.penalty = penalty;
  if (p.sum && !(p.gate && p.gate->skip != 0.0)) *p.sum += penalty * p.weight;
  *p.ticket = 0u;
}

}  // namespace customml::CUSTOMML_CUDA_NS
