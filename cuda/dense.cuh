#pragma once
// Defines: gemm_kernel (the tiled float32 GEMM with the fused bias + activation
// epilogue behind all three GEMMs of a dense layer), gemm_tc_kernel (its tensor-core
// twin through the wmma API, for tf32, bf16 and fp16), dense_dz_kernel and
// dense_db_kernel (the rest of the backward pass).

#include <cstdint>

#include "activation.h"
#include "cuda/common.cuh"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#else
#include "simt/wmma.h"
#endif

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
// 16-deep slices of A and B staged through two shared-memory buffers (double buffering:
// the next slice's global loads are in flight while the current one is multiplied, and
// one barrier per slice suffices). Each thread moves 4 elements of each operand per
// slice, as one 16-byte load when the operand is contiguous along that direction and
// aligned, else as 4 scalar loads.
constexpr int kGemmBm = 64, kGemmBn = 64, kGemmBk = 16, kGemmTm = 4, kGemmTn = 4;
constexpr int kGemmThreads = (kGemmBm / kGemmTm) * (kGemmBn / kGemmTn);

// One operand's slice: `rows` x `cols` of a strided matrix, into shared memory laid out
// [k][m] (A) or [k][n] (B). along_k: the thread's 4 elements run along k (the operand is
// k-contiguous), else along m / n.
struct SliceLoad {
  float v[4];

  // (r, k): the first element; step_r, step_k: between the 4 elements.
  __device__ __forceinline__ void load(const float* base, int64_t rs, int64_t cs, int64_t r, int64_t k, int64_t rows,
                                       int64_t depth, bool along_k) {
    const int64_t dr = along_k ? 0 : 1, dk = along_k ? 1 : 0;
    const int64_t contiguous_stride = along_k ? cs : rs;
    const float* p = base + r * rs + k * cs;
    const bool in_bounds = along_k ? (r < rows && k + 3 < depth) : (r + 3 < rows && k < depth);
    if (in_bounds && contiguous_stride == 1 && (reinterpret_cast<uintptr_t>(p) & 15) == 0) {
      const float4 q = *reinterpret_cast<const float4*>(p);
      v[0] = q.x;
      v[1] = q.y;
      v[2] = q.z;
      v[3] = q.w;
      return;
    }
    CUSTOMML_UNROLL
    for (int i = 0; i < 4; ++i) {
      const int64_t ri = r + i * dr, ki = k + i * dk;
      v[i] = (ri < rows && ki < depth) ? base[ri * rs + ki * cs] : 0.0f;
    }
  }
};

// grid (ceil(n / 64), ceil(m / 64)), block kGemmThreads
__global__ void __launch_bounds__(kGemmThreads) gemm_kernel(GemmParams p) {
  __shared__ __align__(16) float as[2][kGemmBk][kGemmBm];
  __shared__ __align__(16) float bs[2][kGemmBk][kGemmBn];
  const int tid = threadIdx.x;
  const int tx = tid % (kGemmBn / kGemmTn), ty = tid / (kGemmBn / kGemmTn);
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kGemmBm;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kGemmBn;
  // Which direction each operand's 4-element runs take: along the contiguous one.
  const bool a_along_k = p.a_cs == 1, b_along_k = p.b_cs != 1 && p.b_rs == 1;
  // A: along k, thread t takes row t / 4, k (t % 4) * 4; else k t / 16, rows (t % 16) * 4.
  const int a_m = a_along_k ? tid / 4 : (tid % 16) * 4, a_k = a_along_k ? (tid % 4) * 4 : tid / 16;
  // B: along n, thread t takes k t / 16, columns (t % 16) * 4; else column t / 4, k (t % 4) * 4.
  const int b_n = b_along_k ? tid / 4 : (tid % 16) * 4, b_k = b_along_k ? (tid % 4) * 4 : tid / 16;
  SliceLoad a_next, b_next;
  auto fetch = [&](int64_t k0) {
    a_next.load(p.a, p.a_rs, p.a_cs, row0 + a_m, k0 + a_k, p.m, p.k, a_along_k);
    // B (k, n) is addressed as rows n, depth k: b_cs steps along n, b_rs along k.
    b_next.load(p.b, p.b_cs, p.b_rs, col0 + b_n, k0 + b_k, p.n, p.k, b_along_k);
  };
  auto stash = [&](int buf) {
    CUSTOMML_UNROLL
    for (int i = 0; i < 4; ++i) {
      if (a_along_k)
        as[buf][a_k + i][a_m] = a_next.v[i];
      else
        as[buf][a_k][a_m + i] = a_next.v[i];
      if (b_along_k)
        bs[buf][b_k + i][b_n] = b_next.v[i];
      else
        bs[buf][b_k][b_n + i] = b_next.v[i];
    }
  };

  float acc[kGemmTm][kGemmTn];
  CUSTOMML_UNROLL
  for (int i = 0; i < kGemmTm; ++i) {
    CUSTOMML_UNROLL
    for (int j = 0; j < kGemmTn; ++j) acc[i][j] = 0.0f;
  }
  if (p.k > 0) {
    fetch(0);
    stash(0);
    __syncthreads();
  }
  for (int64_t k0 = 0; k0 < p.k; k0 += kGemmBk) {
    const int cur = static_cast<int>((k0 / kGemmBk) & 1);
    const bool more = k0 + kGemmBk < p.k;
    if (more) fetch(k0 + kGemmBk);
    CUSTOMML_UNROLL
    for (int kk = 0; kk < kGemmBk; ++kk) {
      const float4 a4 = *reinterpret_cast<const float4*>(&as[cur][kk][ty * kGemmTm]);
      const float4 b4 = *reinterpret_cast<const float4*>(&bs[cur][kk][tx * kGemmTn]);
      const float a_frag[kGemmTm] = {a4.x, a4.y, a4.z, a4.w};
      const float b_frag[kGemmTn] = {b4.x, b4.y, b4.z, b4.w};
      CUSTOMML_UNROLL
      for (int i = 0; i < kGemmTm; ++i) {
        CUSTOMML_UNROLL
        for (int j = 0; j < kGemmTn; ++j) acc[i][j] += a_frag[i] * b_frag[j];
      }
    }
    // The other buffer was last read in the previous slice, before the last barrier.
    if (more) stash(cur ^ 1);
    __syncthreads();
  }

  CUSTOMML_UNROLL
  for (int i = 0; i < kGemmTm; ++i) {
    const int64_t r = row0 + ty * kGemmTm + i;
    if (r >= p.m) continue;
    CUSTOMML_UNROLL
    for (int j = 0; j < kGemmTn; ++j) {
      const int64_t c = col0 + tx * kGemmTn + j;
      if (c >= p.n) continue;
      const float v = acc[i][j] + (p.bias ? p.bias[c] : 0.0f);
      if (p.preact) p.preact[r * p.ldc + c] = v;
      p.c[r * p.ldc + c] = act::apply(p.act, v);
    }
  }
}

// The tensor-core element types: how a float operand is stored in shared memory for
// wmma, and the mma depth for it.
template <class T>
struct TensorCoreType;
template <>
struct TensorCoreType<__half> {
  using Stored = __half;
  static constexpr int kDepth = 16;
  static __device__ __forceinline__ Stored from_float(float v) { return __float2half(v); }
};
template <>
struct TensorCoreType<__nv_bfloat16> {
  using Stored = __nv_bfloat16;
  static constexpr int kDepth = 16;
  static __device__ __forceinline__ Stored from_float(float v) { return __float2bfloat16(v); }
};
template <>
struct TensorCoreType<nvcuda::wmma::precision::tf32> {
  using Stored = float;
  static constexpr int kDepth = 8;
  static __device__ __forceinline__ Stored from_float(float v) { return nvcuda::wmma::__float_to_tf32(v); }
};

// A 64 x 64 tile of C per block of 4 warps, each warp 2 x 2 wmma tiles of 16 x 16;
// 16-deep slices of A and B are converted from float to the tensor-core type while
// staged in shared memory, so the operands stay float32 in global memory (float32
// master weights). Accumulation is float. The epilogue reads the accumulators back
// through shared memory: which lane holds which fragment element is unspecified, and
// bias and activation depend on the column.
constexpr int kTcBm = 64, kTcBn = 64, kTcBk = 16, kTcThreads = 128;
constexpr int kTcPad = 8;  // row padding: keeps wmma's ldm a multiple of 8 and breaks bank conflicts

// grid (ceil(n / 64), ceil(m / 64)), block kTcThreads
template <class T>
__global__ void __launch_bounds__(kTcThreads) gemm_tc_kernel(GemmParams p) {
  namespace wmma = nvcuda::wmma;
  using Stored = typename TensorCoreType<T>::Stored;
  constexpr int kDepth = TensorCoreType<T>::kDepth;
  __shared__ __align__(32) Stored as[kTcBm][kTcBk + kTcPad];
  __shared__ __align__(32) Stored bs[kTcBk][kTcBn + kTcPad];
  __shared__ __align__(32) float cs[kTcBm][kTcBn + 4];
  const int tid = threadIdx.x, warp = tid / 32;
  const int wm = warp / 2, wn = warp % 2;  // this warp's 32 x 32 quarter of the tile
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTcBm;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kTcBn;

  wmma::fragment<wmma::accumulator, 16, 16, kDepth, float> acc[2][2];
  CUSTOMML_UNROLL
  for (int i = 0; i < 2; ++i) {
    CUSTOMML_UNROLL
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  }
  for (int64_t k0 = 0; k0 < p.k; k0 += kTcBk) {
    for (int e = tid; e < kTcBm * kTcBk; e += kTcThreads) {
      const int r = e / kTcBk, kk = e % kTcBk;
      const int64_t gr = row0 + r, gk = k0 + kk;
      as[r][kk] = TensorCoreType<T>::from_float(gr < p.m && gk < p.k ? p.a[gr * p.a_rs + gk * p.a_cs] : 0.0f);
    }
    for (int e = tid; e < kTcBk * kTcBn; e += kTcThreads) {
      const int kk = e / kTcBn, c = e % kTcBn;
      const int64_t gc = col0 + c, gk = k0 + kk;
      bs[kk][c] = TensorCoreType<T>::from_float(gc < p.n && gk < p.k ? p.b[gk * p.b_rs + gc * p.b_cs] : 0.0f);
    }
    __syncthreads();
    CUSTOMML_UNROLL
    for (int kk = 0; kk < kTcBk; kk += kDepth) {
      wmma::fragment<wmma::matrix_a, 16, 16, kDepth, T, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, kDepth, T, wmma::row_major> b[2];
      CUSTOMML_UNROLL
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], &as[wm * 32 + i * 16][kk], kTcBk + kTcPad);
      CUSTOMML_UNROLL
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], &bs[kk][wn * 32 + j * 16], kTcBn + kTcPad);
      CUSTOMML_UNROLL
      for (int i = 0; i < 2; ++i) {
        CUSTOMML_UNROLL
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();  // the next slice overwrites as / bs
  }
  CUSTOMML_UNROLL
  for (int i = 0; i < 2; ++i) {
    CUSTOMML_UNROLL
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&cs[wm * 32 + i * 16][wn * 32 + j * 16], acc[i][j], kTcBn + 4, wmma::mem_row_major);
  }
  __syncthreads();
  for (int e = tid; e < kTcBm * kTcBn; e += kTcThreads) {
    const int r = e / kTcBn, c = e % kTcBn;
    const int64_t gr = row0 + r, gc = col0 + c;
    if (gr >= p.m || gc >= p.n) continue;
    const float v = cs[r][c] + (p.bias ? p.bias[gc] : 0.0f);
    if (p.preact) p.preact[gr * p.ldc + gc] = v;
    p.c[gr * p.ldc + gc] = act::apply(p.act, v);
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
