#pragma once
// Defines: sgd_update_kernel, one pass over the flat buffers in float4s, with the
// no-decay table.

#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/update_scalars.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// One element's update (the new parameter; the velocity in place with momentum): the one
// expression both parts of the kernel use. wd is the element's decay (0 inside a no-decay
// segment).
__device__ __forceinline__ float sgd_element(float p, float grad, float& velocity, bool momentum, float wd,
                                             const SgdConfig& c) {
  const float g = grad + wd * p;
  if (!momentum) return p - c.lr * g;
  const float v = c.momentum * velocity + g;
  velocity = v;
  return p - c.lr * (c.nesterov ? g + c.momentum * v : v);
}

// param, grad, velocity (null when momentum is 0) (n): as cpu/sgd.cpp, the learning rate
// and the gradient's scaling read as u says (UpdateScalars). split
// (vec4_split over the arrays in use): its float4s one per thread, then its head and tail
// elements one per thread, as adam_update_kernel.
__global__ void sgd_update_kernel(float* param, const float* grad, float* velocity, int64_t n, Vec4Split split,
                                  const Segment* no_decay, int64_t n_no_decay, SgdConfig c, const StepState* gate,
                                  UpdateScalars u) {
  if (gate && gate->skip != 0.0) return;  // fp16: this step's gradients overflowed
  if (u.lr) c.lr = *u.lr;
  const GradientScaling scaled(u, clip_norm(u));  // every thread: the norm slots take the block
  const HalfTwin twin(u);
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const bool momentum = c.momentum != 0.0f;
  for (int64_t u = first; u < split.vecs; u += stride) {
    const int64_t i0 = split.head + 4 * u;
    float p[4], g[4], vel[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    bool decay[4];
    load4(p, param + i0);
    load4(g, grad + i0);
    if (momentum) load4(vel, velocity + i0);
    takes_decay4(decay, no_decay, n_no_decay, i0);
    CUSTOMML_UNROLL
    for (int j = 0; j < 4; ++j)
      p[j] = sgd_element(p[j], scaled(g[j]), vel[j], momentum, decay[j] ? c.weight_decay : 0.0f, c);
    store4(param + i0, p);
    twin.store4(i0, p);
    if (momentum) store4(velocity + i0, vel);
  }
  for (int64_t k = first; k < n - 4 * split.vecs; k += stride) {
    const int64_t i = vec4_scalar_index(split, k);
    float vel = momentum ? velocity[i] : 0.0f;
    const float wd = takes_decay(no_decay, n_no_decay, i) ? c.weight_decay : 0.0f;
    param[i] = sgd_element(param[i], scaled(grad[i]), vel, momentum, wd, c);
    twin.store(i, param[i]);
    if (momentum) velocity[i] = vel;
  }
}

}  // namespace customml::CUSTOMML_CUDA_NS
