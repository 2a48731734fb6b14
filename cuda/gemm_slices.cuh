#pragma once
// Defines: how the float32 tiled GEMM of cuda/dense.cuh moves and multiplies its slices:
// Operand (an operand as the loads see it), the tile and slice constants, each thread's
// cp.async runs of an operand's slice (run_*, copy_run) in its shared-memory layout, and
// multiply_slice (a slice's products into a thread's 4 x 4 register tile); CUSTOMML_NO_UNROLL.

#include <cstdint>

#include "cuda/async_copy.cuh"
#include "cuda/common.cuh"

// A loop kept rolled: code off the hot path that would bloat it unrolled.
#if defined(__CUDACC__)
#define CUSTOMML_NO_UNROLL _Pragma("unroll 1")
#else
#define CUSTOMML_NO_UNROLL
#endif

namespace customml::CUSTOMML_CUDA_NS {

constexpr int kGemmBk = 16;  // the tiled kernels' slice depth

// One operand as the loads see it: element (r, k) at base[r * rs + k * cs], rows along
// m (A) or n (B), depth along k.
struct Operand {
  const float* base;
  int64_t rs, cs, rows, depth;
  int64_t ones_row;  // the row that reads as ones (db's), or -1

  // kGrad: the backward pass's extra (ones_row) is looked at; a forward GEMM's kernel is
  // compiled without it.
  template <bool kGrad>
  __device__ __forceinline__ float at(int64_t r, int64_t k) const {
    if (r < rows && k < depth) return base[r * rs + k * cs];
    return kGrad && r == ones_row && k < depth ? 1.0f : 0.0f;
  }

  // Whether the 64 rows from r0 are inside and every 4-element run of a full slice along
  // the contiguous direction is a 16-byte-aligned float4: SliceLoad (the tensor-core
  // kernel's staging) may then skip its checks.
  __device__ __forceinline__ bool float4_runs(int64_t r0, bool along_k) const {
    return r0 + 64 <= rows && (along_k ? cs : rs) == 1 && (along_k ? rs : cs) % 4 == 0 &&
           (reinterpret_cast<uintptr_t>(base) & 15) == 0;
  }
};

// A 64 x 64 tile of C per block of 256 threads, each thread a 4 x 4 register tile, over
// 16-deep slices of A and B that cp.async copies from global to shared memory, kStages
// buffers of them (slices s + 1 to s + kStages - 1 in flight while slice s is multiplied;
// one barrier per slice). No register holds an operand on its way to shared memory.
constexpr int kGemmBm = 64, kGemmBn = 64, kGemmTm = 4, kGemmTn = 4;
constexpr int kGemmThreads = (kGemmBm / kGemmTm) * (kGemmBn / kGemmTn);
// An operand's slice keeps its global layout in shared memory, so that a 16-byte copy moves
// 4 elements unchanged: k-major, [k][64 rows], when the operand is contiguous along its
// rows (m or n), else row-major, [64 rows][k], rows kGemmRowPitch floats apart. The pitch's
// 4 floats of padding put the 8 rows that a quarter warp reads at once (16 apart, in a
// row-major B: each thread's columns tx + 16 j) in 8 different 16-byte bank groups.
constexpr int kGemmRowPitch = kGemmBk + 4;
constexpr int kGemmSliceFloats = kGemmBm * kGemmRowPitch;  // the larger layout's
static_assert(kGemmBm == kGemmBn, "A and B slices share the copy mapping");

// One thread's share of an operand's slices: 4 elements adjacent in the shared layout
// (row-major: row t / 4, k (t % 4) * 4 on; k-major: k t / 16, rows (t % 16) * 4 on), one
// 16-byte copy per slice where they are adjacent and aligned in global memory as well, else
// four 4-byte copies; the elements outside the operand are zero-filled. Counts and offsets
// are 32-bit; the source pointer alone is 64-bit, advanced a slice at a time. What the
// counted copies need is recomputed there from the parameters, so that the whole-slice
// loop holds no more than the pointers.
template <bool kRowMajor>
__device__ __forceinline__ int run_row(int tid) {
  return kRowMajor ? tid / 4 : (tid % 16) * 4;
}
template <bool kRowMajor>
__device__ __forceinline__ int run_k(int tid) {
  return kRowMajor ? (tid % 4) * 4 : tid / 16;
}
template <bool kRowMajor>
__device__ __forceinline__ int run_smem(int tid) {
  return kRowMajor ? run_row<true>(tid) * kGemmRowPitch + run_k<true>(tid)
                   : run_k<false>(tid) * kGemmBm + run_row<false>(tid);
}
template <bool kRowMajor>
__device__ __forceinline__ const float* run_src(const Operand& o, int64_t row0, int64_t k0, int tid) {
  return o.base + (row0 + run_row<kRowMajor>(tid)) * o.rs + (k0 + run_k<kRowMajor>(tid)) * o.cs;
}
// Of the 4 elements, those inside the operand in a slice `depth` deep (a slice stops at the
// block's end of k: the part's end when split).
// rows: the operand's rows from the run's first on (run_rows).
template <bool kRowMajor>
__device__ __forceinline__ int run_count(int rows, int tid, int depth) {
  const int k = run_k<kRowMajor>(tid);
  if constexpr (kRowMajor) return rows <= 0 || depth <= k ? 0 : (depth - k < 4 ? depth - k : 4);
  return k >= depth || rows <= 0 ? 0 : (rows < 4 ? rows : 4);
}
template <bool kRowMajor>
__device__ __forceinline__ int run_rows(const Operand& o, int64_t row0, int tid) {
  const int64_t rows = o.rows - (row0 + run_row<kRowMajor>(tid));
  return static_cast<int>(rows < 4 ? rows : 4);
}
// Whether every slice's 4 elements are one aligned 16-byte run: contiguous along the layout,
// the other stride a multiple of 4 and the base 16-byte aligned.
template <bool kRowMajor>
__device__ __forceinline__ bool runs_vec(const Operand& o) {
  return (kRowMajor ? o.cs : o.rs) == 1 && (kRowMajor ? o.rs : o.cs) % 4 == 0 &&
         (reinterpret_cast<uintptr_t>(o.base) & 15) == 0;
}
// The 4 elements of a run into dst: count of them read, the rest zero-filled. A copy that
// reads nothing is given base (the array's first element, aligned as a run) as its source,
// not an address past the array: no tool or prefetch sees an out-of-bounds address.
__device__ __forceinline__ void copy_run(float* dst, const float* src, const float* base, int64_t step, int count,
                                         bool vec) {
  if (vec) {
    cp_async<16>(dst, count ? src : base, count * 4);
    return;
  }
  CUSTOMML_UNROLL
  for (int i = 0; i < 4; ++i) cp_async<4>(dst + i, i < count ? src + i * step : base, i < count ? 4 : 0);
}

// acc += this slice's products, k in order. A thread's rows are ty * 4 + i; its columns
// tx * 4 + j, or tx + 16 j when B is row-major (a quarter warp then reads 8 rows 16 apart,
// 8 different bank groups with the padded pitch, where 8 rows 4 apart would share 2).
// 128-bit shared loads only: a row-major operand's 4 k of a row (A: 4 rows a group of 4 k;
// B: a column at a time), a k-major one's 4 rows of a k. Few values live at once: the
// forward kernel has 80 registers for 3 blocks an SM.
template <bool kAk, bool kBk>
__device__ __forceinline__ void multiply_slice(const float* a, const float* b, int ty, int tx,
                                               float (&acc)[kGemmTm][kGemmTn]) {
  static_assert(kAk || !kBk, "a row-major B takes a row-major A");
  CUSTOMML_UNROLL
  for (int k4 = 0; k4 < kGemmBk; k4 += 4) {
    float av[kGemmTm][4];  // row-major A: av[i][kk]
    if constexpr (kAk) {
      CUSTOMML_UNROLL
      for (int i = 0; i < kGemmTm; ++i) load4(av[i], a + (ty * kGemmTm + i) * kGemmRowPitch + k4);
    }
    if constexpr (kBk) {
      CUSTOMML_UNROLL
      for (int j = 0; j < kGemmTn; ++j) {
        float bj[4];
        load4(bj, b + (tx + 16 * j) * kGemmRowPitch + k4);
        CUSTOMML_UNROLL
        for (int kk = 0; kk < 4; ++kk) {
          CUSTOMML_UNROLL
          for (int i = 0; i < kGemmTm; ++i) acc[i][j] += av[i][kk] * bj[kk];
        }
      }
    } else {
      CUSTOMML_UNROLL
      for (int kk = 0; kk < 4; ++kk) {
        float ak[kGemmTm], bk[kGemmTn];
        if constexpr (kAk) {
          CUSTOMML_UNROLL
          for (int i = 0; i < kGemmTm; ++i) ak[i] = av[i][kk];
        } else {
          load4(ak, a + (k4 + kk) * kGemmBm + ty * kGemmTm);
        }
        load4(bk, b + (k4 + kk) * kGemmBn + tx * kGemmTn);
        CUSTOMML_UNROLL
        for (int i = 0; i < kGemmTm; ++i) {
          CUSTOMML_UNROLL
          for (int j = 0; j < kGemmTn; ++j) acc[i][j] += ak[i] * bk[j];
        }
      }
    }
  }
}

}  // namespace customml::CUSTOMML_CUDA_NS
