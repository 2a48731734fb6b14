#pragma once
// Defines: gemm_kernel (the tiled float32 GEMM with the fused bias + activation
// epilogue behind all three GEMMs of a dense layer, and the backward pass's activation
// derivative and bias gradient), gemv_kernel (the same products for up to 4 rows or 16
// columns, a warp per output column), and the types they share with the tensor-core GEMM
// of cuda/gemm_tc.cuh (GemmParams, GemmPair, Operand, gemm_tile, store_c,
// store_tile_squares).

#include <cstdint>
#include <type_traits>

#include "activation.h"
#include "cuda/async_copy.cuh"
#include "cuda/common.cuh"
#include "cuda/gemm_slices.cuh"
#include "cuda/half_bits.cuh"
#include "cuda/penalty.cuh"
#include "random.h"

namespace customml::CUSTOMML_CUDA_NS {

// C (m, n) = act(op(A) (m, k) . op(B) (k, n) + bias (n)); A and B through element
// strides, so transposed operands are read in place. preact, if set, receives the
// value before the activation.
//
// The backward pass's extras (null / identity in a forward GEMM), so that db, dW and dx
// take one launch and the operands are read as they are (dz, ready: dense_backward):
// - db: C gets one more row, m, where A reads as ones: the column sums of B, the bias
//   gradient inside the weight-gradient product, summed over k in the GEMM's order (the
//   order of a serial column sum), written to db instead of C;
// - grad_act: dx's store writes the layer below's dz = act'(dx; y, z) instead of dx
//   (after a fused Dropout's mask), y and z (grad_y, grad_z) at C's offsets, and its
//   16-bit copy to c16: the derivative is applied once per element, where dx is made.
//
// Every kernel sums in one order, the parts order (part_depth), whatever the kernel, grid
// or split (the tensor-core kernel its mma chains): a row's result does not depend on the
// batch it came in.
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
  float* db = nullptr;
  Activation grad_act = Activation::identity;
  const float *grad_y = nullptr, *grad_z = nullptr;
  // The parts order: k in parts of part_depth (a multiple of kGemmBk: part_depth_of(k)),
  // each summed in k order from zero, the parts' sums added left to right from zero.
  int64_t part_depth = 0;
  // Split-K (splits > 1: a block per part of each tile): each block writes its part's
  // sums to partials (a 64 x 64 tile per part, tile-major), and the last block of a tile
  // to arrive (counters, one per tile, zero between launches) adds them in part order.
  float* partials = nullptr;
  unsigned* counters = nullptr;
  // bf16 / fp16 launches (format bf16, else fp16): A's and B's 16-bit copies, element (r, k)
  // of A at a16[r * a16_rs + k * a16_cs] (B's (k, c) at b16[k * b16_rs + c * b16_cs]): the
  // float operand's layout with rows padded to half_ld (backend.h), which the tensor-core
  // kernel copies as they are; null: it reads the float operand and rounds it as staged.
  // c16: the epilogue also writes C rounded to the format there (the next layer's A, or the
  // layer below's dz), element (r, c) at c16[r * ldc16 + c].
  const uint16_t* a16 = nullptr;
  const uint16_t* b16 = nullptr;
  uint16_t* c16 = nullptr;
  int64_t a16_rs = 0, a16_cs = 0, b16_rs = 0, b16_cs = 0, ldc16 = 0;
  bool bf16 = false;
  // dropout.out: the epilogue also writes C masked there (DropoutMask, backend.h), at c's
  // offsets, which are the mask's element indices (c is the Dropout layer's whole input or
  // gradient, ldc its width); out == c masks C in place.
  DropoutMask dropout = {};
  // The backward's dW product (db's row included): each tile's sum of squares of what it
  // stored, in double, left in sq[tile index] by its last block (gemv_kernel: sq[warp
  // index], by lane 0), each slot written once (DenseShape::norm_slots); null: none.
  double* sq = nullptr;
  // The backward's dW product: the kernel's L1/L2 penalty (DenseShape::penalty), its
  // gradient at penalty_w (at c's offsets) added to each dW element stored (before its
  // square); null: none.
  const float* penalty_w = nullptr;
  float l1 = 0.0f, l2 = 0.0f;
};

// Up to two independent GEMMs in one launch (the backward pass's dW and dx): blocks
// [0, blocks0) take problem 0, the rest problem 1, each over its tiles row by row, with
// splits[i] consecutive blocks per tile (its parts, or 1). gemv_kernel counts warps
// instead of blocks, a warp per column of a group of kGemvRows rows.
//
// A tile is tile_rows x tile_cols of C (64 x 64, or down to 16 x 8 where a split launch
// would leave SMs idle, gemm()): its block multiplies the kernel's 64 x 64 from the tile's
// origin (a part's time is its slices' latency, not its FMAs, at those shapes) and keeps
// only the tile's elements, which it stores and, split, sums. An element's sum is the same
// whichever block computes it, so the tiling changes no bit.
struct GemmPair {
  GemmParams p[2];
  unsigned blocks0;
  unsigned tiles_n[2];
  unsigned splits[2] = {1, 1};
  unsigned tile_rows = kGemmBm, tile_cols = kGemmBn;
};

// At most kMaxParts parts, of at least one slice each: few enough that a warp holds a
// part per lane (gemv_kernel), enough that split-K covers the SMs at the MLP's shapes.
constexpr int kMaxParts = 32;
// The float32 tiled kernel counts k in 32 bits (its loop and copy counts); gemm() refuses more.
constexpr int64_t kGemmMaxK = int64_t{1} << 30;
inline int64_t part_depth_of(int64_t k) {
  const int64_t per_part = (k + kMaxParts - 1) / kMaxParts;
  const int64_t slices = (per_part + kGemmBk - 1) / kGemmBk;
  return (slices < 1 ? 1 : slices) * kGemmBk;
}

__device__ __forceinline__ Operand operand_a(const GemmParams& p) {
  return {p.a, p.a_rs, p.a_cs, p.m, p.k, p.db ? p.m : -1};
}
// B (k, n) is addressed as rows n, depth k: b_cs steps along n, b_rs along k.
__device__ __forceinline__ Operand operand_b(const GemmParams& p) { return {p.b, p.b_cs, p.b_rs, p.n, p.k, -1}; }

// This block's problem, tile (its index in the problem, first row, first column) and
// part (0 unless split). A forward GEMM (kPair false) is always problem 0, known at
// compile time: a problem chosen at run time costs the FP32 kernel some 30 registers
// (its parameters addressed dynamically).
struct GemmTile {
  int problem;
  unsigned index, part;
  int64_t row0, col0;
  int rows, cols;  // the tile's extent (GemmPair::tile_rows, tile_cols)
};
template <bool kPair>
__device__ __forceinline__ GemmTile gemm_tile(const GemmPair& pp) {
  const unsigned b = blockIdx.x;
  const int problem = kPair && b >= pp.blocks0 ? 1 : 0;
  const unsigned local = problem ? b - pp.blocks0 : b;
  const unsigned splits = pp.splits[problem], index = local / splits;
  return {problem,
          index,
          local % splits,
          static_cast<int64_t>(index / pp.tiles_n[problem]) * pp.tile_rows,
          static_cast<int64_t>(index % pp.tiles_n[problem]) * pp.tile_cols,
          static_cast<int>(pp.tile_rows),
          static_cast<int>(pp.tile_cols)};
}

// Element i of an inverted-dropout mask applied to y: dropout_kernel's value (the same
// Philox bits, scale and product), so fusing the mask changes no bit.
__device__ __forceinline__ float dropout_value(const DropoutMask& d, int64_t i, float y) {
  const uint64_t e = d.first + static_cast<uint64_t>(i);
  const uint64_t stream = d.gate ? d.stream + static_cast<uint64_t>(d.gate->step) * d.per_step : d.stream;
  const Philox4 r = philox4x32_10(d.seed, stream, e / 4);
  // selects, not r.v[e % 4]: a dynamic index would put r in local memory
  const unsigned j = static_cast<unsigned>(e % 4);
  const uint32_t bits = j == 0 ? r.v[0] : j == 1 ? r.v[1] : j == 2 ? r.v[2] : r.v[3];
  return uniform_from_bits(bits) >= d.rate ? y * (1.0f / (1.0f - d.rate)) : 0.0f;
}

// C (r, c) = v: the bias, preact and activation, or db's row (r == m with db); then the
// dropout mask's copy (or C masked in place); a backward product's C (dx) then becomes the
// layer below's dz (grad_act), the same float expression the layer's own loads applied;
// dW's gains its penalty's gradient (penalty_w), kernel_penalties' float sum. Split or
// not, a C element is stored once: the penalty is added once.
// Returns the square of what a backward product stored, exact in double (0: nothing
// stored), for GemmParams::sq.
template <bool kGrad>
__device__ __forceinline__ double store_c(const GemmParams& p, int64_t r, int64_t c, float v) {
  if (r > p.m || c >= p.n || (r == p.m && !(kGrad && p.db))) return 0.0;
  if (kGrad && r == p.m) {
    p.db[c] = v;
    return static_cast<double>(v) * v;
  }
  const int64_t i = r * p.ldc + c;
  v += p.bias ? p.bias[c] : 0.0f;
  if (p.preact) p.preact[i] = v;
  const float y = act::apply(p.act, v);
  if constexpr (kGrad) {  // dropout.out is c here (dx masked in place)
    const float g = p.dropout.out ? dropout_value(p.dropout, i, y) : y;
    float dz = act::backward(p.grad_act, g, p.grad_y ? p.grad_y[i] : 0.0f, p.grad_z ? p.grad_z[i] : 0.0f);
    if (p.penalty_w) dz += penalty_gradient(p.l1, p.l2, p.penalty_w[i]);
    p.c[i] = dz;
    if (p.c16) p.c16[r * p.ldc16 + c] = half_bits(dz, p.bf16);
    return static_cast<double>(dz) * dz;
  }
  if (p.dropout.out != p.c) p.c[i] = y;
  if (p.c16) p.c16[r * p.ldc16 + c] = half_bits(y, p.bf16);
  if (p.dropout.out) p.dropout.out[i] = dropout_value(p.dropout, i, y);
  return 0.0;
}

// A tile's sum of squares (GemmParams::sq) in sq[slot]: each thread's v (its elements'
// squares, added in its store order) summed through warp shuffles, then the warps' sums in
// warp order by thread 0, all in double: the same bits whatever the threads' schedule.
// Called by the block's kBlock threads alike.
template <int kBlock>
__device__ __forceinline__ void store_tile_squares(double* sq, unsigned slot, double v) {
  __shared__ double warp_sums[kBlock / 32];
  CUSTOMML_POISON_SHARED(warp_sums);
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x != 0) return;
  double total = 0.0;
  for (int w = 0; w < kBlock / 32; ++w) total += warp_sums[w];
  sq[slot] = total;
}

// Split-K's end of a block's part (splits > 1): every block stores its part's sums; the
// tile's last block to arrive adds them all, in part order, whichever block that is, and
// returns true with them in total (the others false). The fences order the stores before
// the count and the count before the loads (the threadFenceReduction pattern); __ldcg
// reads L2, where the other SMs' stores are. A part's slot (64 x 64 floats, both GEMMs'
// blocks) is stored thread-major: float4 i of every thread, then i + 1; only the float4s
// with an element of the tile (bit i of keep) are stored and summed. A thread's loads of 8
// float4s are in flight at once (the adds stay in part order): two parts' of the float32
// kernel (4 each: the sum waits on L2's latency half as often), one of the tensor-core
// kernel's (8; two spilled its forward). Block-uniform.
template <int kThreads, int kRows>
__device__ __forceinline__ bool split_last_block(const GemmParams& p, const GemmTile& t, unsigned splits,
                                                 float (&total)[kRows][4], unsigned keep, unsigned* arrived) {
  static_assert(kThreads * kRows * 4 == 64 * 64, "a part's slot is 64 x 64 floats");
  constexpr int kInFlight = kRows < 8 ? 8 / kRows : 1;
  const int tid = threadIdx.x;
  const int64_t tile_base = static_cast<int64_t>(t.index) * splits;
  float* mine = p.partials + (tile_base + t.part) * (64 * 64);
  CUSTOMML_UNROLL
  for (int i = 0; i < kRows; ++i)
    if (keep >> i & 1) store4(mine + (i * kThreads + tid) * 4, total[i]);
  __threadfence();
  __syncthreads();
  if (tid == 0) *arrived = atomicAdd(p.counters + t.index, 1u);
  __syncthreads();
  if (*arrived != splits - 1) return false;
  __threadfence();
  if (tid == 0) p.counters[t.index] = 0;  // ready for the next launch
  CUSTOMML_UNROLL
  for (int i = 0; i < kRows; ++i) {
    CUSTOMML_UNROLL
    for (int j = 0; j < 4; ++j) total[i][j] = 0.0f;
  }
  // Parts q .. q + n - 1: their loads, then their adds in order.
  auto add_parts = [&](auto n, unsigned q) {
    float4 v[decltype(n)::value][kRows];
    CUSTOMML_UNROLL
    for (int h = 0; h < decltype(n)::value; ++h) {
      const float* part = p.partials + (tile_base + q + h) * (64 * 64);
      CUSTOMML_UNROLL
      for (int i = 0; i < kRows; ++i)
        if (keep >> i & 1) v[h][i] = __ldcg(reinterpret_cast<const float4*>(part + (i * kThreads + tid) * 4));
    }
    CUSTOMML_UNROLL
    for (int h = 0; h < decltype(n)::value; ++h) {
      CUSTOMML_UNROLL
      for (int i = 0; i < kRows; ++i) {
        if (!(keep >> i & 1)) continue;
        total[i][0] += v[h][i].x;
        total[i][1] += v[h][i].y;
        total[i][2] += v[h][i].z;
        total[i][3] += v[h][i].w;
      }
    }
  };
  unsigned q = 0;
  if constexpr (kInFlight > 1)
    for (; q + kInFlight <= splits; q += kInFlight) add_parts(std::integral_constant<int, kInFlight>(), q);
  for (; q < splits; ++q) add_parts(std::integral_constant<int, 1>(), q);
  return true;
}

// Shared memory of a block: kStages slices of A and B.
struct GemmSmem {
  float *a, *b, *total;
  GemmTile* tile;
  unsigned* arrived;  // split-K: how many of the tile's blocks were done before this one
};

// The block's tile, its layouts known: A row-major (kAk) or k-major, B likewise (kBk).
template <bool kGrad, int kStages, bool kAk, bool kBk>
__device__ __forceinline__ void gemm_block(const GemmParams& p, const GemmTile& tile, unsigned splits,
                                           const GemmSmem& sm) {
  const int tid = threadIdx.x;
  const int tx = tid % (kGemmBn / kGemmTn), ty = tid / (kGemmBn / kGemmTn);
  const int64_t row0 = tile.row0, col0 = tile.col0;
  // The epilogue reads the tile from shared memory: kept in registers, its 64-bit origin
  // would live across the main loop (the forward kernel spilled it).
  if (tid == 0) *sm.tile = tile;
  // This block's k: all of it, or its part when split; counted in 32 bits from its start
  // (gemm() keeps k within kGemmMaxK).
  const int64_t k_begin = tile.part * p.part_depth;
  const int depth =
      static_cast<int>((splits > 1 && k_begin + p.part_depth < p.k ? k_begin + p.part_depth : p.k) - k_begin);
  const int part_depth = static_cast<int>(p.part_depth);
  const Operand oa = operand_a(p), ob = operand_b(p);
  const float* a_src = run_src<kAk>(oa, row0, k_begin, tid);
  const float* b_src = run_src<kBk>(ob, col0, k_begin, tid);
  // The rows left from each run's first: from the registers' tile before the first
  // barrier, from the shared copy after it (not held across the main loop).
  auto rows_left = [&](bool first, int* a_rows, int* b_rows) {
    const GemmTile& t = first ? tile : *sm.tile;
    *a_rows = run_rows<kAk>(oa, t.row0, tid);
    *b_rows = run_rows<kBk>(ob, t.col0, tid);
  };
  static_assert(!kGrad || kAk == kBk, "a backward product's operands share one layout");
  // db's row of ones (A's row m; a product with db has a k-major A, gemm_kernel): the
  // element of this thread's run in row m, if any; else -1.
  int a_ones = -1;
  if (kGrad && !kAk && p.db) {
    const int64_t d = p.m - (row0 + run_row<kAk>(tid));
    a_ones = d >= 0 && d < 4 ? static_cast<int>(d) : -1;
  }
  auto slice = [](float* buffers, int buf, int tid_smem) { return buffers + buf * kGemmSliceFloats + tid_smem; };

  // Issues the slice k0 (from k_begin) into buffer buf, as a group (empty past the end).
  // kFull: the slice is whole and every run a 16-byte one.
  auto issue = [&](auto full, int buf, int k0, bool first) {
    const int left = depth - k0;
    float* a = slice(sm.a, buf, run_smem<kAk>(tid));
    float* b = slice(sm.b, buf, run_smem<kBk>(tid));
    if constexpr (decltype(full)::value) {
      cp_async<16>(a, a_src, 16);
      cp_async<16>(b, b_src, 16);
    } else if (left > 0) {
      const int d = left < kGemmBk ? left : kGemmBk;
      int a_rows, b_rows;
      rows_left(first, &a_rows, &b_rows);
      const int na = run_count<kAk>(a_rows, tid, d), nb = run_count<kBk>(b_rows, tid, d);
      copy_run(a, a_src, oa.base, kAk ? oa.cs : oa.rs, na, runs_vec<kAk>(oa));
      copy_run(b, b_src, ob.base, kBk ? ob.cs : ob.rs, nb, runs_vec<kBk>(ob));
    }
    cp_async_commit();
    a_src += kGemmBk * oa.cs;
    b_src += kGemmBk * ob.cs;
  };
  // Once this thread's copies of the slice k0 (buffer buf) have landed: db's ones are
  // written (backward only, never in a whole slice: db's row is outside the operands).
  // Each thread rewrites its own copies, so the barrier that follows publishes them.
  auto finish = [&](auto full, int buf, int k0) {
    if constexpr (kGrad && !decltype(full)::value) {
      if (a_ones >= 0 && run_k<kAk>(tid) < depth - k0) slice(sm.a, buf, run_smem<kAk>(tid))[a_ones] = 1.0f;
    }
  };

  // acc: the current part's sums; total: the parts' sums so far, in order. The forward
  // kernel keeps total in shared memory until the epilogue (this thread's own 16 floats,
  // read and written once a part, thread-major float4s), which frees 16 of its 80
  // registers for the pipeline.
  constexpr bool kSharedTotal = !kGrad;
  float acc[kGemmTm][kGemmTn], total[kGemmTm][kGemmTn];
  CUSTOMML_UNROLL
  for (int i = 0; i < kGemmTm; ++i) {
    CUSTOMML_UNROLL
    for (int j = 0; j < kGemmTn; ++j) acc[i][j] = total[i][j] = 0.0f;
    if (kSharedTotal) store4(sm.total + (i * kGemmThreads + tid) * kGemmTn, total[i]);
  }
  // The pipeline: slices 0 .. kStages - 2 issued, the first waited for.
  CUSTOMML_UNROLL
  for (int s = 0; s < kStages - 1; ++s) issue(std::false_type(), s, s * kGemmBk, true);
  cp_async_wait<kStages - 2>();
  finish(std::false_type(), 0, 0);
  __syncthreads();
  int stage = 0;  // the buffer of the slice being multiplied
  // Slices [k0, to) of a part: issue the slice kStages - 1 ahead (into the buffer read
  // before the last barrier), multiply this one, wait for the next one, barrier.
  auto slices = [&](auto full, int k0, int to) {
    for (; k0 < to; k0 += kGemmBk) {
      const int next = stage + 1 < kStages ? stage + 1 : 0, ahead = stage ? stage - 1 : kStages - 1;
      issue(full, ahead, k0 + (kStages - 1) * kGemmBk, false);
      multiply_slice<kAk, kBk>(sm.a + stage * kGemmSliceFloats, sm.b + stage * kGemmSliceFloats, ty, tx, acc);
      cp_async_wait<kStages - 2>();
      finish(full, next, k0 + kGemmBk);
      __syncthreads();
      stage = next;
    }
    return k0;
  };
  // An interior tile of aligned operands issues whole 16-byte slices without counting while
  // the slice issued is whole (k0 + kStages slices <= depth); edge tiles and the last
  // slices take the counted loop.
  const bool whole = runs_vec<kAk>(oa) && runs_vec<kBk>(ob) && row0 + kGemmBm <= oa.rows && col0 + kGemmBn <= ob.rows;
  const int whole_end = whole ? depth - kStages * kGemmBk + 1 : 0;  // the whole-slice loop's slices start below
  // The parts, each summed from zero, then added to the total in order.
  for (int k0 = 0; k0 < depth;) {
    const int part_end = part_depth < depth - k0 ? k0 + part_depth : depth;
    k0 = slices(std::false_type(), slices(std::true_type(), k0, whole_end < part_end ? whole_end : part_end), part_end);
    CUSTOMML_UNROLL
    for (int i = 0; i < kGemmTm; ++i) {
      if (kSharedTotal) load4(total[i], sm.total + (i * kGemmThreads + tid) * kGemmTn);
      CUSTOMML_UNROLL
      for (int j = 0; j < kGemmTn; ++j) {
        total[i][j] += acc[i][j];
        acc[i][j] = 0.0f;
      }
      if (kSharedTotal) store4(sm.total + (i * kGemmThreads + tid) * kGemmTn, total[i]);
    }
  }
  cp_async_wait<0>();  // the empty groups issued past the end
  if (kSharedTotal) {
    CUSTOMML_UNROLL
    for (int i = 0; i < kGemmTm; ++i) load4(total[i], sm.total + (i * kGemmThreads + tid) * kGemmTn);
  }

  const GemmTile t = *sm.tile;
  // The elements of the tile: this thread's rows ty * 4 + i, columns from tx * 4 or tx.
  unsigned keep = 0;
  CUSTOMML_UNROLL
  for (int i = 0; i < kGemmTm; ++i) keep |= (ty * kGemmTm + i < t.rows && (kBk ? tx : tx * kGemmTn) < t.cols) << i;
  if (splits > 1 && !split_last_block<kGemmThreads>(p, t, splits, total, keep, sm.arrived)) return;

  double sq = 0.0;
  CUSTOMML_UNROLL
  for (int i = 0; i < kGemmTm; ++i) {
    CUSTOMML_UNROLL
    for (int j = 0; j < kGemmTn; ++j) {
      const int c = kBk ? tx + 16 * j : tx * kGemmTn + j;
      if (ty * kGemmTm + i < t.rows && c < t.cols)
        sq += store_c<kGrad>(p, t.row0 + ty * kGemmTm + i, t.col0 + c, total[i][j]);
    }
  }
  if (kGrad && p.sq) store_tile_squares<kGemmThreads>(p.sq, t.index, sq);
}

// grid (the pair's tiles times their splits), block kGemmThreads; kGrad: a backward-pass
// product (GemmParams' extras in use). Three slices in flight: 30 KiB of shared memory.
template <bool kGrad>
__global__ void __launch_bounds__(kGemmThreads, kGrad ? 2 : 3) gemm_kernel(GemmPair pp) {
  constexpr int kStages = 3;
  __shared__ __align__(16) float as[kStages][kGemmSliceFloats];
  CUSTOMML_POISON_SHARED(as);
  __shared__ __align__(16) float bs[kStages][kGemmSliceFloats];
  CUSTOMML_POISON_SHARED(bs);
  __shared__ __align__(16) float totals[kGrad ? 4 : kGemmTm * kGemmThreads * kGemmTn];
  CUSTOMML_POISON_SHARED(totals);
  __shared__ GemmTile tile_shared;
  CUSTOMML_POISON_SHARED(tile_shared);
  __shared__ unsigned arrived;
  CUSTOMML_POISON_SHARED(arrived);
  const GemmTile tile = gemm_tile<kGrad>(pp);
  const GemmParams& p = kGrad ? pp.p[tile.problem] : pp.p[0];
  const unsigned splits = kGrad ? pp.splits[tile.problem] : pp.splits[0];
  const GemmSmem sm{&as[0][0], &bs[0][0], totals, &tile_shared, &arrived};
  // The layouts follow the operands: a forward GEMM's are known (x row-major along k, w
  // along n: dense_forward's), so it carries one; a backward one's are dx's (dy and w both
  // along k) or dW's (x and dy both along their rows), chosen by A; dW's always when it has
  // db's row (its A is x^T, k-contiguous only for one input, which the GEMV takes anyway).
  if constexpr (!kGrad)
    gemm_block<kGrad, kStages, true, false>(p, tile, splits, sm);
  else if (p.a_cs == 1 && !p.db)
    gemm_block<kGrad, kStages, true, true>(p, tile, splits, sm);
  else
    gemm_block<kGrad, kStages, false, false>(p, tile, splits, sm);
}

// Four elements of an operand from (r, k) on, along k or along r, for gemv_kernel and the
// tensor-core kernel's staging (cuda/gemm_tc.cuh): one 16-byte load when they are inside,
// contiguous and aligned, else element by element. kChecked false: the caller knows them
// inside and a float4 (Operand::float4_runs, a full slice).
struct SliceLoad {
  float v[4];

  template <bool kGrad, bool kChecked = true>
  __device__ __forceinline__ void load(const Operand& o, int64_t r, int64_t k, bool along_k) {
    const int64_t dr = along_k ? 0 : 1, dk = along_k ? 1 : 0;
    const int64_t contiguous_stride = along_k ? o.cs : o.rs;
    // unchecked, the contiguous stride is 1 (Operand::float4_runs)
    const int64_t off = !kChecked ? (along_k ? r * o.rs + k : r + k * o.cs) : r * o.rs + k * o.cs;
    const bool in_bounds = along_k ? (r < o.rows && k + 3 < o.depth) : (r + 3 < o.rows && k < o.depth);
    if (!kChecked || (in_bounds && contiguous_stride == 1 && (reinterpret_cast<uintptr_t>(o.base + off) & 15) == 0)) {
      const float4 q = *reinterpret_cast<const float4*>(o.base + off);
      v[0] = q.x;
      v[1] = q.y;
      v[2] = q.z;
      v[3] = q.w;
      return;
    }
    if constexpr (kChecked) {
      CUSTOMML_UNROLL
      for (int i = 0; i < 4; ++i) v[i] = o.at<kGrad>(r + i * dr, k + i * dk);
    }
  }
};

// Up to kGemvRows rows of C, or a few columns: a warp per column of a group of kGemvRows
// rows, lane q summing part q (parts order: at most kMaxParts = 32 parts), then every
// lane adding the lanes' sums in order through shuffles. A block's 8 warps take 8
// adjacent columns, so a row-major B's 32-byte sector of 8 columns is read once per block.
constexpr int kGemvRows = 4, kGemvThreads = 256, kGemvMaxColumns = 16;

// grid (the pair's warps / 8), block kGemvThreads; kGrad as gemm_kernel's. The backward
// asks for 4 blocks an SM (64 registers): left to itself, ptxas gives it 80 (3 blocks)
// since its store adds the penalty's gradient, for a loop some 10% shorter. 0: no minimum
// (the forward's 48-60 registers, as ptxas picks them).
template <bool kGrad>
__global__ void __launch_bounds__(kGemvThreads, kGrad ? 4 : 0) gemv_kernel(GemmPair pp) {
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
    double sq = 0.0;
    CUSTOMML_UNROLL
    for (int r = 0; r < kGemvRows; ++r) sq += store_c<kGrad>(p, row0 + r, col, total[r]);
    if (kGrad && p.sq) p.sq[local] = sq;
  }
}

}  // namespace customml::CUSTOMML_CUDA_NS
