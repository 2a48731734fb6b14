#pragma once
// Defines: the device functions (no kernels, so any launcher file may include this) that a
// loss kernel finishes a whole training step's loss with in its own launch: the batch's
// total weight, the fixed-order sum of per-row terms, the metrics' per-row statistics
// (correct count, confusion matrix, regression sums) and the grid's last block folding the
// batch's loss and correct count into the epoch's metrics (LossMetrics). The separate
// kernels they replace (loss_weight_total_kernel, sum_partials_kernel) call the same
// functions, so either path gives the same bits.

#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/device_context.h"
#include "cuda/half_bits.cuh"
#include "cuda/penalty.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// labels (batch) (read only with class weights), class_weights (classes) or null,
// row_weights (batch) or null -> W = sum_i class_weights[label_i] row_weights[i], a
// missing factor being 1, in every thread of the block. Strided per thread, then
// block_sum: a fixed order. Unweighted, W = batch (exact: a sum of ones below 2^53).
__device__ __forceinline__ double batch_weight_total(const int32_t* labels, const float* class_weights,
                                                     const float* row_weights, int64_t batch) {
  if (!class_weights && !row_weights) return static_cast<double>(batch);
  __shared__ double total;
  CUSTOMML_POISON_SHARED(total);
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < batch; i += kThreads)
    sum += (class_weights ? static_cast<double>(class_weights[labels[i]]) : 1.0) *
           (row_weights ? static_cast<double>(row_weights[i]) : 1.0);
  sum = block_sum(sum);
  if (threadIdx.x == 0) total = sum;
  __syncthreads();
  return total;
}

// terms [0, count) -> their sum, valid in thread 0 of a kThreads block. Each thread adds
// a contiguous slice in order, then thread 0 adds the slices in order: deterministic,
// and with at most kThreads terms the plain left-to-right sum. Volatile reads: the terms
// may come from other blocks of the same grid (see finish_loss_grid).
__device__ __forceinline__ double ordered_sum(const volatile double* terms, int64_t count) {
  __shared__ double slices[kThreads];
  CUSTOMML_POISON_SHARED(slices);
  const int64_t per = (count + kThreads - 1) / kThreads;
  const int64_t begin = threadIdx.x * per;
  double sum = 0.0;
  for (int64_t i = begin; i < begin + per && i < count; ++i) sum += terms[i];
  slices[threadIdx.x] = sum;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0)
    for (int t = 0; t < kThreads; ++t) total += slices[t];
  __syncthreads();  // slices may be reused by the next call
  return total;
}

// partial (count, blocks): each term's block sums -> start + the terms' sums in order, each
// its blocks' sums in block order (ordered_sum), valid in thread 0. Every thread calls it.
__device__ __forceinline__ double penalties_total(const double* partial, int count, int64_t blocks, double start) {
  double penalty = start;
  for (int k = 0; k < count; ++k) penalty += ordered_sum(partial + k * blocks, blocks);
  return penalty;
}

// A gradient element as a one-launch loss writes it: v times the scale (fp16's loss scale,
// LossMetrics::grad_scale; 1 without one, which changes no value) in double and rounded,
// scale_by_kernel's arithmetic, then the top Dense layer's activation derivative
// (LossMetrics::top: act'(g; y, z), activation_backward_kernel's expression, so that layer's
// backward reads a ready dz; identity changes no value) and dz's 16-bit copy where asked.
// The scale is read once per thread, before the loop, and multiplied by unconditionally: a
// conditional product per element made mse_kernel spill. The gradient is (rows, cols), dz16's
// rows half_ld(cols) apart (backend.h: its pads are not written; the GEMMs read none). row:
// the row kernels' row, whose grad pointer store is given (i a column); -1: i the element
// index (a flat kernel's).
struct ScaledGrad {
  double scale;
  DerivativeBelow top;
  bool bf16;
  int64_t cols, pad;  // pad: dz16's per row (a flat kernel's; 0 in a row kernel's)
  __device__ __forceinline__ ScaledGrad(const LossMetrics& m, int64_t cols_, int64_t row = -1)
      : scale(m.grad_scale ? *m.grad_scale : 1.0),
        top(m.top),
        bf16(m.top_bf16),
        cols(cols_),
        pad(row < 0 ? half_ld(cols_) - cols_ : 0) {
    if (row < 0) return;
    if (top.y) top.y += row * cols;
    if (top.z) top.z += row * cols;
    if (top.dz16) top.dz16 += row * half_ld(cols);
  }
  // grad[i] = v as the step's backward reads it.
  __device__ __forceinline__ void store(float* grad, int64_t i, float v) const {
    const float dz =
        act::backward(top.act, static_cast<float>(v * scale), top.y ? top.y[i] : 0.0f, top.z ? top.z[i] : 0.0f);
    grad[i] = dz;
    if (top.dz16) top.dz16[pad ? i + i / cols * pad : i] = half_bits(dz, bf16);
  }
};

// Where a one-launch loss leaves its results: row_loss (batch) and block_correct
// (blocks) are scratch the grid's last block reads; ticket (1) counts the blocks that
// are done and is 0 between launches (the last block puts it back, so a recorded graph
// replays too).
struct LossGrid {
  double* row_loss = nullptr;
  int64_t* block_correct = nullptr;  // null: no correct count
  unsigned* ticket = nullptr;
  double* loss = nullptr;  // (1): the batch's weighted mean loss
  LossMetrics metrics;
  // The loss's blocks; after them come kReduceBlocks blocks per penalty term, which sum the
  // kernel penalties (LossMetrics::penalties) as kernel_penalties_kernel's grid does.
  unsigned blocks = 0;
  int penalty_count = 0;
  PenaltyTerm penalties[kPenaltyTerms];  // grad null: the update adds the gradients
  double* penalty_partial = nullptr;     // (penalty_count, kReduceBlocks)
};

// A loss launch's LossGrid (callers hold ctx.scratch_mutex): `terms` row (or block) losses,
// a correct count per block of `blocks` when m counts, the grid's ticket, and m's penalties
// when the kernel sums them (`penalties`; at most kPenaltyTerms, which folded_penalties says).
inline LossGrid loss_grid(DeviceContext& ctx, double* loss, size_t terms, unsigned blocks, const LossMetrics& m,
                          bool penalties = true) {
  LossGrid g;
  const int count = penalties ? static_cast<int>(m.penalty_count) : 0;
  g.row_loss = ctx.partials.reserve(terms + static_cast<size_t>(count) * kReduceBlocks);
  g.block_correct = m.correct ? ctx.counts.reserve(blocks) : nullptr;
  g.ticket = ctx.grid_ticket();
  g.loss = loss;
  g.metrics = m;
  g.blocks = blocks;
  g.penalty_count = count;
  for (int k = 0; k < count; ++k)
    g.penalties[k] = {nullptr, m.penalties[k].param, m.penalties[k].n, m.penalties[k].l1, m.penalties[k].l2};
  g.penalty_partial = g.row_loss + terms;
  return g;
}

// The blocks a loss launch takes: the loss's and the penalties'.
inline unsigned loss_launch_blocks(const LossGrid& g) {
  return g.blocks + static_cast<unsigned>(g.penalty_count) * kReduceBlocks;
}

// A row classified as `predicted` with label y -> counts (k', k') += 1 at [y, predicted],
// k' = classes (2 for one column). Integer atomics: exact sums in any row order, so
// deterministic (confusion_matrix_update_kernel and the loss kernels count alike).
__device__ __forceinline__ void count_confusion(int64_t* counts, int64_t classes, int32_t y, int64_t predicted) {
  const int64_t k = classes == 1 ? 2 : classes;
  atomicAdd(reinterpret_cast<unsigned long long*>(counts + y * k + predicted), 1ull);
}

// A warp-per-row loss kernel's row statistics: in lane 0, 1 when the row's predicted class
// (warp_predicted_class) is its label labels[i], else 0 (0 when nothing counts), and the row
// counted in g.metrics.confusion when set. labels is read only then (it may be null
// otherwise). Every lane of the warp calls it.
__device__ __forceinline__ int64_t warp_row_hit(const LossGrid& g, const float* row, int64_t classes,
                                                const int32_t* labels, int64_t i, int lane) {
  if (!g.block_correct && !g.metrics.confusion) return 0;
  const int32_t y = labels[i];
  const int64_t predicted = warp_predicted_class(row, classes, lane);
  if (g.metrics.confusion && lane == 0) count_confusion(g.metrics.confusion, classes, y, predicted);
  return predicted == y;
}

// pred, target (batch, outputs), shift (outputs) -> stats (4, outputs) += for column j
// [sum |e|, sum e^2, sum d, sum d^2], e = pred - target, d = target - shift in float64, the
// rows added in order onto the sums so far: the CPU's loop, bit for bit (the regression
// metrics' statistics; one thread per column, as the bias gradient's column sums).
__device__ __forceinline__ void add_regression_column(double* stats, const float* pred, const float* target,
                                                      const double* shift, int64_t batch, int64_t outputs, int64_t j) {
  double abs_err = stats[j], sq_err = stats[outputs + j], sum_y = stats[2 * outputs + j],
         sum_y2 = stats[3 * outputs + j];
  const double s = shift[j];
  const float *p = pred + j, *t = target + j;
  for (int64_t i = 0; i < batch; ++i, p += outputs, t += outputs) {
    const double y = *t;
    const double e = static_cast<double>(*p) - y;
    const double d = y - s;
    abs_err += fabs(e);
    sq_err += e * e;
    sum_y += d;
    sum_y2 += d * d;
  }
  stats[j] = abs_err;
  stats[outputs + j] = sq_err;
  stats[2 * outputs + j] = sum_y;
  stats[3 * outputs + j] = sum_y2;
}

// Called by every thread of every block once the block's row losses are written (and,
// counting, hits holds in thread 0 the block's rows classified right). The last block
// to finish (a ticket taken after a fence, so every other block's writes are visible to
// it) sums the row losses in row order, divides by total (0 when total is not positive),
// and adds to the metrics: the separate kernels' arithmetic, in one launch.
// The blocks after the loss's (g.blocks) sum the penalties instead: block y kReduceBlocks
// + x takes term y's share x (penalty_block_sum), and the last block adds them after the
// loss (penalties_total), so the loss sum gets the loss, then the penalty: the bits of the
// loss launch followed by kernel_penalties_kernel's.
__device__ __forceinline__ void finish_loss_grid(const LossGrid& g, double total, int64_t batch, int64_t hits) {
  __shared__ unsigned last;
  CUSTOMML_POISON_SHARED(last);
  if (blockIdx.x >= g.blocks) {
    const unsigned b = blockIdx.x - g.blocks;
    // One copy of the loop per term, each reading its term's parameters in place: a term
    // chosen first (penalty_term) stays live across the loss's code and made ptxas spill.
    const int y = static_cast<int>(b / kReduceBlocks);
    double sum = 0.0;
    CUSTOMML_UNROLL
    for (int k = 0; k < kPenaltyTerms; ++k)
      if (k == y) sum = penalty_block_sum(g.penalties[k], b % kReduceBlocks, kReduceBlocks);
    if (threadIdx.x == 0) g.penalty_partial[b] = sum;
  } else if (threadIdx.x == 0 && g.block_correct) {
    g.block_correct[blockIdx.x] = hits;
  }
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(g.ticket, 1u) == gridDim.x - 1 ? 1u : 0u;
  __syncthreads();
  if (last == 0u) return;
  __threadfence();
  const double sum = ordered_sum(g.row_loss, batch);
  int64_t correct = 0;
  if (g.block_correct) {
    const volatile int64_t* counts = g.block_correct;
    for (int64_t b = threadIdx.x; b < g.blocks; b += kThreads) correct += counts[b];
    correct = block_sum(correct);
  }
  if (threadIdx.x == 0) {
    const double loss = total > 0.0 ? sum / total : 0.0;
    *g.loss = loss;
    if (g.metrics.loss_sum) *g.metrics.loss_sum += loss * g.metrics.loss_rows;
    if (g.metrics.correct) *g.metrics.correct += correct;
  }
  if (g.penalty_count > 0) {  // after the loss is added, and with nothing of it live
    const double penalty = penalties_total(g.penalty_partial, g.penalty_count, kReduceBlocks, 0.0);
    if (threadIdx.x == 0) {
      *g.metrics.penalty = penalty;
      if (g.metrics.loss_sum) *g.metrics.loss_sum += penalty * g.metrics.penalty_weight;
    }
  }
  if (threadIdx.x == 0) *g.ticket = 0u;
}

}  // namespace customml::CUSTOMML_CUDA_NS
