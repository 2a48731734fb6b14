#pragma once
// Defines: adam_update_kernel, one pass reading each parameter, gradient and moment
// once, with the no-decay table.

#include <cmath>
#include <cstdint>

#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// Per-step scalars computed once on the host: lr / (1 - beta1^t) and sqrt(1 - beta2^t).
struct AdamStep {
  float step_size;
  float bias2_sqrt;
};

// param, m, v, vmax (null without amsgrad), grad (n): as cpu/adam.cpp.
__global__ void adam_update_kernel(float* param, float* m, float* v, float* vmax, const float* grad, int64_t n,
                                   const Segment* no_decay, int64_t n_no_decay, AdamConfig c, AdamStep s) {
  const float one_b1 = 1.0f - c.beta1, one_b2 = 1.0f - c.beta2;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float wd = takes_decay(no_decay, n_no_decay, i) ? c.weight_decay : 0.0f;
    const float l2 = c.decoupled ? 0.0f : wd;
    const float shrink = c.decoupled ? 1.0f - c.lr * wd : 1.0f;
    const float p = param[i] * shrink;
    const float g = grad[i] + l2 * p;
    const float mi = c.beta1 * m[i] + one_b1 * g;
    const float vi = c.beta2 * v[i] + one_b2 * g * g;
    m[i] = mi;
    v[i] = vi;
    float vhat = vi;
    if (vmax) {
      vhat = vmax[i] > vi ? vmax[i] : vi;
      vmax[i] = vhat;
    }
    param[i] = p - s.step_size * mi / (sqrtf(vhat) / s.bias2_sqrt + c.eps);
  }
}

}  // namespace customml::CUSTOMML_CUDA_NS
