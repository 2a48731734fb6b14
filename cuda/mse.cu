// Launcher of the mean squared error.

#include "cuda/device_backend.h"
#include "cuda/mse.cuh"

namespace customml::CUSTOMML_CUDA_NS {

void DeviceBackend::mse(float* grad, double* loss, const float* pred, const float* target, const float* row_weights,
                        int64_t rows, int64_t cols) {
  DeviceContext& ctx = this->ctx();
  std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
  const int64_t n = rows * cols;
  // partials[kReduceBlocks] holds the total weight, after the per-block sums.
  double* partial = ctx.partials.reserve(kReduceBlocks + 1);
  if (row_weights) loss_weight_total(ctx, partial + kReduceBlocks, nullptr, nullptr, row_weights, rows);
  launch(mse_kernel, dim3(kReduceBlocks), dim3(kThreads), 0, ctx.stream, partial, grad, pred, target, row_weights,
         static_cast<const double*>(partial + kReduceBlocks), n, cols);
  finish_pointwise_loss(ctx, loss, partial, row_weights != nullptr, n, cols);
}

}  // namespace customml::CUSTOMML_CUDA_NS
