#pragma once
// Defines: sgd_update_kernel, one pass over the flat buffers with the no-decay table.

#include <cstdint>

#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// param, velocity (null when momentum is 0), grad (n): as cpu/sgd.cpp.
__global__ void sgd_update_kernel(float* param, float* velocity, const float* grad, int64_t n,
                                  const Segment* no_decay, int64_t n_no_decay, SgdConfig c) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float wd = takes_decay(no_decay, n_no_decay, i) ? c.weight_decay : 0.0f;
    const float g = grad[i] + wd * param[i];
    if (c.momentum == 0.0f) {
      param[i] -= c.lr * g;
      continue;
    }
    const float v = c.momentum * velocity[i] + g;
    velocity[i] = v;
    param[i] -= c.lr * (c.nesterov ? g + c.momentum * v : v);
  }
}

}  // namespace customml::CUSTOMML_CUDA_NS
