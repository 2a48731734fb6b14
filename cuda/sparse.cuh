#pragma once
// Defines: sparse_dense_forward_kernel and, for small batches,
// sparse_dense_forward_warp_kernel (CSR of W^T), and nm_dense_forward_kernel (N:M
// structured sparsity): the forward pass of a pruned dense layer, y = act(x W + b).

#include <cstdint>

#include "activation.h"
#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// Both sparse kernels: a block of 32 x 8 threads covers 32 output units (one per lane,
// so the stores of y are coalesced) by 32 rows of the batch, each thread 4 rows spaced
// 8 apart, so that each nonzero weight is read once for 4 rows. A thread adds its
// output's products in ascending input order, then the bias, as the CPU does.
constexpr int kSparseCols = 32, kSparseThreadRows = 8, kSparseRowsPerThread = 4;
constexpr int kSparseRows = kSparseThreadRows * kSparseRowsPerThread;

__device__ __forceinline__ void sparse_store(float* y, const float (&acc)[kSparseRowsPerThread], const float* b,
                                             int64_t batch, int64_t out, int64_t row0, int64_t j, Activation act) {
  const float bias = b ? b[j] : 0.0f;
  CUSTOMML_UNROLL
  for (int i = 0; i < kSparseRowsPerThread; ++i) {
    const int64_t r = row0 + i * kSparseThreadRows;
    if (r < batch) y[r * out + j] = act::apply(act, acc[i] + bias);
  }
}

// x: (batch, in)  w: CSR of W^T, (out) rows of nonzeros  b: (out) or null -> y: (batch, out)
// grid (ceil(out / 32), ceil(batch / 32)), block (32, 8)
__global__ void sparse_dense_forward_kernel(float* y, const float* x, CsrMatrix w, const float* b, int64_t batch,
                                            Activation act) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kSparseCols + threadIdx.x;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kSparseRows + threadIdx.y;
  if (j >= w.out || row0 >= batch) return;  // small batches: the idle warps leave at once
  float acc[kSparseRowsPerThread] = {};
  const int64_t end = w.offsets[j + 1];
  for (int64_t t = w.offsets[j]; t < end; ++t) {
    const int64_t c = w.index[t];
    const float v = w.values[t];
    CUSTOMML_UNROLL
    for (int i = 0; i < kSparseRowsPerThread; ++i) {
      const int64_t r = row0 + i * kSparseThreadRows;
      if (r < batch) acc[i] += x[r * w.in + c] * v;
    }
  }
  sparse_store(y, acc, b, batch, w.out, row0, j, act);
}

// Small batches (batch <= kSparseRowsPerThread: one-row inference), where a thread per
// output would walk its nonzeros alone: a warp per output unit, its lanes striding over
// the unit's nonzeros (coalesced reads of index and values), the lanes' partial sums
// added by a butterfly in a fixed order.
// x: (batch, in)  w: CSR of W^T  b: (out) or null -> y: (batch, out); grid (ceil(out / 8)), block kThreads
__global__ void __launch_bounds__(kThreads)
    sparse_dense_forward_warp_kernel(float* y, const float* x, CsrMatrix w, const float* b, int64_t batch,
                                     Activation act) {
  const int lane = threadIdx.x % 32;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (j >= w.out) return;  // whole warps leave together: the butterfly sees all 32 lanes
  float acc[kSparseRowsPerThread] = {};
  const int64_t end = w.offsets[j + 1];
  for (int64_t t = w.offsets[j] + lane; t < end; t += 32) {
    const int64_t c = w.index[t];
    const float v = w.values[t];
    CUSTOMML_UNROLL
    for (int i = 0; i < kSparseRowsPerThread; ++i)
      if (i < batch) acc[i] += x[i * w.in + c] * v;
  }
  CUSTOMML_UNROLL
  for (int i = 0; i < kSparseRowsPerThread; ++i) acc[i] = warp_sum(acc[i]);
  if (lane != 0) return;
  const float bias = b ? b[j] : 0.0f;
  CUSTOMML_UNROLL
  for (int i = 0; i < kSparseRowsPerThread; ++i)
    if (i < batch) y[i * w.out + j] = act::apply(act, acc[i] + bias);
}

// x: (batch, in)  w: N:M, values and index (groups * n, out)  b: (out) or null -> y: (batch, out).
// Lanes read consecutive output units of a slot row of values and index: coalesced. A
// slot whose row lies past `in` (an unused slot of a short last group, whose index may
// be anything) is skipped.
// grid (ceil(out / 32), ceil(batch / 32)), block (32, 8)
__global__ void nm_dense_forward_kernel(float* y, const float* x, NmMatrix w, const float* b, int64_t batch,
                                        Activation act) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kSparseCols + threadIdx.x;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kSparseRows + threadIdx.y;
  if (j >= w.out || row0 >= batch) return;  // small batches: the idle warps leave at once
  float acc[kSparseRowsPerThread] = {};
  const int64_t groups = (w.in + w.m - 1) / w.m;
  for (int64_t g = 0; g < groups; ++g) {
    for (int s = 0; s < w.n; ++s) {
      const int64_t slot = (g * w.n + s) * w.out + j;
      const int64_t c = g * w.m + w.index[slot];
      if (c >= w.in) continue;
      const float v = w.values[slot];
      CUSTOMML_UNROLL
      for (int i = 0; i < kSparseRowsPerThread; ++i) {
        const int64_t r = row0 + i * kSparseThreadRows;
        if (r < batch) acc[i] += x[r * w.in + c] * v;
      }
    }
  }
  sparse_store(y, acc, b, batch, w.out, row0, j, act);
}

}  // namespace customml::CUSTOMML_CUDA_NS
