// Launcher of the distillation loss.

#include "cuda/device_backend.h"
#include "cuda/distillation.cuh"

namespace customml::CUSTOMML_CUDA_NS {

void DeviceBackend::distillation_loss(float* grad, double* loss, const float* student, const float* teacher,
                                      const int32_t* labels, const float* row_weights, int64_t batch, int64_t classes,
                                      float temperature, float alpha) {
  DeviceContext& ctx = this->ctx();
  std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
  // partials[0] holds the total weight, partials[1 .. batch] the weighted row losses.
  double* scratch = ctx.partials.reserve(static_cast<size_t>(batch) + 1);
  loss_weight_total(ctx, scratch, nullptr, nullptr, row_weights, batch);
  launch(distillation_loss_kernel, dim3(exact_blocks(batch, kWarps)), dim3(kThreads), 0, ctx.stream, scratch + 1, grad,
         student, teacher, labels, row_weights, static_cast<const double*>(scratch), batch, classes, temperature,
         alpha);
  PartialsSum sum;
  sum.partials = scratch;
  sum.first = 1;
  sum.count = batch;
  sum.finish = Finish::mean;
  sum.total = scratch;
  finish_partials(ctx, loss, sum);
}

}  // namespace customml::CUSTOMML_CUDA_NS
