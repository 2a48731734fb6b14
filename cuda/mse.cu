// Launchers of the mean squared error: one launch for the loss, its gradient and the step's
// loss sum (cuda/loss_epilogue.cuh).

#include "cuda/device_backend.h"
#include "cuda/mse.cuh"

namespace customml::CUSTOMML_CUDA_NS {

void DeviceBackend::mse(float* grad, double* loss, const float* pred, const float* target, const float* row_weights,
                        int64_t rows, int64_t cols) {
  mse_metrics(grad, loss, pred, target, row_weights, rows, cols, LossMetrics{});
}

void DeviceBackend::mse_metrics(float* grad, double* loss, const float* pred, const float* target,
                                const float* row_weights, int64_t rows, int64_t cols, const LossMetrics& m) {
  DeviceContext& ctx = this->ctx();
  std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
  LossMetrics regression = m;
  regression.correct = nullptr;  // regression counts nothing right
  const LossGrid g = loss_grid(ctx, loss, kReduceBlocks, kReduceBlocks, regression);
  launch(mse_kernel, dim3(loss_launch_blocks(g)), dim3(kThreads), 0, ctx.stream, g, grad, pred, target, row_weights,
         rows, cols);
}

}  // namespace customml::CUSTOMML_CUDA_NS
