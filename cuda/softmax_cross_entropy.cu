// Launchers of softmax cross-entropy: one launch for the loss, its gradient and the
// step's metric sums (cuda/loss_epilogue.cuh).

#include "cuda/device_backend.h"
#include "cuda/softmax_cross_entropy.cuh"

namespace customml::CUSTOMML_CUDA_NS {

constexpr int64_t kWarpRowMaxClasses = 1024;

void DeviceBackend::softmax_cross_entropy(float* grad, double* loss, const float* logits, const int32_t* labels,
                                          const float* class_weights, const float* row_weights, int64_t batch,
                                          int64_t classes, float label_smoothing) {
  softmax_cross_entropy_metrics(grad, loss, logits, labels, class_weights, row_weights, batch, classes, label_smoothing,
                                LossMetrics{});
}

void DeviceBackend::softmax_cross_entropy_metrics(float* grad, double* loss, const float* logits, const int32_t* labels,
                                                  const float* class_weights, const float* row_weights, int64_t batch,
                                                  int64_t classes, float label_smoothing, const LossMetrics& m) {
  DeviceContext& ctx = this->ctx();
  // A warp per row while each lane has at most 32 classes to visit; a block per row beyond
  // (whose kernel leaves the penalties to kernel_penalties).
  const bool warp_rows = classes <= kWarpRowMaxClasses;
  if (batch > 0) {
    std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
    const unsigned blocks = warp_rows ? exact_blocks(batch, kWarps) : exact_blocks(batch, 1);
    const LossGrid g = loss_grid(ctx, loss, static_cast<size_t>(batch), blocks, m, warp_rows);
    if (warp_rows)
      launch(softmax_cross_entropy_kernel, dim3(loss_launch_blocks(g)), dim3(kThreads), 0, ctx.stream, g, grad, logits,
             labels, class_weights, row_weights, batch, classes, label_smoothing);
    else
      launch(softmax_cross_entropy_block_kernel, dim3(blocks), dim3(kThreads), 0, ctx.stream, g, grad, logits, labels,
             class_weights, row_weights, batch, classes, label_smoothing);
  }
  if (batch == 0 || !warp_rows) add_penalties(m);
}

void DeviceBackend::softmax_cross_entropy_soft(float* grad, double* loss, const float* logits, const float* targets,
                                               const float* row_weights, int64_t batch, int64_t classes) {
  softmax_cross_entropy_soft_metrics(grad, loss, logits, targets, nullptr, row_weights, batch, classes, LossMetrics{});
}

void DeviceBackend::softmax_cross_entropy_soft_metrics(float* grad, double* loss, const float* logits,
                                                       const float* targets, const int32_t* labels,
                                                       const float* row_weights, int64_t batch, int64_t classes,
                                                       const LossMetrics& m) {
  DeviceContext& ctx = this->ctx();
  if (batch == 0) {  // the mean of no rows is 0, and adds nothing
    ctx.memory->fill_zero(loss, sizeof(double));
    add_penalties(m);
    return;
  }
  std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
  const unsigned blocks = exact_blocks(batch, kWarps);
  const LossGrid g = loss_grid(ctx, loss, static_cast<size_t>(batch), blocks, m);
  launch(softmax_cross_entropy_soft_kernel, dim3(loss_launch_blocks(g)), dim3(kThreads), 0, ctx.stream, g, grad, logits,
         targets, labels, row_weights, batch, classes);
}

}  // namespace customml::CUSTOMML_CUDA_NS
