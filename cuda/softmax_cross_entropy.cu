// Launcher of softmax cross-entropy.

#include "cuda/device_backend.h"
#include "cuda/softmax_cross_entropy.cuh"

namespace customml::CUSTOMML_CUDA_NS {

constexpr int64_t kWarpRowMaxClasses = 1024;

void DeviceBackend::softmax_cross_entropy(float* grad, double* loss, const float* logits, const int32_t* labels,
                                          const float* class_weights, const float* row_weights, int64_t batch,
                                          int64_t classes, float label_smoothing) {
  DeviceContext& ctx = this->ctx();
  std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
  // partials[0] holds the total weight, partials[1 .. batch] the weighted row losses.
  double* scratch = ctx.partials.reserve(static_cast<size_t>(batch) + 1);
  loss_weight_total(ctx, scratch, labels, class_weights, row_weights, batch);
  // A warp per row while each lane has at most 32 classes to visit; a block per row beyond.
  if (classes <= kWarpRowMaxClasses)
    launch(softmax_cross_entropy_kernel, dim3(exact_blocks(batch, kWarps)), dim3(kThreads), 0, ctx.stream, scratch + 1,
           grad, logits, labels, class_weights, row_weights, static_cast<const double*>(scratch), batch, classes,
           label_smoothing);
  else
    launch(softmax_cross_entropy_block_kernel, dim3(exact_blocks(batch, 1)), dim3(kThreads), 0, ctx.stream, scratch + 1,
           grad, logits, labels, class_weights, row_weights, static_cast<const double*>(scratch), batch, classes,
           label_smoothing);
  PartialsSum sum;
  sum.partials = scratch;
  sum.first = 1;
  sum.count = batch;
  sum.finish = Finish::mean;
  sum.total = scratch;
  finish_partials(ctx, loss, sum);
}

void DeviceBackend::softmax_cross_entropy_soft(float* grad, double* loss, const float* logits, const float* targets,
                                               const float* row_weights, int64_t batch, int64_t classes) {
  DeviceContext& ctx = this->ctx();
  std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
  double* scratch = ctx.partials.reserve(static_cast<size_t>(batch) + 1);
  loss_weight_total(ctx, scratch, nullptr, nullptr, row_weights, batch);
  launch(softmax_cross_entropy_soft_kernel, dim3(exact_blocks(batch, kWarps)), dim3(kThreads), 0, ctx.stream,
         scratch + 1, grad, logits, targets, row_weights, static_cast<const double*>(scratch), batch, classes);
  PartialsSum sum;
  sum.partials = scratch;
  sum.first = 1;
  sum.count = batch;
  sum.finish = Finish::mean;
  sum.total = scratch;
  finish_partials(ctx, loss, sum);
}

}  // namespace customml::CUSTOMML_CUDA_NS
