#pragma once
// Defines: dropout_kernel, inverted dropout with the Philox mask of cpp/random.h, so the
// device draws exactly the CPU's mask.

#include <cstdint>

#include "cuda/common.cuh"
#include "random.h"

namespace customml::CUSTOMML_CUDA_NS {

// x (n) -> y (n) = keep ? x / (1 - rate) : 0, x[i] being element first + i of the mask;
// a thread per Philox block of 4 mask elements. y may be x. With a gate, the stream moves
// by per_step for each step the device counted.
__global__ void dropout_kernel(float* y, const float* x, int64_t n, float rate, uint64_t seed, uint64_t stream,
                               uint64_t first, const StepState* gate, uint64_t per_step) {
  if (gate) stream += static_cast<uint64_t>(gate->step) * per_step;
  const float scale = 1.0f / (1.0f - rate);
  const uint64_t block0 = first / 4;
  const int64_t blocks = static_cast<int64_t>((first + static_cast<uint64_t>(n) + 3) / 4 - block0);
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < blocks;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t block = block0 + static_cast<uint64_t>(b);
    const Philox4 r = philox4x32_10(seed, stream, block);
    for (int j = 0; j < 4; ++j) {
      const int64_t i = static_cast<int64_t>(block * 4 + static_cast<uint64_t>(j) - first);
      if (i >= 0 && i < n) y[i] = uniform_from_bits(r.v[j]) >= rate ? x[i] * scale : 0.0f;
    }
  }
}

}  // namespace customml::CUSTOMML_CUDA_NS
