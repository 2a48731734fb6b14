// Launchers of binary cross-entropy with logits: one launch for the loss, its gradient and
// the step's metric sums (cuda/loss_epilogue.cuh).

#include "cuda/binary_cross_entropy.cuh"
#include "cuda/device_backend.h"

namespace customml::CUSTOMML_CUDA_NS {

void DeviceBackend::binary_cross_entropy_with_logits(float* grad, double* loss, const float* logits,
                                                     const float* targets, const float* row_weights, int64_t rows,
                                                     int64_t cols) {
  binary_cross_entropy_with_logits_metrics(grad, loss, logits, targets, nullptr, row_weights, rows, cols,
                                           LossMetrics{});
}

void DeviceBackend::binary_cross_entropy_with_logits_metrics(float* grad, double* loss, const float* logits,
                                                             const float* targets, const int32_t* labels,
                                                             const float* row_weights, int64_t rows, int64_t cols,
                                                             const LossMetrics& m) {
  DeviceContext& ctx = this->ctx();
  // The kernel counts one column's predictions; count_correct and confusion_matrix_update
  // take the others (a row's prediction is then its first maximal logit).
  const bool count_here = m.correct && cols == 1, confusion_here = m.confusion && cols == 1;
  {
    std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
    LossMetrics counted = m;
    if (!count_here) counted.correct = nullptr;
    if (!confusion_here) counted.confusion = nullptr;
    const LossGrid g = loss_grid(ctx, loss, kReduceBlocks, kReduceBlocks, counted);
    launch(binary_cross_entropy_with_logits_kernel, dim3(loss_launch_blocks(g)), dim3(kThreads), 0, ctx.stream, g, grad,
           logits, targets, labels, row_weights, rows, cols);
  }
  if (m.correct && !count_here) count_correct(m.correct, logits, labels, rows, cols);
  if (m.confusion && !confusion_here) confusion_matrix_update(m.confusion, logits, labels, rows, cols);
}

}  // namespace customml::CUSTOMML_CUDA_NS
