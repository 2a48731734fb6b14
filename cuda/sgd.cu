// Launcher of the SGD update, and the device copy of the no-decay table it shares with Adam.

#include "cuda/launchers.h"
#include "cuda/sgd.cuh"

namespace customml::CUSTOMML_CUDA_NS {

const Segment* device_segments(DeviceContext& ctx, const Segment* no_decay, int64_t n_no_decay) {
  if (n_no_decay == 0) return nullptr;
  Segment* dst = ctx.segments.reserve(static_cast<size_t>(n_no_decay));
  ctx.memory->copy_to_device(dst, no_decay, sizeof(Segment) * static_cast<size_t>(n_no_decay));
  return dst;
}

void sgd_update(DeviceContext& ctx, float* param, float* velocity, const float* grad, int64_t n,
                const Segment* no_decay, int64_t n_no_decay, const SgdConfig& c) {
  if (n == 0) return;
  std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
  const Segment* segs = device_segments(ctx, no_decay, n_no_decay);
  // velocity is not read without momentum, so its alignment does not matter then
  const Vec4Split split = vec4_split(n, {param, c.momentum != 0.0f ? velocity : nullptr, grad});
  launch(sgd_update_kernel, dim3(vec4_blocks(n, split)), dim3(kThreads), 0, ctx.stream, param, velocity, grad, n,
         split, segs, n_no_decay, c);
}

}  // namespace customml::CUSTOMML_CUDA_NS
