#pragma once
// Defines: sum_squares_kernel (the gradients' global norm in one launch, with fp16's
// loss-scale update) and clip_scale_kernel, the two passes of global-norm clipping, in
// float4s.

#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/loss_epilogue.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// Where sum_squares_kernel leaves the norm: ticket (1) counts the blocks that are done and
// is 0 between launches (the last block puts it back, so a recorded graph replays too).
struct NormFinish {
  double* norm;      // (1)
  unsigned* ticket;  // (1)
  StepState* state;  // (1) fp16's, its loss scale updated from the norm; null otherwise
  int64_t growth_interval;
};

// x (n) -> partial (gridDim.x): per-block sums of x^2 in double; then the grid's last
// block to finish (a ticket taken after a fence, as finish_loss_grid) adds them in block
// order with sum_partials_kernel's ordered_sum, so norm = sqrt of the same bits the
// separate finishing launch made, and with a state runs update_loss_scale on it (the
// overflow check of fp16 in one launch). Thread t adds the quads of elements 4q .. 4q + 3
// for q = t, t + stride, ... in order, element by element: one 16-byte load per quad
// where x is 16-byte aligned (`aligned`), four loads otherwise, so the sum is the same
// bits whatever x's alignment. Quads count from element 0 rather than from x's first
// 16-byte boundary for that reason. The grid is fixed (kReduceBlocks, for determinism),
// so each thread loads kSumUnroll quads before adding them, in the same order: enough
// bytes in flight to cover the memory latency with few threads.
constexpr int kSumUnroll = 4;
__global__ void __launch_bounds__(kThreads)
    sum_squares_kernel(double* partial, const float* x, int64_t n, bool aligned, NormFinish f) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t full_quads = aligned ? n / 4 : 0;  // quads read as float4s
  double sum = 0.0;
  int64_t q = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  for (; q + (kSumUnroll - 1) * stride < full_quads; q += kSumUnroll * stride) {
    float a[kSumUnroll][4];
    CUSTOMML_UNROLL
    for (int k = 0; k < kSumUnroll; ++k) load4(a[k], x + 4 * (q + k * stride));
    CUSTOMML_UNROLL
    for (int k = 0; k < kSumUnroll; ++k) {
      CUSTOMML_UNROLL
      for (int j = 0; j < 4; ++j) sum += static_cast<double>(a[k][j]) * a[k][j];
    }
  }
  for (; 4 * q < n; q += stride) {
    if (q < full_quads) {
      float a[4];
      load4(a, x + 4 * q);
      CUSTOMML_UNROLL
      for (int j = 0; j < 4; ++j) sum += static_cast<double>(a[j]) * a[j];
    } else {
      for (int64_t i = 4 * q; i < n && i < 4 * q + 4; ++i) sum += static_cast<double>(x[i]) * x[i];
    }
  }
  sum = block_sum(sum);
  __shared__ unsigned last;
  CUSTOMML_POISON_SHARED(last);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(f.ticket, 1u) == gridDim.x - 1 ? 1u : 0u;
  __syncthreads();
  if (last == 0u) return;
  __threadfence();
  const double total = ordered_sum(partial, gridDim.x);
  if (threadIdx.x != 0) return;
  *f.norm = sqrt(total);
  if (f.state) update_loss_scale(*f.state, *f.norm, f.growth_interval);
  *f.ticket = 0u;
}

// x (n) *= max_norm / (norm + 1e-6) when that is below 1, norm (1) read from device memory:
// clipping decides on the device.
__global__ void clip_scale_kernel(float* x, int64_t n, Vec4Split split, const double* norm, float max_norm) {
  const double coef = static_cast<double>(max_norm) / (*norm + 1e-6);
  if (coef < 1.0) scale_elements(x, n, split, coef);
}

}  // namespace customml::CUSTOMML_CUDA_NS
