#pragma once
// Defines: softmax_kernel and sigmoid_kernel, a model's output probabilities.

#include <cstdint>

#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// x (rows, cols) -> y (rows, cols) = softmax of each row: a warp per row, its lanes over
// the columns; the maximum first (no exp overflows), the sum of e^(x - m) in float64 in a
// fixed order, then each element divided by it. A lane writes only the columns it read,
// so y may be x. A NaN makes its row NaN (fmaxf skips it, e^(NaN - m) does not).
__global__ void __launch_bounds__(kThreads) softmax_kernel(float* y, const float* x, int64_t rows, int64_t cols) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kWarps) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const float* xr = x + row * cols;
  float* yr = y + row * cols;
  float m = -INFINITY;
  for (int64_t c = lane; c < cols; c += 32) m = fmaxf(m, xr[c]);
  m = warp_max(m);
  double sum = 0.0;
  for (int64_t c = lane; c < cols; c += 32) sum += static_cast<double>(expf(xr[c] - m));
  const float s = static_cast<float>(warp_sum(sum));
  for (int64_t c = lane; c < cols; c += 32) yr[c] = expf(xr[c] - m) / s;
}

// x (n) -> y (n) = 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) below: only e^-|x| is
// taken, so nothing overflows; a grid-stride loop, elementwise, so y may be x.
__global__ void __launch_bounds__(kThreads) sigmoid_kernel(float* y, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const float z = x[i];
    const float e = expf(-fabsf(z));
    y[i] = z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
  }
}

}  // namespace customml::CUSTOMML_CUDA_NS
