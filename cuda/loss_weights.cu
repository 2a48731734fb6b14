// Launcher shared by the weighted losses: the batch's total weight.

#include "cuda/device_backend.h"
#include "cuda/loss_weights.cuh"

namespace customml::CUSTOMML_CUDA_NS {

void loss_weight_total(DeviceContext& ctx, double* total, const int32_t* labels, const float* class_weights,
                       const float* row_weights, int64_t batch) {
  launch(loss_weight_total_kernel, dim3(1), dim3(kThreads), 0, ctx.stream, total, labels, class_weights, row_weights,
         batch);
}

}  // namespace customml::CUSTOMML_CUDA_NS
