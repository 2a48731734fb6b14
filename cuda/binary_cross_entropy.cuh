#pragma once
// Defines: binary_cross_entropy_with_logits_kernel: the loss, its gradient and the step's
// metric sums in one launch.

#include <cmath>
#include <cstdint>

#include "activation.h"
#include "cuda/common.cuh"
#include "cuda/loss_epilogue.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// logits, targets (rows, cols), row_weights (rows) or null -> grad (rows cols) or null, and
// g's results: the loss, the sum over the elements of w_i (max(z, 0) - z t +
// log1p(exp(-|z|))) divided by n = rows cols (unweighted, w_i = 1) or cols W (W = sum_i
// w_i, 0 when W is 0), the gradient (sigmoid(z) - t) / n or w_i (sigmoid(z) - t) / (cols W);
// with g.block_correct (one column), the rows where (z > 0) == (labels_i != 0) counted,
// with g.metrics.confusion (one column) each at [label_i, z > 0]. A
// grid of kReduceBlocks blocks striding over the elements, then the penalties' blocks;
// weighted, each block finds W itself; the last one adds the per-block sums in block order
// (cuda/loss_epilogue.cuh).
__global__ void __launch_bounds__(kThreads)
    binary_cross_entropy_with_logits_kernel(LossGrid g, float* grad, const float* logits, const float* targets,
                                            const int32_t* labels, const float* row_weights, int64_t rows,
                                            int64_t cols) {
  const int64_t n = rows * cols;
  const double total = row_weights ? batch_weight_total(nullptr, nullptr, row_weights, rows) : 0.0;
  const double divisor = row_weights ? total * static_cast<double>(cols) : static_cast<double>(n);
  const float inv_n = 1.0f / static_cast<float>(n);
  const double inv_total = row_weights && total > 0.0 ? 1.0 / (total * static_cast<double>(cols)) : 0.0;
  const ScaledGrad scaled(g.metrics, cols);
  double sum = 0.0;
  int64_t hits = 0;
  const bool loss_block = blockIdx.x < g.blocks;  // else a penalty block (finish_loss_grid)
  for (int64_t i = loss_block ? blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x : n; i < n;
       i += static_cast<int64_t>(g.blocks) * kThreads) {
    const float z = logits[i], t = targets[i];
    const double w = row_weights ? static_cast<double>(row_weights[i / cols]) : 1.0;
    sum += w * (static_cast<double>(z > 0.0f ? z : 0.0f) - static_cast<double>(z) * t +
                log1p(exp(-static_cast<double>(fabsf(z)))));
    if (grad) scaled.store(grad, i, (act::sigmoid(z) - t) * (row_weights ? static_cast<float>(w * inv_total) : inv_n));
    if (g.block_correct) hits += (z > 0.0f) == (labels[i] != 0);
    if (g.metrics.confusion) count_confusion(g.metrics.confusion, 1, labels[i], z > 0.0f);
  }
  sum = block_sum(sum);
  if (g.block_correct) hits = block_sum(hits);
  if (threadIdx.x == 0 && loss_block) g.row_loss[blockIdx.x] = sum;
  finish_loss_grid(g, divisor, g.blocks, hits);
}

}  // namespace customml::CUSTOMML_CUDA_NS
