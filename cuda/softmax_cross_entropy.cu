// Launcher of softmax cross-entropy.

#include "cuda/device_backend.h"
#include "cuda/softmax_cross_entropy.cuh"

namespace customml::CUSTOMML_CUDA_NS {

constexpr int64_t kWarpRowMaxClasses = 1024;

double DeviceBackend::softmax_cross_entropy(float* grad, const float* logits, const int32_t* labels,
                                            const float* class_weights, const float* row_weights, int64_t batch,
                                            int64_t classes, float label_smoothing) {
  DeviceContext& ctx = this->ctx();
  std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
  // partials[0] holds the total weight, partials[1 .. batch] the weighted row losses.
  double* scratch = ctx.partials.reserve(static_cast<size_t>(batch) + 1);
  loss_weight_total(ctx, scratch, labels, class_weights, row_weights, batch);
  // A warp per row while each lane has at most 32 classes to visit; a block per row beyond.
  if (classes <= kWarpRowMaxClasses)
    launch(softmax_cross_entropy_kernel, dim3(exact_blocks(batch, kWarps)), dim3(kThreads), 0, ctx.stream,
           scratch + 1, grad, logits, labels, class_weights, row_weights, static_cast<const double*>(scratch), batch,
           classes, label_smoothing);
  else
    launch(softmax_cross_entropy_block_kernel, dim3(exact_blocks(batch, 1)), dim3(kThreads), 0, ctx.stream,
           scratch + 1, grad, logits, labels, class_weights, row_weights, static_cast<const double*>(scratch), batch,
           classes, label_smoothing);
  ctx.host_partials.resize(static_cast<size_t>(batch) + 1);
  ctx.memory->copy_to_host(ctx.host_partials.data(), scratch, sizeof(double) * (static_cast<size_t>(batch) + 1));
  double loss = 0.0;
  for (int64_t i = 1; i <= batch; ++i) loss += ctx.host_partials[i];
  const double total = ctx.host_partials[0];
  return total > 0.0 ? loss / total : 0.0;
}

}  // namespace customml::CUSTOMML_CUDA_NS
