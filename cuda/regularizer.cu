// Launcher of the L1/L2 kernel penalty: one pass (gradient and per-block partial sums),
// then the partials added in block order on the device.

#include "cuda/device_backend.h"
#include "cuda/regularizer.cuh"

namespace customml::CUSTOMML_CUDA_NS {

void DeviceBackend::l1_l2_penalty(float* grad, double* penalty, const float* param, int64_t n, float l1, float l2) {
  DeviceContext& ctx = this->ctx();
  std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
  double* partial = ctx.partials.reserve(kReduceBlocks);
  launch(l1_l2_penalty_kernel, dim3(kReduceBlocks), dim3(kThreads), 0, ctx.stream, partial, grad, param, n, l1, l2);
  PartialsSum sum;
  sum.partials = partial;
  sum.count = kReduceBlocks;
  sum.finish = Finish::add;
  finish_partials(ctx, penalty, sum);
}

}  // namespace customml::CUSTOMML_CUDA_NS
