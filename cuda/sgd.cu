// Launcher of the SGD update, and the device copy of the no-decay table it shares with Adam.

#include <algorithm>

#include "cuda/device_backend.h"
#include "cuda/sgd.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// The executor passes the same table at every step, so the device copy is kept and
// compared on the host: an unchanged table costs no host-to-device copy (and no host wait
// for it) per optimizer step.
const Segment* device_segments(DeviceContext& ctx, const Segment* no_decay, int64_t n_no_decay) {
  if (n_no_decay == 0) return nullptr;
  const size_t n = static_cast<size_t>(n_no_decay);
  const bool grows = n > ctx.segments.size();  // a new buffer: nothing in it yet
  Segment* dst = ctx.segments.reserve(n);
  const auto same = [](const Segment& a, const Segment& b) { return a.begin == b.begin && a.end == b.end; };
  if (!grows && ctx.uploaded_segments.size() == n &&
      std::equal(no_decay, no_decay + n, ctx.uploaded_segments.begin(), same))
    return dst;
  ctx.uploaded_segments.clear();  // unknown contents if the copy throws
  ctx.memory->copy_to_device(dst, no_decay, sizeof(Segment) * n);
  ctx.uploaded_segments.assign(no_decay, no_decay + n);
  return dst;
}

void DeviceBackend::sgd_update(float* param, const float* grad, float* velocity, int64_t n, const Segment* no_decay,
                               int64_t n_no_decay, const SgdConfig& c, const StepState* gate,
                               const UpdateScalars& scalars) {
  DeviceContext& ctx = this->ctx();
  if (n == 0) return;
  std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
  const Segment* segs = device_segments(ctx, no_decay, n_no_decay);
  // velocity is not read without momentum, so its alignment does not matter then
  const Vec4Split split = vec4_split(n, {param, grad, c.momentum != 0.0f ? velocity : nullptr});
  launch(sgd_update_kernel, dim3(vec4_blocks(n, split)), dim3(kThreads), 0, ctx.stream, param, grad, velocity, n, split,
         segs, n_no_decay, c, gate, scalars);
}

}  // namespace customml::CUSTOMML_CUDA_NS
