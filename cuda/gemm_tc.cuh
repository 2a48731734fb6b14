#pragma once
// Defines: gemm_tc_kernel (the tiled GEMM of cuda/dense.cuh's gemm_kernel on the tensor
// cores, for tf32, bf16 and fp16: ldmatrix and mma.sync, in inline PTX on the device and
// emulated by cuda/simt/mma.h on the host).

#include <cstdint>
#include <type_traits>

#include "cuda/dense.cuh"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#else
#include "simt/mma.h"
#endif

// The warp-level matrix instructions (their fragment layouts: cuda/simt/mma.h, which
// emulates them on the host).
#if defined(__CUDACC__)
namespace customml::ptx {
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
template <class T>
__device__ __forceinline__ void mma_sync(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                         const float (&c)[4]) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
  } else if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
  }
}
}  // namespace customml::ptx
#endif

namespace customml::CUSTOMML_CUDA_NS {

// The tensor-core element types: how a float operand is stored in shared memory, four
// at a time (a float4's worth: 8 bytes of 16-bit pairs, or 16 bytes of tf32), and the
// mma depth for it.
template <class T>
struct TensorCoreType;
template <class T>
struct HalfPrecision {
  using Stored = uint16_t;
  static constexpr int kDepth = 16;
  static __device__ __forceinline__ uint32_t pair(float lo, float hi) {
#if defined(__CUDACC__)
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
      return *reinterpret_cast<const uint32_t*>(&v);
    } else {
      const __half2 v = __floats2half2_rn(lo, hi);
      return *reinterpret_cast<const uint32_t*>(&v);
    }
#else
    if constexpr (std::is_same_v<T, __nv_bfloat16>)
      return __float2bfloat16(lo).bits | static_cast<uint32_t>(__float2bfloat16(hi).bits) << 16;
    else
      return __float2half(lo).bits | static_cast<uint32_t>(__float2half(hi).bits) << 16;
#endif
  }
  // The 4 values at p, 8-byte aligned.
  static __device__ __forceinline__ void store4(Stored* p, const float (&v)[4]) {
    *reinterpret_cast<uint64_t*>(p) = pair(v[0], v[1]) | static_cast<uint64_t>(pair(v[2], v[3])) << 32;
  }
  static __device__ __forceinline__ void store1(Stored* p, float v) { *p = static_cast<uint16_t>(pair(v, 0.0f)); }
};
template <>
struct TensorCoreType<__half> : HalfPrecision<__half> {};
template <>
struct TensorCoreType<__nv_bfloat16> : HalfPrecision<__nv_bfloat16> {};
// tf32 is float32 storage; rounded to nearest (ties away, cvt.rna) as staged, since the
// tensor core would otherwise drop the low 13 bits (truncation: twice the error).
template <>
struct TensorCoreType<nvcuda::wmma::precision::tf32> {
  using Stored = float;
  static constexpr int kDepth = 8;
  static __device__ __forceinline__ void store4(Stored* p, const float (&v)[4]) {
    *reinterpret_cast<float4*>(p) =
        make_float4(nvcuda::wmma::__float_to_tf32(v[0]), nvcuda::wmma::__float_to_tf32(v[1]),
                    nvcuda::wmma::__float_to_tf32(v[2]), nvcuda::wmma::__float_to_tf32(v[3]));
  }
  static __device__ __forceinline__ void store1(Stored* p, float v) { *p = nvcuda::wmma::__float_to_tf32(v); }
};

// A 64 x 64 tile of C per block of 4 warps, each warp a 32 x 32 quarter as 2 x 4 mma
// tiles of 16 x 8 in float accumulators (32 registers). 16-deep slices of A and B go
// through two shared-memory buffers (the next slice's global loads in flight while the
// current one is multiplied; one barrier per slice), each thread moving 2 runs of 4
// elements of each operand per slice: float4 loads along the operand's contiguous
// direction where aligned (SliceLoad), converted to the tensor-core type as stored.
//
// Shared-memory layouts, per operand and chosen at run time (uniform in a block):
// - [row][k] (k contiguous), read by ldmatrix; tf32 always (ldmatrix moves 16-bit
//   elements, so its .trans cannot transpose 32-bit ones: a row-contiguous tf32 operand
//   is transposed as stored, 4 scalar stores per run);
// - [k][row] (row contiguous), read by ldmatrix.trans: 16-bit operands whose global rows
//   are contiguous (the forward's weights, the weight gradient's x and dz), so that their
//   runs are stored as loaded.
// Each row is padded by 16 bytes, so that the 8 rows an ldmatrix reads (16 bytes each)
// fall in distinct banks: strides of 48 or 80 bytes ([row][k], 16 / 32-bit) and 144
// ([k][row]).
constexpr int kTcBm = 64, kTcBn = 64, kTcBk = 16, kTcThreads = 128;

template <class T>
struct TcLayout {
  using Stored = typename TensorCoreType<T>::Stored;
  static constexpr int kPad = 16 / sizeof(Stored);
  static constexpr int kLdK = kTcBk + kPad;    // [row][k]'s row stride, elements
  static constexpr int kLdRow = kTcBm + kPad;  // [k][row]'s
  static constexpr int kElements = kTcBm * kLdK > kTcBk* kLdRow ? kTcBm* kLdK : kTcBk* kLdRow;
};

// One operand's part of a slice: where this thread's 2 runs come from and go, and their
// values in flight.
template <class T, bool kGrad>
struct TcStage {
  using Stored = typename TensorCoreType<T>::Stored;
  SliceLoad run[2];

  // The operand's rows r0.. and slice k0: run j is element e = tid + 128 j of the slice's
  // 256 runs, along k (4 runs a row) or along the rows (16 runs a k). kChecked false: a
  // full slice of an operand whose runs are float4s (Operand::float4_runs).
  template <bool kChecked>
  __device__ __forceinline__ void load(const Operand& o, int64_t r0, int64_t k0, bool along_k) {
    CUSTOMML_UNROLL
    for (int j = 0; j < 2; ++j) {
      const int e = static_cast<int>(threadIdx.x) + kTcThreads * j;
      // shifts, not divisions: the compiler would divide by a selected 4 or 16
      const int r = along_k ? e >> 2 : (e & 15) << 2, k = along_k ? (e & 3) << 2 : e >> 4;
      run[j].template load<kGrad, kChecked>(o, r0 + r, k0 + k, along_k);
    }
  }
  // into s: [row][k] unless trans ([k][row], 16-bit only)
  __device__ __forceinline__ void store(Stored* s, bool along_k, bool trans) const {
    using Layout = TcLayout<T>;
    CUSTOMML_UNROLL
    for (int j = 0; j < 2; ++j) {
      const int e = static_cast<int>(threadIdx.x) + kTcThreads * j;
      if (along_k) {
        TensorCoreType<T>::store4(s + (e >> 2) * Layout::kLdK + ((e & 3) << 2), run[j].v);
      } else if (trans) {
        TensorCoreType<T>::store4(s + (e >> 4) * Layout::kLdRow + ((e & 15) << 2), run[j].v);
      } else {
        CUSTOMML_UNROLL
        for (int i = 0; i < 4; ++i)
          TensorCoreType<T>::store1(s + (((e & 15) << 2) + i) * Layout::kLdK + (e >> 4), run[j].v[i]);
      }
    }
  }
};

// This lane's row address for an ldmatrix.x4 of a 16 x 16 (16-bit) or 16 x 8 (tf32) block
// at rows 0.., k 0.. of s, in the order the mma's fragments take its 8 x 8 matrices
// (simt/mma.h): matrix i = lanes 8i..8i+7, row lane % 8. kRowsFirst: matrices 0 and 1
// differ in the row (A's a[0], a[1]); else in k (B's b[0], b[1] of one n-tile, then the
// next n-tile's). Returned as an element offset into s.
template <class T, bool kRowsFirst>
__device__ __forceinline__ int ldmatrix_offset(bool trans) {
  using Layout = TcLayout<T>;
  const int lane = static_cast<int>(threadIdx.x) % 32, matrix = lane / 8, r = lane % 8;
  const int row_half = kRowsFirst ? matrix & 1 : matrix >> 1, k_half = kRowsFirst ? matrix >> 1 : matrix & 1;
  // a k half is 8 16-bit elements, or 4 tf32 ones (16 bytes either way)
  constexpr int kHalf = 16 / sizeof(typename Layout::Stored);
  if (trans) return (r + k_half * 8) * Layout::kLdRow + row_half * 8;
  return (r + row_half * 8) * Layout::kLdK + k_half * kHalf;
}

// grid (the pair's tiles), block kTcThreads; kGrad as gemm_kernel's
template <class T, bool kGrad>
__global__ void __launch_bounds__(kTcThreads, kGrad ? 3 : 4) gemm_tc_kernel(GemmPair pp) {
  using Layout = TcLayout<T>;
  using Stored = typename Layout::Stored;
  constexpr int kDepth = TensorCoreType<T>::kDepth;
  constexpr bool kTf32 = kDepth == 8;
  __shared__ __align__(16) Stored as[2][Layout::kElements];
  __shared__ __align__(16) Stored bs[2][Layout::kElements];
  CUSTOMML_POISON_SHARED(as);
  CUSTOMML_POISON_SHARED(bs);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wm = warp / 2, wn = warp % 2;  // this warp's 32 x 32 quarter of the tile
  const GemmTile tile = gemm_tile<kGrad, false>(pp, kTcBm, kTcBn);
  const GemmParams& p = kGrad ? pp.p[tile.problem] : pp.p[0];
  const int64_t row0 = tile.row0, col0 = tile.col0;
  Operand oa = operand_a(p);
  oa.ones_row = -1;  // db is summed in float below, not from reduced-precision operands
  const Operand ob = operand_b(p);
  // Each operand loads along its contiguous direction (k unless only the rows are), and a
  // row-contiguous 16-bit operand is kept [k][row] for ldmatrix.trans.
  const bool a_along_k = oa.cs == 1 || oa.rs != 1, b_along_k = ob.cs == 1 || ob.rs != 1;
  const bool a_trans = !kTf32 && !a_along_k, b_trans = !kTf32 && !b_along_k;
  // This lane's ldmatrix addresses in a buffer, and the steps between its fragments:
  // A's two m-tiles (16 rows), B's two pairs of n-tiles (16 rows), tf32's second k8 step.
  const int a_lane = ldmatrix_offset<T, true>(a_trans) + (a_trans ? wm * 32 : wm * 32 * Layout::kLdK);
  const int b_lane = ldmatrix_offset<T, false>(b_trans) + (b_trans ? wn * 32 : wn * 32 * Layout::kLdK);
  const int a_step = a_trans ? 16 : 16 * Layout::kLdK, b_step = b_trans ? 16 : 16 * Layout::kLdK;

  float acc[2][4][4];
  CUSTOMML_UNROLL
  for (int i = 0; i < 2; ++i) {
    CUSTOMML_UNROLL
    for (int j = 0; j < 4; ++j) {
      CUSTOMML_UNROLL
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
    }
  }
  // A tile of db's row alone multiplies nothing.
  const int64_t depth = row0 < p.m ? p.k : 0;
  TcStage<T, kGrad> sa, sb;
  if (depth > 0) {
    sa.template load<true>(oa, row0, 0, a_along_k);
    sb.template load<true>(ob, col0, 0, b_along_k);
  }
  int buffer = 0;
  // One slice: store the staged one, load the next (kChecked: with the bounds and
  // alignment checks), multiply the stored one.
  auto slice = [&](auto checked, int64_t k0) {
    sa.store(as[buffer], a_along_k, a_trans);
    sb.store(bs[buffer], b_along_k, b_trans);
    __syncthreads();  // the slice is stored; the other buffer's readers are done
    if (k0 + kTcBk < depth) {
      sa.template load<decltype(checked)::value>(oa, row0, k0 + kTcBk, a_along_k);
      sb.template load<decltype(checked)::value>(ob, col0, k0 + kTcBk, b_along_k);
    }
    CUSTOMML_UNROLL
    for (int kk = 0; kk < kTcBk; kk += kDepth) {
      // tf32's second k8 step: 8 floats along k in [row][k]
      uint32_t a[2][4], b[2][4];
      CUSTOMML_UNROLL
      for (int i = 0; i < 2; ++i) {
        const Stored* row = as[buffer] + a_lane + i * a_step + kk;
        if (a_trans)
          ptx::ldmatrix_x4_trans(a[i], row);
        else
          ptx::ldmatrix_x4(a[i], row);
      }
      CUSTOMML_UNROLL
      for (int jj = 0; jj < 2; ++jj) {
        const Stored* row = bs[buffer] + b_lane + jj * b_step + kk;
        if (b_trans)
          ptx::ldmatrix_x4_trans(b[jj], row);
        else
          ptx::ldmatrix_x4(b[jj], row);
      }
      CUSTOMML_UNROLL
      for (int i = 0; i < 2; ++i) {
        CUSTOMML_UNROLL
        for (int j = 0; j < 4; ++j) {
          const uint32_t bj[2] = {b[j / 2][(j % 2) * 2], b[j / 2][(j % 2) * 2 + 1]};
          ptx::mma_sync<T>(acc[i][j], a[i], bj, acc[i][j]);
        }
      }
    }
    buffer ^= 1;
  };
  // An interior tile of aligned operands loads the next slice without checks while it is
  // full; edge tiles and the last slice take the checked loads.
  const bool unchecked = oa.float4_runs(row0, a_along_k) && ob.float4_runs(col0, b_along_k);
  int64_t k0 = 0;
  for (; unchecked && k0 + 2 * kTcBk <= depth; k0 += kTcBk) slice(std::false_type(), k0);
  for (; k0 < depth; k0 += kTcBk) slice(std::true_type(), k0);
  // The accumulators' layout (simt/mma.h): element e of m-tile i, n-tile j is row
  // 16 i + lane / 4 + 8 (e / 2), column 8 j + 2 (lane % 4) + e % 2 of the warp's quarter.
  CUSTOMML_UNROLL
  for (int i = 0; i < 2; ++i) {
    CUSTOMML_UNROLL
    for (int j = 0; j < 4; ++j) {
      CUSTOMML_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int64_t gr = row0 + wm * 32 + i * 16 + lane / 4 + 8 * (e / 2);
        const int64_t gc = col0 + wn * 32 + j * 8 + 2 * (lane % 4) + e % 2;
        // row m (db's) is summed below, not from these accumulators
        if (gr < p.m) store_c<kGrad>(p, gr, gc, acc[i][j][e]);
      }
    }
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
