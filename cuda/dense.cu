// Launchers of the dense layer: the tiled GEMM with its epilogue, and the backward pass
// as one launch of the weight- and input-gradient products together.

#include <algorithm>
#include <climits>
#include <mutex>
#include <stdexcept>
#include <string>

#include "cuda/dense.cuh"
#include "cuda/device_backend.h"
#include "cuda/gemm_tc.cuh"
#include "cuda/gemm_wgmma.cuh"

namespace customml::CUSTOMML_CUDA_NS {
namespace {
// The operands a bf16 / fp16 launch of count products copies from their 16-bit copies
// (kTcCopy*): B where every product's B has a copy cp.async can move, A too where every
// product's A has one as well (no instance copies A alone).
int half_copies(const GemmParams* ps, int count) {
  bool copy_b = true, copy_a = true;
  for (int i = 0; i < count; ++i) {
    copy_b = copy_b && copyable_16(ps[i].b16, ps[i].b16_cs, ps[i].b16_rs);
    copy_a = copy_a && copy_b && copyable_16(ps[i].a16, ps[i].a16_rs, ps[i].a16_cs);
  }
  return copy_a ? kTcCopyAB : copy_b ? kTcCopyB : kTcCopyNone;
}

// A bf16 / fp16 launch (T) takes the instance that copies what half_copies says.
template <class T, bool kGrad>
void launch_half(DeviceContext& ctx, const GemmPair& pp, dim3 grid) {
  const int copies = half_copies(pp.p, kGrad && pp.p[1].m > 0 ? 2 : 1);
  if (copies == kTcCopyAB)
    launch(gemm_tc_kernel<T, kGrad, kTcCopyAB>, grid, dim3(kTcThreads), 0, ctx.stream, pp);
  else if (copies == kTcCopyB)
    launch(gemm_tc_kernel<T, kGrad, kTcCopyB>, grid, dim3(kTcThreads), 0, ctx.stream, pp);
  else
    launch(gemm_tc_kernel<T, kGrad>, grid, dim3(kTcThreads), 0, ctx.stream, pp);
}

template <bool kGrad>
void launch_pair(DeviceContext& ctx, const GemmPair& pp, unsigned blocks, Precision precision, bool gemv) {
  const dim3 grid(blocks);
  switch (precision) {
    case Precision::fp32:
      if (gemv)
        launch(gemv_kernel<kGrad>, grid, dim3(kGemvThreads), 0, ctx.stream, pp);
      else
        launch(gemm_kernel<kGrad>, grid, dim3(kGemmThreads), 0, ctx.stream, pp);
      break;
    case Precision::tf32:
      launch(gemm_tc_kernel<nvcuda::wmma::precision::tf32, kGrad>, grid, dim3(kTcThreads), 0, ctx.stream, pp);
      break;
    case Precision::bf16: launch_half<__nv_bfloat16, kGrad>(ctx, pp, grid); break;
    case Precision::fp16: launch_half<__half, kGrad>(ctx, pp, grid); break;
  }
}

// The forward pass's GEMMs (grad false) take the kernels compiled without the backward
// extras or a second problem, which would cost them registers (occupancy) and code in the
// main loop.
void launch_pair(DeviceContext& ctx, const GemmPair& pp, unsigned blocks, Precision precision, bool grad,
                 bool gemv = false) {
  if (grad)
    launch_pair<true>(ctx, pp, blocks, precision, gemv);
  else
    launch_pair<false>(ctx, pp, blocks, precision, gemv);
}

// C's rows, db's included.
int64_t rows_of(const GemmParams& p) { return p.m + (p.db ? 1 : 0); }

// Split-K runs when a launch's tiles would leave SMs idle: fewer than kCoverBlocks (an
// H100 SXM's 132 SMs) and at most kMaxPartialTiles parts' tiles in all (the workspace,
// 8 MiB, allocated once, so that a recorded graph's pointer stays valid). Whether a GEMM
// is split does not change its result (the parts order), so neither constant is a
// numerical choice.
constexpr int64_t kCoverBlocks = 132, kMaxPartialTiles = 512;

// The split-K workspace, allocated at its first use: partial tiles, then one arrival
// counter per tile, zeroed once (the last block of each tile resets its counter). The
// caller holds scratch_mutex until its launch is queued (the emulator runs it then: host
// threads predicting at once would share the workspace).
void split_workspace(DeviceContext& ctx, float** partials, unsigned** counters) {
  if (!ctx.gemm_partials.data()) {
    ctx.gemm_partials.reserve(static_cast<size_t>(kMaxPartialTiles) * kGemmBm * kGemmBn);
    ctx.gemm_counters.reserve(kCoverBlocks);
    ctx.memory->fill_zero(ctx.gemm_counters.data(), kCoverBlocks * sizeof(unsigned));
  }
  *partials = ctx.gemm_partials.data();
  *counters = ctx.gemm_counters.data();
}

// A product's warps in gemv_kernel (one per column of each kGemvRows rows), and whether it
// takes the products: all of at most kGemvRows rows or kGemvMaxColumns columns, in at most
// INT_MAX blocks.
int64_t gemv_warps(const GemmParams& p) { return p.n * ((rows_of(p) + kGemvRows - 1) / kGemvRows); }
bool gemv_fits(const GemmParams* ps, int count) {
  int64_t warps = 0;
  for (int i = 0; i < count; ++i) {
    if (rows_of(ps[i]) > kGemvRows && ps[i].n > kGemvMaxColumns) return false;
    warps += gemv_warps(ps[i]);
  }
  return (warps + kGemvThreads / 32 - 1) / (kGemvThreads / 32) <= INT_MAX;
}

// How a launch tiles its problems' C: tiles of rows x cols, tiles_n across each C and tiles
// in all, split (a block per part of each tile) or not, and its blocks.
struct Tiling {
  int64_t rows, cols, tiles_n[2], tiles[2];
  bool split;
  int64_t blocks;
};
Tiling tiling_of(const GemmParams* ps, int count, const int64_t (&parts)[2], int64_t rows, int64_t cols) {
  Tiling t{rows, cols, {0, 0}, {0, 0}, false, 0};
  for (int i = 0; i < count; ++i) {
    t.tiles_n[i] = exact_blocks(ps[i].n, static_cast<int>(cols));
    t.tiles[i] = t.tiles_n[i] * ((rows_of(ps[i]) + rows - 1) / rows);
  }
  t.split = t.tiles[0] + t.tiles[1] < kCoverBlocks &&
            t.tiles[0] * parts[0] + t.tiles[1] * parts[1] <= kMaxPartialTiles && (parts[0] > 1 || parts[1] > 1);
  t.blocks = t.split ? t.tiles[0] * parts[0] + t.tiles[1] * parts[1] : t.tiles[0] + t.tiles[1];
  return t;
}

// 64 x 64 tiles, unless their blocks (split or not) leave SMs idle: then the smaller split
// tiling (rows 32 or 16: the tensor cores' m16; columns 32, 16 or 8: their n8) with the
// fewest blocks that cover the SMs, or if none does the most blocks. Split only: a split
// block does one part, whose time (a slice or two's latency, then the final sum, smaller
// with the tile) its redundant products hardly change; an unsplit one of single-part problems
// (k <= 16) issues its loop's instructions once per block, so that blocks sharing an SM cost
// more than the idle SMs (the estimate: the batch-1 dW 785 x 256, 200 blocks of 32 x 32
// against 52 of 64 x 64: 0.9 us against 0.5).
Tiling choose_tiling(const GemmParams* ps, int count, const int64_t (&parts)[2]) {
  Tiling best = tiling_of(ps, count, parts, kGemmBm, kGemmBn);
  if (best.blocks >= kCoverBlocks) return best;
  for (const int64_t rows : {64, 32, 16})
    for (const int64_t cols : {64, 32, 16, 8}) {
      const Tiling t = tiling_of(ps, count, parts, rows, cols);
      if (!t.split) continue;
      const bool covers = t.blocks >= kCoverBlocks, best_covers = best.blocks >= kCoverBlocks;
      if (covers ? !best_covers || t.blocks < best.blocks : !best_covers && t.blocks > best.blocks) best = t;
    }
  return best;
}

// The slots of problem 0's sums of squares (GemmParams::sq) that gemm() fills: a float32
// GEMV's warps, else the tiles of choose_tiling (both sm_80 kernels tile C alike; the wgmma
// kernel's fewer tiles fill the first slots and zero the rest: the count is the shape's).
int64_t sq_slots(const GemmParams* ps, int count, Precision precision) {
  if (precision == Precision::fp32 && gemv_fits(ps, count)) return gemv_warps(ps[0]);
  int64_t parts[2] = {1, 1};
  for (int i = 0; i < count; ++i) parts[i] = (ps[i].k + part_depth_of(ps[i].k) - 1) / part_depth_of(ps[i].k);
  return choose_tiling(ps, count, parts).tiles[0];
}

// Up to two float32 products, all of at most kGemvRows rows or kGemvMaxColumns columns,
// through gemv_kernel: true if it took them.
bool gemv(DeviceContext& ctx, const GemmParams* ps, int count, bool grad) {
  if (!gemv_fits(ps, count)) return false;
  int64_t warps[2] = {0, 0};
  for (int i = 0; i < count; ++i) warps[i] = gemv_warps(ps[i]);
  // at least one block and one column per row group (a launch of none is an error)
  const int64_t blocks = std::max<int64_t>(1, (warps[0] + warps[1] + kGemvThreads / 32 - 1) / (kGemvThreads / 32));
  GemmPair pp{};
  pp.p[0] = ps[0];
  if (count > 1) pp.p[1] = ps[1];
  pp.blocks0 = static_cast<unsigned>(warps[0]);
  for (int i = 0; i < 2; ++i) pp.tiles_n[i] = static_cast<unsigned>(i < count ? std::max<int64_t>(ps[i].n, 1) : 1);
  launch_pair(ctx, pp, static_cast<unsigned>(blocks), Precision::fp32, grad, true);
  return true;
}

// One or two GEMMs (count), each over a 1-D grid of its tiles: both in one launch when
// their tiles fit in gridDim.x (2^31 - 1 blocks: every realistic shape), else each in
// chunks of rows that do, db's row with the last chunk. Few tiles are split along k (both
// kernels: they sum in the parts order, split or not); float32 products of a few rows or
// columns take gemv_kernel. grad: dense_backward's products (the kernels with its extras).
void gemm(DeviceContext& ctx, GemmParams* ps, int count, Precision precision, bool grad = false) {
  static_assert(kGemmBm == kTcBm && kGemmBn == kTcBn, "both GEMMs tile C alike");
  for (int i = 0; i < count; ++i) ps[i].part_depth = part_depth_of(ps[i].k);
  if (!grad && count == 1 && wgmma_path(ctx, ps[0], precision)) {
    if (precision == Precision::bf16)
      launch_wgmma<__nv_bfloat16, false>(ps, ctx.stream);
    else
      launch_wgmma<__half, false>(ps, ctx.stream);
    return;
  }
  GemmParams pair[2];
  if (grad && wgmma_backward(ctx, ps, count, precision, pair)) {
    if (precision == Precision::bf16)
      launch_wgmma<__nv_bfloat16, true>(pair, ctx.stream, ps[0].sq ? sq_slots(ps, count, precision) : 0);
    else
      launch_wgmma<__half, true>(pair, ctx.stream, ps[0].sq ? sq_slots(ps, count, precision) : 0);
    return;
  }
  if (precision == Precision::fp32 && gemv(ctx, ps, count, grad)) return;
  for (int i = 0; i < count; ++i)
    if (precision == Precision::fp32 && ps[i].k > kGemmMaxK)
      throw std::invalid_argument(
          "dense layer on CUDA: the float32 GEMM's reduction length (the batch, for the weight "
          "gradient) is " +
          std::to_string(ps[i].k) + ", over its limit of 2^30");
  int64_t parts[2] = {1, 1};
  for (int i = 0; i < count; ++i) parts[i] = (ps[i].k + ps[i].part_depth - 1) / ps[i].part_depth;
  const Tiling tiling = choose_tiling(ps, count, parts);
  const int64_t *tiles_n = tiling.tiles_n, *tiles = tiling.tiles;
  const bool split = tiling.split;
  std::unique_lock<std::mutex> lock(ctx.scratch_mutex, std::defer_lock);
  if (split) {
    lock.lock();
    float* partials = nullptr;
    unsigned* counters = nullptr;
    split_workspace(ctx, &partials, &counters);
    ps[0].partials = partials;
    ps[0].counters = counters;
    if (count > 1) {
      ps[1].partials = partials + tiles[0] * parts[0] * kGemmBm * kGemmBn;
      ps[1].counters = counters + tiles[0];
    }
  }
  const int64_t blocks[2] = {tiles[0] * (split ? parts[0] : 1), tiles[1] * (split ? parts[1] : 1)};
  if (blocks[0] + blocks[1] <= INT_MAX) {
    GemmPair pp{};
    pp.p[0] = ps[0];
    if (count > 1) pp.p[1] = ps[1];
    pp.blocks0 = static_cast<unsigned>(blocks[0]);
    for (int i = 0; i < 2; ++i) {
      pp.tiles_n[i] = static_cast<unsigned>(i < count ? tiles_n[i] : 1);
      pp.splits[i] = static_cast<unsigned>(split && i < count ? parts[i] : 1);
    }
    pp.tile_rows = static_cast<unsigned>(tiling.rows);
    pp.tile_cols = static_cast<unsigned>(tiling.cols);
    launch_pair(ctx, pp, static_cast<unsigned>(blocks[0] + blocks[1]), precision, grad);
    return;
  }
  for (int i = 0; i < count; ++i) {
    const GemmParams& p = ps[i];
    const int64_t chunk = (INT_MAX / tiles_n[i]) * kGemmBm;
    for (int64_t r0 = 0; r0 < rows_of(p); r0 += chunk) {
      GemmPair pp{};
      GemmParams& part = pp.p[0];
      part = p;
      const bool last = rows_of(p) - r0 <= chunk;
      part.m = last ? p.m - r0 : chunk;
      if (!last) part.db = nullptr;
      part.a = p.a + r0 * p.a_rs;
      if (p.a16) part.a16 = p.a16 + r0 * p.a16_rs;
      if (p.c16) part.c16 = p.c16 + r0 * p.ldc16;
      part.c = p.c + r0 * p.ldc;
      if (p.sq) part.sq = p.sq + (r0 / kGemmBm) * tiles_n[i];  // the whole C's tile indices
      if (p.preact) part.preact = p.preact + r0 * p.ldc;
      if (p.penalty_w) part.penalty_w = p.penalty_w + r0 * p.ldc;
      if (p.dropout.out) {  // the mask's elements are counted from the whole C's first
        part.dropout.out = p.dropout.out + r0 * p.ldc;
        part.dropout.first += static_cast<uint64_t>(r0 * p.ldc);
      }
      if (p.grad_y) part.grad_y = p.grad_y + r0 * p.ldc;
      if (p.grad_z) part.grad_z = p.grad_z + r0 * p.ldc;
      pp.blocks0 = static_cast<unsigned>(tiles_n[i] * ((rows_of(part) + kGemmBm - 1) / kGemmBm));
      pp.tiles_n[0] = pp.tiles_n[1] = static_cast<unsigned>(tiles_n[i]);
      launch_pair(ctx, pp, pp.blocks0, precision, grad);
    }
  }
}

// dense_forward's product.
GemmParams forward_params(float* y, float* z, const float* x, const float* w, const float* b, const DenseShape& s,
                          Activation act) {
  GemmParams p{s.batch, s.out, s.in, x, s.in, 1, w, s.out, 1, y, s.out, b, act, z};
  p.dropout = s.dropout;
  if (half_operands(s.precision)) {
    p.a16 = s.half.x;
    p.a16_rs = half_ld(s.in);
    p.a16_cs = 1;
    p.b16 = s.half.w;
    p.b16_rs = half_ld(s.out);
    p.b16_cs = 1;
    p.c16 = s.half.y;
    p.ldc16 = half_ld(s.out);
    p.bf16 = s.precision == Precision::bf16;
  }
  return p;
}

}  // namespace

void DeviceBackend::round_to_half(uint16_t* dst, const float* src, int64_t n, int64_t cols, int64_t ld,
                                  Precision format) {
  DeviceContext& ctx = this->ctx();
  if (n > 0)
    launch(round_to_half_kernel, dim3(grid_stride_blocks(n, kThreads)), dim3(kThreads), 0, ctx.stream, dst, src, n,
           cols, ld, format == Precision::bf16);
}

// x: (batch, in)  w: (in, out)  b: (out) -> y: (batch, out), z: (batch, out) optional
void DeviceBackend::dense_forward(float* y, float* z, const float* x, const float* w, const float* b, DenseShape s,
                                  Activation act) {
  DeviceContext& ctx = this->ctx();
  if (s.batch == 0) return;
  GemmParams p = forward_params(y, z, x, w, b, s, act);
  gemm(ctx, &p, 1, s.precision);
}

namespace {
// dense_backward's products (ps[0] dW when dw is given, then dx), reading dz as it is (dy;
// dz16 its 16-bit copy or null): how many.
int backward_params(GemmParams (&ps)[2], float* dx, float* dw, float* db, const float* dy, const uint16_t* dz16,
                    const float* x, const float* w, const DenseShape& s) {
  const bool half = half_operands(s.precision);
  int count = 0;
  if (dw) {
    // dw (in, out) = x^T (in, batch) . dz (batch, out), db (out) its row of ones; with
    // batch 0, the bias-free epilogue writes zeros
    GemmParams& p = ps[count++];
    p = {s.in, s.out, s.batch, x, 1, s.in, dy, s.out, 1, dw, s.out, nullptr, Activation::identity, nullptr};
    p.db = db;
    p.penalty_w = s.penalty.w;
    p.l1 = s.penalty.l1;
    p.l2 = s.penalty.l2;
    if (half) {
      p.a16 = s.half.x;
      p.a16_rs = 1;
      p.a16_cs = half_ld(s.in);
      p.b16 = dz16;
      p.b16_rs = half_ld(s.out);
      p.b16_cs = 1;
    }
  }
  // dx (batch, in) = dz (batch, out) . w^T (out, in)
  if (dx && s.batch > 0) {
    GemmParams& p = ps[count++];
    p = {s.batch, s.in, s.out, dy, s.out, 1, w, 1, s.out, dx, s.in, nullptr, Activation::identity, nullptr};
    if (s.dropout.out) {  // the Dropout layer below: dx through its mask
      p.dropout = s.dropout;
      p.dropout.out = dx;
    }
    p.grad_act = s.below.act;
    p.grad_y = s.below.y;
    p.grad_z = activation_needs_preact(s.below.act) ? s.below.z : nullptr;
    if (half) {
      p.a16 = dz16;
      p.a16_rs = half_ld(s.out);
      p.a16_cs = 1;
      p.b16 = s.half.w;
      p.b16_rs = 1;
      p.b16_cs = half_ld(s.out);
      p.c16 = s.below.dz16;
      p.ldc16 = half_ld(s.in);
    }
  }
  for (int i = 0; i < count; ++i) ps[i].bf16 = s.precision == Precision::bf16;
  return count;
}
}  // namespace

// dy, y, z: (batch, out)  x: (batch, in)  w: (in, out) -> dx (batch, in), dw (in, out), db (out);
// dx, or dw and db together (a frozen layer), may be null and are then skipped. The
// products read dz as it is: dy itself where act is identity (the layer above's dx store
// applied this layer's derivative: DenseShape::below; the loss, the top layer's:
// LossMetrics::top), else dz = act'(dy; y, z) written first (one elementwise launch: the
// op's, and a top layer's where the gradient changed after the loss). dx's store applies the layer
// below's derivative (s.below) after the Dropout's mask (s.dropout), and writes dz16. With
// s.norm_slots, dW's tiles leave their sums of squares there; with s.penalty, dW's store
// adds the penalty's gradient first.
void DeviceBackend::dense_backward(float* dx, float* dw, float* db, float* dz, const float* dy, const float* x,
                                   const float* w, const float* y, const float* z, DenseShape s, Activation act) {
  DeviceContext& ctx = this->ctx();
  const int64_t n = s.batch * s.out;
  const uint16_t* dz16 = half_operands(s.precision) && act == Activation::identity ? s.half.dy : nullptr;
  if (act != Activation::identity && n > 0) {
    launch(activation_backward_kernel, dim3(grid_stride_blocks(n, kThreads)), dim3(kThreads), 0, ctx.stream, dz, dy, y,
           activation_needs_preact(act) ? z : nullptr, n, act);
    dy = dz;
  }
  GemmParams ps[2];
  const int count = backward_params(ps, dx, dw, db, dy, dz16, x, w, s);
  if (!count) return;
  if (dw) ps[0].sq = s.norm_slots;
  gemm(ctx, ps, count, s.precision, true);
}

int64_t DeviceBackend::dense_norm_slots(const DenseShape& s, bool dx) const {
  float shape_only = 0.0f;  // stands for every buffer: only the products' shapes are read
  GemmParams ps[2];
  float* none = &shape_only;
  const int count = backward_params(ps, dx ? none : nullptr, none, none, none, nullptr, none, none, s);
  return sq_slots(ps, count, s.precision);
}

// What half_copies says the launches copy (the wgmma kernel, forward or backward, reads
// only 16-bit copies, and takes a product only where both pointers are given: the trainer
// gives those this answers for, so it never reads a copy left unwritten).
HalfReads DeviceBackend::dense_half_reads(const DenseShape& s, bool backward, bool dw, bool dx) const {
  if (!half_operands(s.precision)) return {};
  float shape_only = 0.0f;  // stands for every float buffer: only the products' layout is read
  float* none = &shape_only;
  GemmParams ps[2];
  DenseShape one = s;
  one.batch = 1;  // a batch for dx's product: the copies' layout does not depend on it
  int count = 1;
  if (!backward)
    ps[0] = forward_params(none, nullptr, none, none, none, one, Activation::identity);
  else
    count = backward_params(ps, dx ? none : nullptr, dw ? none : nullptr, none, none, s.half.dy, none, none, one);
  if (!count) return {};
  const int copies = half_copies(ps, count);
  // A: the input (forward, dW's x^T) or dz (dx's); B: the twin, or dz (dW's)
  return {copies == kTcCopyAB && (!backward || dw), backward && (dw ? copies != kTcCopyNone : copies == kTcCopyAB)};
}

}  // namespace customml::CUSTOMML_CUDA_NS
