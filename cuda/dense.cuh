#pragma once
// Defines: gemm_kernel (the tiled float32 GEMM with the fused bias + activation
// epilogue behind all three GEMMs of a dense layer), dense_dz_kernel and
// dense_db_kernel (the rest of the backward pass).

#include <cstdint>

#include "activation.h"
#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// C (m, n) = act(op(A) (m, k) . op(B) (k, n) + bias (n)); A and B through element
// strides, so transposed operands are read in place. preact, if set, receives the
// value before the activation.
struct GemmParams {
  int64_t m, n, k;
  const float* a;
  int64_t a_rs, a_cs;
  const float* b;
  int64_t b_rs, b_cs;
  float* c;
  int64_t ldc;
  const float* bias;
  Activation act;
  float* preact;
};

// A 64 x 64 tile of C per block of 256 threads, each thread a 4 x 4 register tile;
// 16-deep slices of A and B staged through shared memory.
constexpr int kGemmBm = 64, kGemmBn = 64, kGemmBk = 16, kGemmTm = 4, kGemmTn = 4;
constexpr int kGemmThreads = (kGemmBm / kGemmTm) * (kGemmBn / kGemmTn);

// grid (ceil(n / 64), ceil(m / 64)), block kGemmThreads
__global__ void __launch_bounds__(kGemmThreads) gemm_kernel(GemmParams p) {
  __shared__ float as[kGemmBk][kGemmBm];
  __shared__ float bs[kGemmBk][kGemmBn];
  const int tid = threadIdx.x;
  const int tx = tid % (kGemmBn / kGemmTn), ty = tid / (kGemmBn / kGemmTn);
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kGemmBm;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kGemmBn;
  float acc[kGemmTm][kGemmTn];
  for (int i = 0; i < kGemmTm; ++i)
    for (int j = 0; j < kGemmTn; ++j) acc[i][j] = 0.0f;

  for (int64_t k0 = 0; k0 < p.k; k0 += kGemmBk) {
    // Stage the slices, zero past the edges so the inner loop needs no bounds checks.
    for (int e = tid; e < kGemmBk * kGemmBm; e += kGemmThreads) {
      const int kk = e / kGemmBm, mm = e % kGemmBm;
      const int64_t r = row0 + mm, kidx = k0 + kk;
      as[kk][mm] = (r < p.m && kidx < p.k) ? p.a[r * p.a_rs + kidx * p.a_cs] : 0.0f;
    }
    for (int e = tid; e < kGemmBk * kGemmBn; e += kGemmThreads) {
      const int kk = e / kGemmBn, nn = e % kGemmBn;
      const int64_t c = col0 + nn, kidx = k0 + kk;
      bs[kk][nn] = (c < p.n && kidx < p.k) ? p.b[kidx * p.b_rs + c * p.b_cs] : 0.0f;
    }
    __syncthreads();
    for (int kk = 0; kk < kGemmBk; ++kk) {
      float a_frag[kGemmTm], b_frag[kGemmTn];
      for (int i = 0; i < kGemmTm; ++i) a_frag[i] = as[kk][ty * kGemmTm + i];
      for (int j = 0; j < kGemmTn; ++j) b_frag[j] = bs[kk][tx * kGemmTn + j];
      for (int i = 0; i < kGemmTm; ++i)
        for (int j = 0; j < kGemmTn; ++j) acc[i][j] += a_frag[i] * b_frag[j];
    }
    __syncthreads();  // the next slice overwrites as / bs
  }

  for (int i = 0; i < kGemmTm; ++i) {
    const int64_t r = row0 + ty * kGemmTm + i;
    if (r >= p.m) continue;
    for (int j = 0; j < kGemmTn; ++j) {
      const int64_t c = col0 + tx * kGemmTn + j;
      if (c >= p.n) continue;
      const float v = acc[i][j] + (p.bias ? p.bias[c] : 0.0f);
      if (p.preact) p.preact[r * p.ldc + c] = v;
      p.c[r * p.ldc + c] = act::apply(p.act, v);
    }
  }
}

// dz (count) = dy * act'(.) from the forward output y (and z for gelu); dz may alias dy.
__global__ void dense_dz_kernel(float* dz, const float* dy, const float* y, const float* z, int64_t count,
                                Activation act) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dz[i] = act::backward(act, dy[i], y[i], z ? z[i] : 0.0f);
}

// db (out) = column sums of dz (batch, out): a thread per column, rows in order, so the
// sum is the CPU's and does not depend on scheduling.
__global__ void dense_db_kernel(float* db, const float* dz, int64_t batch, int64_t out) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= out) return;
  float sum = 0.0f;
  for (int64_t r = 0; r < batch; ++r) sum += dz[r * out + j];
  db[j] = sum;
}

}  // namespace customml::CUSTOMML_CUDA_NS
