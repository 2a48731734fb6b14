#pragma once
// Defines: gemm_tc_kernel (the tiled GEMM of cuda/dense.cuh's gemm_kernel as a tensor-core
// kernel through the wmma API, for tf32, bf16 and fp16).

#include <cstdint>

#include "cuda/dense.cuh"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#else
#include "simt/wmma.h"
#endif

namespace customml::CUSTOMML_CUDA_NS {

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

// grid (the pair's tiles), block kTcThreads; kGrad as gemm_kernel's
template <class T, bool kGrad>
__global__ void __launch_bounds__(kTcThreads) gemm_tc_kernel(GemmPair pp) {
  namespace wmma = nvcuda::wmma;
  using Stored = typename TensorCoreType<T>::Stored;
  constexpr int kDepth = TensorCoreType<T>::kDepth;
  __shared__ __align__(32) Stored as[kTcBm][kTcBk + kTcPad];
  __shared__ __align__(32) Stored bs[kTcBk][kTcBn + kTcPad];
  __shared__ __align__(32) float cs[kTcBm][kTcBn + 4];
  CUSTOMML_POISON_SHARED(as);
  CUSTOMML_POISON_SHARED(bs);
  CUSTOMML_POISON_SHARED(cs);
  const int tid = threadIdx.x, warp = tid / 32;
  const int wm = warp / 2, wn = warp % 2;  // this warp's 32 x 32 quarter of the tile
  const GemmTile tile = gemm_tile<kGrad, false>(pp, kTcBm, kTcBn);
  const GemmParams& p = kGrad ? pp.p[tile.problem] : pp.p[0];
  const int64_t row0 = tile.row0, col0 = tile.col0;
  Operand oa = operand_a(p);
  oa.ones_row = -1;  // db is summed in float below, not from reduced-precision operands
  const Operand ob = operand_b(p);

  wmma::fragment<wmma::accumulator, 16, 16, kDepth, float> acc[2][2];
  CUSTOMML_UNROLL
  for (int i = 0; i < 2; ++i) {
    CUSTOMML_UNROLL
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  }
  // A tile of db's row alone multiplies nothing.
  const int64_t depth = row0 < p.m ? p.k : 0;
  for (int64_t k0 = 0; k0 < depth; k0 += kTcBk) {
    for (int e = tid; e < kTcBm * kTcBk; e += kTcThreads) {
      const int r = e / kTcBk, kk = e % kTcBk;
      as[r][kk] = TensorCoreType<T>::from_float(oa.at<kGrad>(row0 + r, k0 + kk));
    }
    for (int e = tid; e < kTcBk * kTcBn; e += kTcThreads) {
      const int kk = e / kTcBn, c = e % kTcBn;
      bs[kk][c] = TensorCoreType<T>::from_float(ob.at<kGrad>(col0 + c, k0 + kk));
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
  // db in the block whose tile holds row m: a column per thread, in float from dz itself
  // (the tensor-core operands would round it first), rows in order as a serial sum.
  if (kGrad && p.db && row0 <= p.m && p.m < row0 + kTcBm) {
    for (int c = tid; c < kTcBn; c += kTcThreads) {
      const int64_t gc = col0 + c;
      if (gc >= p.n) continue;
      float sum = 0.0f;
      for (int64_t k = 0; k < p.k; ++k) sum += ob.at<kGrad>(gc, k);
      p.db[gc] = sum;
    }
  }
}

}  // namespace customml::CUSTOMML_CUDA_NS
