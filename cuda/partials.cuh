#pragma once
// Defines: the kernels that finish a reduction on the device (per-block partial sums into
// one loss or count, and a loss into an epoch's sum), so a training step leaves its
// scalar results in device memory instead of waiting to add them on the host. Included by
// cuda/partials.cu alone (kernels have external linkage); the other launchers call the
// host functions that device_context.h declares.

#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/device_context.h"
#include "cuda/loss_epilogue.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// -> out (1) = the partials' sum, finished as p.finish says. One block of kThreads: each
// thread adds a contiguous slice in order, then thread 0 adds the slices in order, so the
// result is deterministic, and with at most kThreads terms (every per-block reduction) it
// is the plain left-to-right sum the host used to make.
__global__ void sum_partials_kernel(double* out, PartialsSum p) {
  const double total = ordered_sum(p.partials + p.first, p.count);
  if (threadIdx.x != 0) return;
  switch (p.finish) {
    case Finish::mean: *out = *p.total > 0.0 ? total / *p.total : 0.0; break;
    case Finish::divide: *out = total / p.divisor; break;
  }
}

// counts (n) -> out (1) += their sum (integers: exact in any order).
__global__ void sum_counts_kernel(int64_t* out, const int64_t* counts, int64_t n) {
  int64_t sum = 0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) sum += counts[i];
  sum = block_sum(sum);
  if (threadIdx.x == 0) *out += sum;
}

// sum (1) += value (1) * weight
__global__ void accumulate_kernel(double* sum, const double* value, double weight, const StepState* gate) {
  if (!(gate && gate->skip != 0.0)) *sum += *value * weight;
}

}  // namespace customml::CUSTOMML_CUDA_NS
