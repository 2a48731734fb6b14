// Launchers of the output probabilities (softmax over rows, sigmoid).

#include "cuda/device_backend.h"
#include "cuda/softmax.cuh"

namespace customml::CUSTOMML_CUDA_NS {

void DeviceBackend::softmax(float* y, const float* x, int64_t rows, int64_t cols) {
  if (rows == 0) return;
  launch(softmax_kernel, dim3(exact_blocks(rows, kWarps)), dim3(kThreads), 0, ctx().stream, y, x, rows, cols);
}

void DeviceBackend::sigmoid(float* y, const float* x, int64_t n) {
  if (n == 0) return;
  launch(sigmoid_kernel, dim3(grid_stride_blocks(n, kThreads)), dim3(kThreads), 0, ctx().stream, y, x, n);
}

}  // namespace customml::CUSTOMML_CUDA_NS
