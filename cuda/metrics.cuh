#pragma once
// Defines: count_correct_kernel, confusion_matrix_update_kernel and
// regression_stats_update_kernel, the metrics' per-batch statistics (as cpu/metrics.cpp).

#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/loss_epilogue.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// logits (batch, classes), labels (batch) -> correct (gridDim.x): rows per block whose
// first maximal logit is the label (one column: (logit > 0) == (label != 0)).
__global__ void __launch_bounds__(kThreads)
    count_correct_kernel(int64_t* correct, const float* logits, const int32_t* labels, int64_t batch, int64_t classes) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t row_index = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  int64_t hit = 0;
  if (row_index < batch) {
    // labels are 0 / 1 with a single logit (ops.cpp checks), so this is the one rule
    hit = warp_predicted_class(logits + row_index * classes, classes, lane) == labels[row_index];
  }
  const int64_t sum = block_warp_hits(hit);
  if (threadIdx.x == 0) correct[blockIdx.x] = sum;
}

// logits (batch, k), labels (batch) -> counts (classes, classes) += 1 at [label,
// prediction]; prediction: first maximal logit, or logit > 0 when k == 1 (classes = 2).
// A warp per row, kWarps rows per block (count_confusion: integer atomics).
__global__ void __launch_bounds__(kThreads)
    confusion_matrix_update_kernel(int64_t* counts, const float* logits, const int32_t* labels, int64_t batch,
                                   int64_t k) {
  const int lane = threadIdx.x % 32;
  const int64_t row_index = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row_index >= batch) return;
  const int64_t pred = warp_predicted_class(logits + row_index * k, k, lane);
  if (lane == 0) count_confusion(counts, k, labels[row_index], pred);
}

// pred, target (batch, outputs), shift (outputs) -> stats (4, outputs) += per column the
// sums of add_regression_column, one thread per column.
__global__ void __launch_bounds__(kThreads)
    regression_stats_update_kernel(double* stats, const float* pred, const float* target, const double* shift,
                                   int64_t batch, int64_t outputs) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (j < outputs) add_regression_column(stats, pred, target, shift, batch, outputs, j);
}

}  // namespace customml::CUSTOMML_CUDA_NS
