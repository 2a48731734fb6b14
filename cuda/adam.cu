// Launcher of the Adam / AdamW update.

#include "cuda/adam.cuh"
#include "cuda/device_backend.h"

namespace customml::CUSTOMML_CUDA_NS {

void DeviceBackend::adam_update(float* param, const float* grad, float* m, float* v, float* vmax, int64_t n,
                                const Segment* no_decay, int64_t n_no_decay, const AdamConfig& c, const StepState* gate,
                                const UpdateScalars& scalars) {
  DeviceContext& ctx = this->ctx();
  if (n == 0) return;
  // The bias corrections of c.step on the host, rounded as cpu/adam.cpp rounds them; with a
  // gate, each thread computes them from the device's step count instead.
  const AdamBias b = adam_bias(c.lr, c.beta1, c.beta2, static_cast<double>(c.step));
  const AdamStep s{b.step_size, b.bias2_sqrt};
  std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
  const Segment* segs = device_segments(ctx, no_decay, n_no_decay);
  const Vec4Split split = vec4_split(n, {param, grad, m, v, vmax});
  launch(adam_update_kernel, dim3(vec4_blocks(n, split)), dim3(kThreads), 0, ctx.stream, param, grad, m, v, vmax, n,
         split, segs, n_no_decay, c, s, gate, scalars);
}

}  // namespace customml::CUSTOMML_CUDA_NS
