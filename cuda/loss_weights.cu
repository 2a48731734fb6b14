// Launchers shared by the weighted losses: the batch's total weight, and the weighted
// mean from a pointwise loss's partial sums.

#include "cuda/device_backend.h"
#include "cuda/loss_weights.cuh"

namespace customml::CUSTOMML_CUDA_NS {

void loss_weight_total(DeviceContext& ctx, double* total, const int32_t* labels, const float* class_weights,
                       const float* row_weights, int64_t batch) {
  launch(loss_weight_total_kernel, dim3(1), dim3(kThreads), 0, ctx.stream, total, labels, class_weights, row_weights,
         batch);
}

double weighted_mean_partials(DeviceContext& ctx, unsigned blocks, int64_t cols) {
  ctx.host_partials.resize(blocks + 1);
  ctx.memory->copy_to_host(ctx.host_partials.data(), ctx.partials.data(), sizeof(double) * (blocks + 1));
  double sum = 0.0;
  for (unsigned b = 0; b < blocks; ++b) sum += ctx.host_partials[b];
  const double total = ctx.host_partials[blocks] * static_cast<double>(cols);
  return total > 0.0 ? sum / total : 0.0;
}

}  // namespace customml::CUSTOMML_CUDA_NS
