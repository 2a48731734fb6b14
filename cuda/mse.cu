// Launcher of the mean squared error.

#include "cuda/launchers.h"
#include "cuda/mse.cuh"

namespace customml::CUSTOMML_CUDA_NS {

double mse(DeviceContext& ctx, float* grad, const float* pred, const float* target, int64_t n) {
  std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
  double* partial = ctx.partials.reserve(kReduceBlocks);
  launch(mse_kernel, dim3(kReduceBlocks), dim3(kThreads), 0, ctx.stream, partial, grad, pred, target, n);
  return sum_partials(ctx, kReduceBlocks) / static_cast<double>(n);
}

double sum_partials(DeviceContext& ctx, unsigned blocks) {
  ctx.host_partials.resize(blocks);
  ctx.memory->copy_to_host(ctx.host_partials.data(), ctx.partials.data(), sizeof(double) * blocks);
  double sum = 0.0;
  for (double p : ctx.host_partials) sum += p;
  return sum;
}

}  // namespace customml::CUSTOMML_CUDA_NS
