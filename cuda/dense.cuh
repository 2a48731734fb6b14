#pragma once
// Defines: gemm_kernel (the tiled float32 GEMM with the fused bias + activation
// epilogue behind all three GEMMs of a dense layer, and the backward pass's activation
// derivative and bias gradient), gemv_kernel (the same products for up to 4 rows or 16
// columns, a warp per output column), and the types they share with the tensor-core GEMM
// of cuda/gemm_tc.cuh (GemmParams, GemmPair, Operand, gemm_tile, store_c).

#include <cstdint>
#include <type_traits>

#include "activation.h"
#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// C (m, n) = act(op(A) (m, k) . op(B) (k, n) + bias (n)); A and B through element
// strides, so transposed operands are read in place. preact, if set, receives the
// value before the activation.
//
// The backward pass's extras (null / identity in a forward GEMM), so that dz, db, dW and
// dx take one launch and no pass writes dz:
// - a_act / b_act: that operand holds dy and is read as dz = act'(dy; y, z), with y and
//   z (a_y, a_z / b_y, b_z) at the operand's own offsets (dy's layout);
// - db: C gets one more row, m, where A reads as ones: the column sums of B, the bias
//   gradient inside the weight-gradient product, summed over k in the GEMM's order (the
//   order of a serial column sum), written to db instead of C.
//
// The float32 kernels sum in one order, the parts order (part_depth), whatever the
// kernel, grid or split: a row's result does not depend on the batch it came in.
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
  Activation a_act = Activation::identity, b_act = Activation::identity;
  const float *a_y = nullptr, *a_z = nullptr, *b_y = nullptr, *b_z = nullptr;
  float* db = nullptr;
  // The parts order: k in parts of part_depth (a multiple of kGemmBk: part_depth_of(k)),
  // each summed in k order from zero, the parts' sums added left to right from zero.
  int64_t part_depth = 0;
  // Split-K (splits > 1: a block per part of each tile): each block writes its part's
  // sums to partials (a 64 x 64 tile per part, tile-major), and the last block of a tile
  // to arrive (counters, one per tile, zero between launches) adds them in part order.
  float* partials = nullptr;
  unsigned* counters = nullptr;
};

// Up to two independent GEMMs in one launch (the backward pass's dW and dx): blocks
// [0, blocks0) take problem 0, the rest problem 1, each over its tiles row by row, with
// splits[i] consecutive blocks per tile (its parts, or 1). gemv_kernel counts warps
// instead of blocks, a warp per column of a group of kGemvRows rows.
struct GemmPair {
  GemmParams p[2];
  unsigned blocks0;
  unsigned tiles_n[2];
  unsigned splits[2] = {1, 1};
};

// At most kMaxParts parts, of at least one slice each: few enough that a warp holds a
// part per lane (gemv_kernel), enough that split-K covers the SMs at the MLP's shapes.
constexpr int kMaxParts = 32;
constexpr int kGemmBk = 16;  // the tiled kernels' slice depth
inline int64_t part_depth_of(int64_t k) {
  const int64_t per_part = (k + kMaxParts - 1) / kMaxParts;
  const int64_t slices = (per_part + kGemmBk - 1) / kGemmBk;
  return (slices < 1 ? 1 : slices) * kGemmBk;
}

// One operand as the loads see it: element (r, k) at base[r * rs + k * cs], rows along
// m (A) or n (B), depth along k.
struct Operand {
  const float* base;
  int64_t rs, cs, rows, depth;
  Activation act;  // not identity: base holds dy, read as dz
  const float *y, *z;
  int64_t ones_row;  // the row that reads as ones (db's), or -1

  // kGrad: the backward pass's extras (act, ones_row) are looked at; a forward GEMM's
  // kernel is compiled without them.
  template <bool kGrad>
  __device__ __forceinline__ float at(int64_t r, int64_t k) const {
    if (r < rows && k < depth) {
      const int64_t off = r * rs + k * cs;
      if (!kGrad || act == Activation::identity) return base[off];
      return act::backward(act, base[off], y[off], z ? z[off] : 0.0f);
    }
    return kGrad && r == ones_row && k < depth ? 1.0f : 0.0f;
  }

  // Whether the 64 rows from r0 are inside and every 4-element run of a full slice along
  // the contiguous direction is a 16-byte-aligned float4 (of y and z too, for dz):
  // SliceLoad may then skip its checks.
  __device__ __forceinline__ bool float4_runs(int64_t r0, bool along_k) const {
    const bool grad = act != Activation::identity;
    const uintptr_t bases = reinterpret_cast<uintptr_t>(base) | (grad ? reinterpret_cast<uintptr_t>(y) : 0) |
                            (grad && z ? reinterpret_cast<uintptr_t>(z) : 0);
    return r0 + 64 <= rows && (along_k ? cs : rs) == 1 && (along_k ? rs : cs) % 4 == 0 && (bases & 15) == 0;
  }
};

__device__ __forceinline__ Operand operand_a(const GemmParams& p) {
  return {p.a, p.a_rs, p.a_cs, p.m, p.k, p.a_act, p.a_y, p.a_z, p.db ? p.m : -1};
}
// B (k, n) is addressed as rows n, depth k: b_cs steps along n, b_rs along k.
__device__ __forceinline__ Operand operand_b(const GemmParams& p) {
  return {p.b, p.b_cs, p.b_rs, p.n, p.k, p.b_act, p.b_y, p.b_z, -1};
}

// This block's problem, tile (its index in the problem, first row, first column) and
// part (0 unless split). A forward GEMM (kPair false) is always problem 0, known at
// compile time: a problem chosen at run time costs the FP32 kernel some 30 registers
// (its parameters addressed dynamically).
struct GemmTile {
  int problem;
  unsigned index, part;
  int64_t row0, col0;
};
// kSplit: the kernel splits tiles along k (the tensor-core kernel never does: the
// division cost its tf32 instance a spill on sm_90).
template <bool kPair, bool kSplit = true>
__device__ __forceinline__ GemmTile gemm_tile(const GemmPair& pp, int bm, int bn) {
  const unsigned b = blockIdx.x;
  const int problem = kPair && b >= pp.blocks0 ? 1 : 0;
  const unsigned local = problem ? b - pp.blocks0 : b;
  const unsigned splits = kSplit ? pp.splits[problem] : 1, index = local / splits;
  return {problem, index, local % splits, static_cast<int64_t>(index / pp.tiles_n[problem]) * bm,
          static_cast<int64_t>(index % pp.tiles_n[problem]) * bn};
}

// C (r, c) = v: the bias, preact and activation, or db's row (r == m with db).
template <bool kGrad>
__device__ __forceinline__ void store_c(const GemmParams& p, int64_t r, int64_t c, float v) {
  if (r > p.m || c >= p.n || (r == p.m && !(kGrad && p.db))) return;
  if (kGrad && r == p.m) {
    p.db[c] = v;
    return;
  }
  v += p.bias ? p.bias[c] : 0.0f;
  if (p.preact) p.preact[r * p.ldc + c] = v;
  p.c[r * p.ldc + c] = act::apply(p.act, v);
}

// A 64 x 64 tile of C per block of 256 threads, each thread a 4 x 4 register tile;
// 16-deep slices of A and B staged through two shared-memory buffers (double buffering:
// the next slice's global loads are in flight while the current one is multiplied, and
// one barrier per slice suffices). Each thread moves 4 elements of each operand per
// slice, as one 16-byte load when the operand is contiguous along that direction and
// aligned, else as 4 scalar loads.
constexpr int kGemmBm = 64, kGemmBn = 64, kGemmTm = 4, kGemmTn = 4;
constexpr int kGemmThreads = (kGemmBm / kGemmTm) * (kGemmBn / kGemmTn);

// One operand's slice: `rows` x `cols` of a strided matrix, into shared memory laid out
// [k][m] (A) or [k][n] (B). along_k: the thread's 4 elements run along k (the operand is
// k-contiguous), else along m / n.
struct SliceLoad {
  float v[4];

  // (r, k): the first element; the 4 elements run along k or along r. kChecked false: the
  // caller knows them inside and a float4 (Operand::float4_runs, a full slice).
  template <bool kGrad, bool kChecked = true>
  __device__ __forceinline__ void load(const Operand& o, int64_t r, int64_t k, bool along_k) {
    const int64_t dr = along_k ? 0 : 1, dk = along_k ? 1 : 0;
    const int64_t contiguous_stride = along_k ? o.cs : o.rs;
    // unchecked, the contiguous stride is 1 (Operand::float4_runs)
    const int64_t off = !kChecked ? (along_k ? r * o.rs + k : r + k * o.cs) : r * o.rs + k * o.cs;
    const bool in_bounds = along_k ? (r < o.rows && k + 3 < o.depth) : (r + 3 < o.rows && k < o.depth);
    const bool grad = kGrad && o.act != Activation::identity;
    const uintptr_t addresses = reinterpret_cast<uintptr_t>(o.base + off) |
                                (grad ? reinterpret_cast<uintptr_t>(o.y + off) : 0) |
                                (grad && o.z ? reinterpret_cast<uintptr_t>(o.z + off) : 0);
    if (!kChecked || (in_bounds && contiguous_stride == 1 && (addresses & 15) == 0)) {
      const float4 q = *reinterpret_cast<const float4*>(o.base + off);
      v[0] = q.x;
      v[1] = q.y;
      v[2] = q.z;
      v[3] = q.w;
      if (grad) {
        const float4 y = *reinterpret_cast<const float4*>(o.y + off);
        const float4 z = o.z ? *reinterpret_cast<const float4*>(o.z + off) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        v[0] = act::backward(o.act, v[0], y.x, z.x);
        v[1] = act::backward(o.act, v[1], y.y, z.y);
        v[2] = act::backward(o.act, v[2], y.z, z.z);
        v[3] = act::backward(o.act, v[3], y.w, z.w);
      }
      return;
    }
    if constexpr (kChecked) {
      CUSTOMML_UNROLL
      for (int i = 0; i < 4; ++i) v[i] = o.at<kGrad>(r + i * dr, k + i * dk);
    }
  }
};

// grid (the pair's tiles times their splits), block kGemmThreads; kGrad: a backward-pass
// product (GemmParams' extras in use)
template <bool kGrad>
__global__ void __launch_bounds__(kGemmThreads, kGrad ? 2 : 3) gemm_kernel(GemmPair pp) {
  __shared__ __align__(16) float as[2][kGemmBk][kGemmBm];
  __shared__ __align__(16) float bs[2][kGemmBk][kGemmBn];
  __shared__ unsigned arrived;  // split-K: how many of the tile's blocks were done before this one
  CUSTOMML_POISON_SHARED(as);
  CUSTOMML_POISON_SHARED(bs);
  CUSTOMML_POISON_SHARED(arrived);
  const int tid = threadIdx.x;
  const int tx = tid % (kGemmBn / kGemmTn), ty = tid / (kGemmBn / kGemmTn);
  const GemmTile tile = gemm_tile<kGrad>(pp, kGemmBm, kGemmBn);
  const GemmParams& p = kGrad ? pp.p[tile.problem] : pp.p[0];
  const unsigned splits = kGrad ? pp.splits[tile.problem] : pp.splits[0];
  const int64_t row0 = tile.row0, col0 = tile.col0;
  // This block's k: all of it, or its part when split.
  const int64_t k_begin = tile.part * p.part_depth;
  const int64_t k_end = splits > 1 && k_begin + p.part_depth < p.k ? k_begin + p.part_depth : p.k;
  Operand oa = operand_a(p), ob = operand_b(p);
  oa.depth = ob.depth = k_end;
  // Which direction each operand's 4-element runs take: along the contiguous one. A
  // forward GEMM's are known (x row-major along k, w row-major along n: dense_forward's),
  // so its main loop carries one layout's code.
  const bool a_along_k = kGrad ? p.a_cs == 1 : true, b_along_k = kGrad && p.b_cs != 1 && p.b_rs == 1;
  // A: along k, thread t takes row t / 4, k (t % 4) * 4; else k t / 16, rows (t % 16) * 4.
  const int a_m = a_along_k ? tid / 4 : (tid % 16) * 4, a_k = a_along_k ? (tid % 4) * 4 : tid / 16;
  // B: along n, thread t takes k t / 16, columns (t % 16) * 4; else column t / 4, k (t % 4) * 4.
  const int b_n = b_along_k ? tid / 4 : (tid % 16) * 4, b_k = b_along_k ? (tid % 4) * 4 : tid / 16;
  SliceLoad a_next, b_next;
  auto fetch = [&](auto checked, int64_t k0) {
    a_next.template load<kGrad, decltype(checked)::value>(oa, row0 + a_m, k0 + a_k, a_along_k);
    b_next.template load<kGrad, decltype(checked)::value>(ob, col0 + b_n, k0 + b_k, b_along_k);
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

  // acc: the current part's sums; total: the parts' sums so far, in order.
  float acc[kGemmTm][kGemmTn], total[kGemmTm][kGemmTn];
  CUSTOMML_UNROLL
  for (int i = 0; i < kGemmTm; ++i) {
    CUSTOMML_UNROLL
    for (int j = 0; j < kGemmTn; ++j) acc[i][j] = total[i][j] = 0.0f;
  }
  if (k_begin < k_end) {
    fetch(std::true_type(), k_begin);
    stash(0);
    __syncthreads();
  }
  int cur = 0;
  // Slices [from, to) of a part; returns where it stopped. The slice loop is the
  // multiply-adds, the next slice's loads (checked or not) and their stash alone.
  auto slices = [&](auto checked, int64_t k0, int64_t to) {
    for (; k0 < to; k0 += kGemmBk) {
      const bool more = k0 + kGemmBk < k_end;
      if (more) fetch(checked, k0 + kGemmBk);
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
      cur ^= 1;
    }
    return k0;
  };
  // An interior tile of aligned operands loads without checks while the next slice is
  // full (k0 + 2 slices <= k_end); edge tiles and the last slice take the checked loads.
  const bool unchecked = oa.float4_runs(row0, a_along_k) && ob.float4_runs(col0, b_along_k);
  const int64_t last_unchecked = unchecked ? k_end - 2 * kGemmBk : k_begin - 1;
  // The parts, each summed from zero, then added to the total in order.
  for (int64_t part0 = k_begin; part0 < k_end; part0 += p.part_depth) {
    const int64_t part_end = part0 + p.part_depth < k_end ? part0 + p.part_depth : k_end;
    const int64_t mid = last_unchecked + 1 < part_end ? last_unchecked + 1 : part_end;
    int64_t k0 = part0;
    if constexpr (!kGrad) k0 = slices(std::false_type(), part0, mid);  // the backward's registers: 122 -> 160
    slices(std::true_type(), k0, part_end);
    CUSTOMML_UNROLL
    for (int i = 0; i < kGemmTm; ++i) {
      CUSTOMML_UNROLL
      for (int j = 0; j < kGemmTn; ++j) {
        total[i][j] += acc[i][j];
        acc[i][j] = 0.0f;
      }
    }
  }

  if (splits > 1) {
    // Every block stores its part's sums; the tile's last block adds them all, in part
    // order, whichever block that is. The fences order the stores before the count and
    // the count before the loads (the threadFenceReduction pattern); __ldcg reads L2,
    // where the other SMs' stores are.
    const int64_t tile_base = static_cast<int64_t>(tile.index) * splits;
    float* mine = p.partials + (tile_base + tile.part) * (kGemmBm * kGemmBn);
    CUSTOMML_UNROLL
    for (int i = 0; i < kGemmTm; ++i) store4(mine + (ty * kGemmTm + i) * kGemmBn + tx * kGemmTn, total[i]);
    __threadfence();
    __syncthreads();
    if (tid == 0) arrived = atomicAdd(p.counters + tile.index, 1u);
    __syncthreads();
    if (arrived != splits - 1) return;
    __threadfence();
    if (tid == 0) p.counters[tile.index] = 0;  // ready for the next launch
    CUSTOMML_UNROLL
    for (int i = 0; i < kGemmTm; ++i) {
      CUSTOMML_UNROLL
      for (int j = 0; j < kGemmTn; ++j) total[i][j] = 0.0f;
    }
    for (unsigned q = 0; q < splits; ++q) {
      const float* part = p.partials + (tile_base + q) * (kGemmBm * kGemmBn);
      CUSTOMML_UNROLL
      for (int i = 0; i < kGemmTm; ++i) {
        const float4 v = __ldcg(reinterpret_cast<const float4*>(part + (ty * kGemmTm + i) * kGemmBn + tx * kGemmTn));
        total[i][0] += v.x;
        total[i][1] += v.y;
        total[i][2] += v.z;
        total[i][3] += v.w;
      }
    }
  }

  CUSTOMML_UNROLL
  for (int i = 0; i < kGemmTm; ++i) {
    CUSTOMML_UNROLL
    for (int j = 0; j < kGemmTn; ++j) store_c<kGrad>(p, row0 + ty * kGemmTm + i, col0 + tx * kGemmTn + j, total[i][j]);
  }
}

// Up to kGemvRows rows of C, or a few columns: a warp per column of a group of kGemvRows
// rows, lane q summing part q (parts order: at most kMaxParts = 32 parts), then every
// lane adding the lanes' sums in order through shuffles. A block's 8 warps take 8
// adjacent columns, so a row-major B's 32-byte sector of 8 columns is read once per block.
constexpr int kGemvRows = 4, kGemvThreads = 256, kGemvMaxColumns = 16;

// grid (the pair's warps / 8), block kGemvThreads; kGrad as gemm_kernel's
template <bool kGrad>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(GemmPair pp) {
  const unsigned warp = blockIdx.x * (kGemvThreads / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int problem = kGrad && warp >= pp.blocks0 ? 1 : 0;
  const GemmParams& p = kGrad ? pp.p[problem] : pp.p[0];
  const unsigned local = problem ? warp - pp.blocks0 : warp;
  const int64_t col = local % pp.tiles_n[problem], row0 = static_cast<int64_t>(local / pp.tiles_n[problem]) * kGemvRows;
  // the last block's spare warps (of problem 1, whether or not there is one) leave, whole
  if (row0 > p.m || (row0 == p.m && !(kGrad && p.db))) return;
  const Operand oa = operand_a(p), ob = operand_b(p);
  const int64_t k_begin = lane * p.part_depth;
  const int64_t k_end = k_begin + p.part_depth < p.k ? k_begin + p.part_depth : p.k;
  // Four k at a time, their loads issued together (a part ends on a multiple of 16 or at
  // k, past which the loads read zeros, as the tiled kernel's padding: adding 0 * 0 to a
  // sum that is never -0 leaves it as it was).
  float acc[kGemvRows] = {};
  for (int64_t k = k_begin; k < k_end; k += 4) {
    SliceLoad b4, a4[kGemvRows];
    b4.load<kGrad>(ob, col, k, true);
    CUSTOMML_UNROLL
    for (int r = 0; r < kGemvRows; ++r) a4[r].load<kGrad>(oa, row0 + r, k, true);
    CUSTOMML_UNROLL
    for (int r = 0; r < kGemvRows; ++r) {
      CUSTOMML_UNROLL
      for (int i = 0; i < 4; ++i) acc[r] += a4[r].v[i] * b4.v[i];
    }
  }
  const int parts = static_cast<int>((p.k + p.part_depth - 1) / p.part_depth);
  float total[kGemvRows] = {};
  for (int q = 0; q < parts; ++q) {
    CUSTOMML_UNROLL
    for (int r = 0; r < kGemvRows; ++r) total[r] += __shfl_sync(0xffffffffu, acc[r], q);
  }
  if (lane == 0) {
    CUSTOMML_UNROLL
    for (int r = 0; r < kGemvRows; ++r) store_c<kGrad>(p, row0 + r, col, total[r]);
  }
}

}  // namespace customml::CUSTOMML_CUDA_NS
