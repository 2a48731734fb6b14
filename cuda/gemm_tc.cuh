#pragma once
// Defines: gemm_tc_kernel (the tiled GEMM of cuda/dense.cuh's gemm_kernel on the tensor
// cores, for tf32, bf16 and fp16: ldmatrix and mma.sync, in inline PTX on the device and
// emulated by cuda/simt/mma.h on the host), and the dense layer's elementwise kernels
// (round_to_half_kernel, activation_backward_kernel).

#include <cstdint>
#include <type_traits>

#include "cuda/dense.cuh"
#include "cuda/half_bits.cuh"

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

// The tensor-core element types: how an operand is stored in shared memory, the mma depth
// for it, and how a float operand is rounded to it as staged, four at a time (a float4's
// worth: 8 bytes of 16-bit pairs, or 16 bytes of tf32). A bf16 / fp16 operand with a 16-bit
// copy in global memory (GemmParams::a16, b16) is copied as it is instead.
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
// tiles of 16 x 8 in float accumulators (32 registers), over 16-deep slices of A and B in
// kTcStages shared-memory buffers (slices s + 1 and s + 2 on their way while s is
// multiplied; one barrier per slice). Each operand arrives one of two ways:
// - B at bf16 / fp16 with a 16-bit copy in global memory (GemmParams::b16: the weights'
//   twin): cp.async, each thread one run of 8 elements per slice (HalfRun), no register
//   holding it on its way, nothing converted;
// - float (A; B at tf32 or without a copy): each thread loads 2 runs of 4 elements per slice
//   into registers, float4 loads along the operand's contiguous direction where aligned
//   (SliceLoad), and stores them rounded to the tensor-core type after the multiply.
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
constexpr int kTcBm = 64, kTcBn = 64, kTcBk = 16, kTcThreads = 128, kTcStages = 3;

template <class T>
struct TcLayout {
  using Stored = typename TensorCoreType<T>::Stored;
  static constexpr int kPad = 16 / sizeof(Stored);
  static constexpr int kLdK = kTcBk + kPad;    // [row][k]'s row stride, elements
  static constexpr int kLdRow = kTcBm + kPad;  // [k][row]'s
  static constexpr int kElements = kTcBm * kLdK > kTcBk* kLdRow ? kTcBm* kLdK : kTcBk* kLdRow;
};

// One float operand's part of a slice (tf32; bf16 / fp16 without a 16-bit copy): where
// this thread's 2 runs come from and go, and their values in flight.
template <class T, bool kGrad>
struct TcStage {
  using Stored = typename TensorCoreType<T>::Stored;
  SliceLoad run[2];

  // tf32's runs along the rows are transposed as stored (4 scalar stores each): their k
  // vary fastest across the lanes, so that a warp's 32 stores of one row (row stride 20
  // floats) fall in 32 banks; with the rows fastest (4 apart: 80 floats, 16 banks) they
  // fell in 4, 8 to a bank.
  static constexpr bool kTransposes = sizeof(Stored) == 4;

  // The operand's rows r0.. and slice k0: run j is element e = tid + 128 j of the slice's
  // 256 runs, along k (4 runs a row) or along the rows (16 runs a k; tf32: 16 k a group of
  // 4 rows). kChecked false: a full slice of an operand whose runs are float4s
  // (Operand::float4_runs).
  template <bool kChecked>
  __device__ __forceinline__ void load(const Operand& o, int64_t r0, int64_t k0, bool along_k) {
    CUSTOMML_UNROLL
    for (int j = 0; j < 2; ++j) {
      const int e = static_cast<int>(threadIdx.x) + kTcThreads * j;
      // shifts, not divisions: the compiler would divide by a selected 4 or 16
      const int r = along_k ? e >> 2 : (kTransposes ? e >> 4 : e & 15) << 2;
      const int k = along_k ? (e & 3) << 2 : (kTransposes ? e & 15 : e >> 4);
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
          TensorCoreType<T>::store1(s + (((e >> 4) << 2) + i) * Layout::kLdK + (e & 15), run[j].v[i]);
      }
    }
  }
};

// One thread's run of a 16-bit operand's slices: 8 elements, adjacent in the operand's
// shared layout ([row][k]: row e / 2, k (e % 2) 8 on; [k][row]: k e / 8, rows (e % 8) 8 on;
// e the thread) and in global memory (the layout follows the operand's contiguous
// direction), copied by one 16-byte cp.async, the elements outside the operand zero-filled
// (so a padded copy's pads, past its rows' ends, are never read). The operand's other stride
// is a multiple of 8 (half_ld: the copies' rows are padded to one) and its base 16-byte
// aligned, so every run is (copyable_16; others are read as float: 4-byte copies of pairs
// cost the loop some 60 instructions, and cp.async moves no 2-byte unit).
struct HalfRun {
  const uint16_t* src;  // the run's first element in the next slice issued
  int k;                // the run's first k in a slice
  int inside;           // of the run's 8 elements along k (8 or 0) or rows, those in rows
  int dst;              // its offset in a buffer
  bool along_k;

  // The operand (element (r, k) at o[r * rs + k * cs], rows deep), its tile's rows r0..,
  // the first slice's k0, and the layout ([row][k] when along_k, row strides ld_k / ld_row).
  __device__ __forceinline__ HalfRun(const uint16_t* o, int64_t rs, int64_t cs, int64_t rows, int64_t r0, int64_t k0,
                                     bool along_k_, int ld_k, int ld_row)
      : along_k(along_k_) {
    const int e = static_cast<int>(threadIdx.x);
    const int r = along_k ? e >> 1 : (e & 7) << 3;
    k = along_k ? (e & 1) << 3 : e >> 3;
    dst = along_k ? r * ld_k + k : k * ld_row + r;
    const int64_t left = rows - (r0 + r);
    inside = left <= 0 ? 0 : (along_k || left >= 8 ? 8 : static_cast<int>(left));
    src = o + (inside ? (r0 + r) * rs + (k0 + k) * cs : 0);
  }

  // The slice k0 (the next one) into buffer if it starts before depth (else nothing: an
  // empty group); o and cs as constructed (read from the parameters again rather than held
  // in registers).
  __device__ __forceinline__ void issue(uint16_t* buffer, const uint16_t* o, int64_t cs, int64_t k0, int64_t depth) {
    if (k0 < depth) {
      const int64_t left = depth - (k0 + k);
      const int n = left <= 0 ? 0 : (along_k && left < inside ? static_cast<int>(left) : inside);
      cp_async<16>(buffer + dst, n ? src : o, 2 * n);
    }
    src += kTcBk * cs;
  }
};

// Whether HalfRun can copy an operand's 16-bit copy o (element (r, k) at o[r * rs + k * cs]:
// B's rs is b16_cs): contiguous along its shared layout's direction (the kernel's along_k,
// which the float operand's strides decide: the copy has its layout), the other stride a
// multiple of 8 and the base 16-byte aligned.
inline bool copyable_16(const uint16_t* o, int64_t rs, int64_t cs) {
  const bool along_k = cs == 1 || rs != 1;
  return o && (along_k ? cs : rs) == 1 && (along_k ? rs : cs) % 8 == 0 && (reinterpret_cast<uintptr_t>(o) & 15) == 0;
}

// Which operands a tensor-core launch copies from their 16-bit copies (the kernel's
// kCopies): none, B (forward: the weights' twin; backward: dW's dz and dx's twin), or A too
// (the layer below's 16-bit output; dz).
constexpr int kTcCopyNone = 0, kTcCopyB = 1, kTcCopyAB = 2;

// Four 8 x 8 matrices from shared memory, this lane's row address given: transposed
// (ldmatrix.trans) for a [k][row] layout.
template <class Stored>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const Stored* row, bool trans) {
  if (trans)
    ptx::ldmatrix_x4_trans(r, row);
  else
    ptx::ldmatrix_x4(r, row);
}

// acc += the products of one slice in shared memory (a, b: the buffers at this lane's
// ldmatrix addresses; the steps between its fragments: A's two m-tiles, B's two pairs of
// n-tiles; tf32 takes two k8 steps).
template <class T>
__device__ __forceinline__ void multiply_tc_slice(const typename TcLayout<T>::Stored* a,
                                                  const typename TcLayout<T>::Stored* b, int a_step, int b_step,
                                                  bool a_trans, bool b_trans, float (&acc)[2][4][4]) {
  CUSTOMML_UNROLL
  for (int kk = 0; kk < kTcBk; kk += TensorCoreType<T>::kDepth) {
    // tf32's second k8 step: 8 floats along k in [row][k]
    uint32_t af[2][4], bf[2][4];
    CUSTOMML_UNROLL
    for (int i = 0; i < 2; ++i) {
      ldmatrix_x4(af[i], a + i * a_step + kk, a_trans);
      ldmatrix_x4(bf[i], b + i * b_step + kk, b_trans);
    }
    CUSTOMML_UNROLL
    for (int i = 0; i < 2; ++i) {
      CUSTOMML_UNROLL
      for (int j = 0; j < 4; ++j) {
        const uint32_t bj[2] = {bf[j / 2][(j % 2) * 2], bf[j / 2][(j % 2) * 2 + 1]};
        ptx::mma_sync<T>(acc[i][j], af[i], bj, acc[i][j]);
      }
    }
  }
}

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

// dst = src (n: rows of cols) rounded to bf16 or fp16 (half_bits), its rows ld apart (the
// pads untouched): the 16-bit copies of the weights (Backend::round_to_half: Model's twin,
// the inference plan's copy; a padded kernel's rows). grid-stride.
__global__ void round_to_half_kernel(uint16_t* dst, const float* src, int64_t n, int64_t cols, int64_t ld, bool bf16) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += stride)
    dst[ld == cols ? i : i / cols * ld + i % cols] = half_bits(src[i], bf16);
}

// dz (n) = act'(dy; y, z) (z: gelu's pre-activation, else null), for a dense_backward whose
// dy is not dz yet (neither a Dense layer's dx store nor the loss made it: the op's, a top
// layer's whose gradient changed after the loss); dz may be dy. grid-stride.
__global__ void activation_backward_kernel(float* dz, const float* dy, const float* y, const float* z, int64_t n,
                                           Activation act) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += stride)
    dz[i] = act::backward(act, dy[i], y[i], z ? z[i] : 0.0f);
}

// grid (the pair's tiles times their splits), block kTcThreads; kGrad as gemm_kernel's.
// kCopies: the operands taken from their 16-bit copies (bf16 / fp16 launches whose copies
// are copyable_16, every problem's), a kernel of its own so that no loop holds both ways of staging an
// operand. The sums follow the float32 kernels' parts order (GemmParams::part_depth): each
// part's mma chain starts from zero and the parts' sums are added in order in float32, in
// the block (total, kept in shared memory: 32 registers the loop cannot spare) or, split, by
// the tile's last block (split_last_block). So a split changes no bit, and a row's result
// depends neither on the batch nor on the grid.
template <class T, bool kGrad, int kCopies = kTcCopyNone>
__global__ void __launch_bounds__(kTcThreads, kGrad ? 3 : 4) gemm_tc_kernel(GemmPair pp) {
  using Layout = TcLayout<T>;
  using Stored = typename Layout::Stored;
  constexpr bool kTf32 = TensorCoreType<T>::kDepth == 8;
  __shared__ __align__(16) Stored as[kTcStages][Layout::kElements];
  __shared__ __align__(16) Stored bs[kTcStages][Layout::kElements];
  CUSTOMML_POISON_SHARED(as);
  CUSTOMML_POISON_SHARED(bs);
  __shared__ __align__(16) float totals[8 * 4 * kTcThreads];
  CUSTOMML_POISON_SHARED(totals);
  __shared__ float db_part[kGrad ? kTcBn : 1];
  CUSTOMML_POISON_SHARED(db_part);
  __shared__ unsigned arrived;
  CUSTOMML_POISON_SHARED(arrived);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wm = warp / 2, wn = warp % 2;  // this warp's 32 x 32 quarter of the tile
  const GemmTile tile = gemm_tile<kGrad>(pp);
  const GemmParams& p = kGrad ? pp.p[tile.problem] : pp.p[0];
  const unsigned splits = kGrad ? pp.splits[tile.problem] : pp.splits[0];
  const int64_t row0 = tile.row0, col0 = tile.col0;
  Operand oa = operand_a(p);
  oa.ones_row = -1;  // db is summed in float below, not from reduced-precision operands
  const Operand ob = operand_b(p);
  // Each operand is copied along its contiguous direction (k unless only the rows are), and
  // a row-contiguous 16-bit operand is kept [k][row] for ldmatrix.trans. A copied operand's
  // direction is its copy's: where the float's is ambiguous (one row or one k: both strides 1)
  // the copy's padded stride decides it (copyable_16's rule).
  constexpr bool kCopyA = kCopies == kTcCopyAB, kCopyB = kCopies != kTcCopyNone;
  const bool a_along_k = kCopyA ? p.a16_cs == 1 || p.a16_rs != 1 : oa.cs == 1 || oa.rs != 1;
  const bool b_along_k = kCopyB ? p.b16_rs == 1 || p.b16_cs != 1 : ob.cs == 1 || ob.rs != 1;
  const bool a_trans = !kTf32 && !a_along_k, b_trans = !kTf32 && !b_along_k;
  // This lane's ldmatrix addresses in a buffer, and the steps between its fragments:
  // A's two m-tiles (16 rows), B's two pairs of n-tiles (16 rows).
  const int a_lane = ldmatrix_offset<T, true>(a_trans) + (a_trans ? wm * 32 : wm * 32 * Layout::kLdK);
  const int b_lane = ldmatrix_offset<T, false>(b_trans) + (b_trans ? wn * 32 : wn * 32 * Layout::kLdK);
  const int a_step = a_trans ? 16 : 16 * Layout::kLdK, b_step = b_trans ? 16 : 16 * Layout::kLdK;

  float acc[2][4][4];
  // acc viewed as 8 float4s: this thread's float4 i of the tile's thread-major layout
  // (its total in shared memory, a split part's partials)
  auto& acc4 = reinterpret_cast<float(&)[8][4]>(acc);
  auto zero_acc = [&] {
    CUSTOMML_UNROLL
    for (int i = 0; i < 8; ++i) {
      CUSTOMML_UNROLL
      for (int e = 0; e < 4; ++e) acc4[i][e] = 0.0f;
    }
  };
  zero_acc();
  CUSTOMML_UNROLL
  for (int i = 0; i < 8; ++i) store4(totals + (i * kTcThreads + tid) * 4, acc4[i]);
  // This block's k: all of it, or its part when split (part_depth is a multiple of kTcBk, so
  // no slice straddles two parts). A tile of db's row alone multiplies nothing but still
  // sums db's parts.
  const int64_t k_begin = tile.part * p.part_depth;
  const int64_t k_end = splits > 1 && k_begin + p.part_depth < p.k ? k_begin + p.part_depth : p.k;
  const bool multiplies = row0 < p.m;
  // The accumulators' layout (simt/mma.h): element e of m-tile i, n-tile j is row
  // 16 i + lane / 4 + 8 (e / 2), column 8 j + 2 (lane % 4) + e % 2 of the warp's quarter.
  auto row_of = [&](int i, int e) { return wm * 32 + i * 16 + lane / 4 + 8 * (e / 2); };
  auto col_of = [&](int j, int e) { return wn * 32 + j * 8 + 2 * (lane % 4) + e % 2; };
  // db: the block whose tile holds row m sums each part's column of dz in float (the
  // tensor-core operands would round dz first), k in order, into that row's accumulators
  // (A's row m reads zeros there): the float32 kernels' ones row, bit for bit.
  const int db_row = kGrad && p.db && row0 <= p.m && p.m < row0 + pp.tile_rows ? static_cast<int>(p.m - row0) : -1;
  // The part [part_begin, part_end) is multiplied: db's part into row m, the part's sums
  // added to the total, the accumulators zeroed for the next part.
  auto end_part = [&](int64_t part_begin, int64_t part_end) {
    if (kGrad && db_row >= 0) {
      if (tid < kTcBn) {
        float sum = 0.0f;
        CUSTOMML_NO_UNROLL
        for (int64_t k = part_begin; k < part_end; ++k) sum += ob.at<kGrad>(col0 + tid, k);
        db_part[tid] = sum;
      }
      __syncthreads();
      CUSTOMML_UNROLL
      for (int i = 0; i < 2; ++i) {
        CUSTOMML_UNROLL
        for (int j = 0; j < 4; ++j) {
          CUSTOMML_UNROLL
          for (int e = 0; e < 4; ++e)
            if (row_of(i, e) == db_row) acc[i][j][e] = db_part[col_of(j, e)];
        }
      }
      __syncthreads();  // db_part is rewritten by the next part
    }
    CUSTOMML_UNROLL
    for (int i = 0; i < 8; ++i) {
      float t[4];
      load4(t, totals + (i * kTcThreads + tid) * 4);
      CUSTOMML_UNROLL
      for (int e = 0; e < 4; ++e) t[e] += acc4[i][e];
      store4(totals + (i * kTcThreads + tid) * 4, t);
    }
    zero_acc();
  };
  // The operands kCopies names are copied as they are from their 16-bit copies (HalfRun);
  // the others are float, staged through registers and rounded as stored (TcStage). The
  // backward's operands are read as they are (dz ready: dense_backward), so its copies are
  // the forward's: dz's (the layer above's dx store), x's and the weights' twin.
  static_assert(!kCopyB || !kTf32, "16-bit copies: bf16 / fp16 launches");
  HalfRun ra(p.a16, p.a16_rs, p.a16_cs, p.m, row0, k_begin, a_along_k, Layout::kLdK, Layout::kLdRow);
  HalfRun rb(p.b16, p.b16_cs, p.b16_rs, p.n, col0, k_begin, b_along_k, Layout::kLdK, Layout::kLdRow);
  TcStage<T, kGrad> sa, sb;
  // The slice k0 for buffer buf: the copies issued (as a group), the float operands' loads
  // (kChecked: with the bounds and alignment checks) into registers; stored, once the
  // buffer's readers are done, by store_floats.
  auto issue = [&](auto checked, int buf, int64_t k0) {
    if constexpr (kCopyA) ra.issue(as[buf], p.a16, p.a16_cs, k0, k_end);
    if constexpr (kCopyB) rb.issue(bs[buf], p.b16, p.b16_rs, k0, k_end);
    if (k0 < k_end) {
      if constexpr (!kCopyA) sa.template load<decltype(checked)::value>(oa, row0, k0, a_along_k);
      if constexpr (!kCopyB) sb.template load<decltype(checked)::value>(ob, col0, k0, b_along_k);
    }
    cp_async_commit();
  };
  auto store_floats = [&](int buf, int64_t k0) {
    if (k0 >= k_end) return;
    if constexpr (!kCopyA) sa.store(as[buf], a_along_k, a_trans);
    if constexpr (!kCopyB) sb.store(bs[buf], b_along_k, b_trans);
  };
  // The pipeline: slices 0 .. kTcStages - 2 in their buffers, then per slice: issue the one
  // kTcStages - 1 ahead (into the buffer read before the last barrier), multiply this one,
  // store the float operands of the one ahead, wait for the next one's copies, barrier.
  // It runs across the parts: only the sums restart at a part's end (end_part).
  if (multiplies) {
    CUSTOMML_UNROLL
    for (int s = 0; s < kTcStages - 1; ++s) {
      issue(std::true_type(), s, k_begin + s * kTcBk);
      store_floats(s, k_begin + s * kTcBk);
    }
    cp_async_wait<kTcStages - 2>();
    __syncthreads();
  }
  int stage = 0;  // the buffer of the slice being multiplied
  auto slices = [&](auto checked, int64_t k0, int64_t to) {
    for (; k0 < to; k0 += kTcBk) {
      const int ahead = stage ? stage - 1 : kTcStages - 1, next = stage + 1 < kTcStages ? stage + 1 : 0;
      const int64_t k_ahead = k0 + (kTcStages - 1) * kTcBk;
      issue(checked, ahead, k_ahead);
      multiply_tc_slice<T>(as[stage] + a_lane, bs[stage] + b_lane, a_step, b_step, a_trans, b_trans, acc);
      store_floats(ahead, k_ahead);
      cp_async_wait<kTcStages - 2>();
      __syncthreads();
      stage = next;
    }
    return k0;
  };
  // An interior tile of aligned float operands loads them without checks while the slice
  // ahead is full; edge tiles and the last slices take the checked loads.
  const bool unchecked = (kCopyA || oa.float4_runs(row0, a_along_k)) && (kCopyB || ob.float4_runs(col0, b_along_k));
  const int64_t unchecked_end = unchecked ? k_end - kTcStages * kTcBk + 1 : k_begin;
  const int64_t part_depth = p.part_depth;
  for (int64_t k0 = k_begin; k0 < k_end;) {
    const int64_t part_end = part_depth < k_end - k0 ? k0 + part_depth : k_end;
    if (multiplies)
      slices(std::true_type(), slices(std::false_type(), k0, part_end < unchecked_end ? part_end : unchecked_end),
             part_end);
    end_part(k0, part_end);
    k0 = part_end;
  }
  if (multiplies) cp_async_wait<0>();  // the empty groups issued past the end
  CUSTOMML_UNROLL
  for (int i = 0; i < 8; ++i) load4(acc4[i], totals + (i * kTcThreads + tid) * 4);
  // The elements of the tile: this lane's rows and columns left in it from its first
  // (row_of, col_of at 0: float4 i is m-tile i / 4's rows, n-tile i % 4's columns). The
  // tile's extent is read from the parameters here, not held across the loop.
  const int rows_left = static_cast<int>(pp.tile_rows) - row_of(0, 0),
            cols_left = static_cast<int>(pp.tile_cols) - col_of(0, 0);
  unsigned keep = 0;
  CUSTOMML_UNROLL
  for (int i = 0; i < 8; ++i) keep |= (i / 4 * 16 < rows_left && i % 4 * 8 < cols_left) << i;
  if (splits > 1 && !split_last_block<kTcThreads>(p, tile, splits, acc4, keep, &arrived)) return;
  double sq = 0.0;
  CUSTOMML_UNROLL
  for (int i = 0; i < 2; ++i) {
    CUSTOMML_UNROLL
    for (int j = 0; j < 4; ++j) {
      CUSTOMML_UNROLL
      for (int e = 0; e < 4; ++e)
        if (i * 16 + 8 * (e / 2) < rows_left && j * 8 + e % 2 < cols_left)
          sq += store_c<kGrad>(p, row0 + row_of(i, e), col0 + col_of(j, e), acc[i][j][e]);
    }
  }
  if (kGrad && p.sq) store_tile_squares<kTcThreads>(p.sq, tile.index, sq);
}

}  // namespace customml::CUSTOMML_CUDA_NS
