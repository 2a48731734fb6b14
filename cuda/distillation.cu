// Launchers of the distillation loss: one launch for the loss, its gradient and the
// step's metric sums (cuda/loss_epilogue.cuh).

#include "cuda/device_backend.h"
#include "cuda/distillation.cuh"

namespace customml::CUSTOMML_CUDA_NS {

void DeviceBackend::distillation_loss(float* grad, double* loss, const float* student, const float* teacher,
                                      const int32_t* labels, const float* row_weights, int64_t batch, int64_t classes,
                                      float temperature, float alpha) {
  distillation_loss_metrics(grad, loss, student, teacher, labels, row_weights, batch, classes, temperature, alpha,
                            LossMetrics{});
}

void DeviceBackend::distillation_loss_metrics(float* grad, double* loss, const float* student, const float* teacher,
                                              const int32_t* labels, const float* row_weights, int64_t batch,
                                              int64_t classes, float temperature, float alpha, const LossMetrics& m) {
  DeviceContext& ctx = this->ctx();
  if (batch == 0) {  // the mean of no rows is 0, and adds nothing
    ctx.memory->fill_zero(loss, sizeof(double));
    add_penalties(m);
    return;
  }
  std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
  const unsigned blocks = exact_blocks(batch, kWarps);
  const LossGrid g = loss_grid(ctx, loss, static_cast<size_t>(batch), blocks, m);
  launch(distillation_loss_kernel, dim3(loss_launch_blocks(g)), dim3(kThreads), 0, ctx.stream, g, grad, student,
         teacher, labels, row_weights, batch, classes, temperature, alpha);
}

}  // namespace customml::CUSTOMML_CUDA_NS
