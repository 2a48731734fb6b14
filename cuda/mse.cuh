#pragma once
// Defines: mse_kernel: the loss, its gradient, the step's loss sum and the regression
// metrics' sums in one launch.

#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/loss_epilogue.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// pred, target (rows, cols), row_weights (rows) or null -> grad (rows cols) or null, and
// g's results: the loss, the sum of w_i (pred - target)^2 divided by n = rows cols
// (unweighted) or cols W (W = sum_i w_i, 0 when W is 0), the gradient 2 (pred - target) / n
// or 2 w_i (pred - target) / (cols W), and with g.metrics.regression the regression
// metrics' sums (a thread per column, add_regression_column). As
// binary_cross_entropy_with_logits_kernel: a grid of kReduceBlocks blocks, the last one
// finishing (cuda/loss_epilogue.cuh).
__global__ void __launch_bounds__(kThreads) mse_kernel(LossGrid g, float* grad, const float* pred, const float* target,
                                                       const float* row_weights, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  const double total = row_weights ? batch_weight_total(nullptr, nullptr, row_weights, rows) : 0.0;
  const float scale = 2.0f / static_cast<float>(n);
  const double inv_total = row_weights && total > 0.0 ? 2.0 / (total * static_cast<double>(cols)) : 0.0;
  const ScaledGrad scaled(g.metrics, cols);
  const bool loss_block = blockIdx.x < g.blocks;  // else a penalty block (finish_loss_grid)
  const int64_t stride = static_cast<int64_t>(g.blocks) * kThreads;
  // The regression sums first: after the loss loop, its live values made ptxas spill.
  if (g.metrics.regression)
    for (int64_t j = loss_block ? blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x : cols; j < cols;
         j += stride)
      add_regression_column(g.metrics.regression, pred, target, g.metrics.regression_shift, rows, cols, j);
  double sum = 0.0;
  for (int64_t i = loss_block ? blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x : n; i < n; i += stride) {
    const float d = pred[i] - target[i];
    const double w = row_weights ? static_cast<double>(row_weights[i / cols]) : 1.0;
    sum += w * (static_cast<double>(d) * d);
    if (grad) scaled.store(grad, i, (row_weights ? static_cast<float>(w * inv_total) : scale) * d);
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0 && loss_block) g.row_loss[blockIdx.x] = sum;
  finish_loss_grid(g, row_weights ? total * static_cast<double>(cols) : static_cast<double>(n), g.blocks, 0);
}

}  // namespace customml::CUSTOMML_CUDA_NS
