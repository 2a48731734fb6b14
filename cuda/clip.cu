// Launchers of the gradients' global norm (one launch: the grid's last block finishes the
// sum, and under fp16 updates the loss scale) and of global-norm clipping: that norm, then
// a scaling pass that reads it from device memory and scales only when it exceeds the
// limit (as torch.nn.utils.clip_grad_norm_, coefficient max_norm / (norm + 1e-6)): the
// host never waits for the norm.

#include "cuda/clip.cuh"
#include "cuda/device_backend.h"

namespace customml::CUSTOMML_CUDA_NS {

void DeviceBackend::global_norm(double* norm, const float* x, int64_t n, StepState* state, int64_t growth_interval) {
  DeviceContext& ctx = this->ctx();
  std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
  double* partial = ctx.partials.reserve(kReduceBlocks);
  launch(sum_squares_kernel, dim3(kReduceBlocks), dim3(kThreads), 0, ctx.stream, partial, x, n,
         (reinterpret_cast<uintptr_t>(x) & 15) == 0, NormFinish{norm, ctx.grid_ticket(), state, growth_interval});
}

void DeviceBackend::clip_by_global_norm(float* grad, double* norm, int64_t n, float max_norm) {
  global_norm(norm, grad, n, nullptr, 0);
  if (n == 0) return;
  const Vec4Split split = vec4_split(n, {grad});
  launch(clip_scale_kernel, dim3(vec4_blocks(n, split)), dim3(kThreads), 0, ctx().stream, grad, n, split,
         static_cast<const double*>(norm), max_norm);
}

}  // namespace customml::CUSTOMML_CUDA_NS
