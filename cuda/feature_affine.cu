// Launcher of the per-feature affine map.

#include "cuda/device_backend.h"
#include "cuda/feature_affine.cuh"

namespace customml::CUSTOMML_CUDA_NS {

void DeviceBackend::feature_affine(float* y, const float* x, const float* scale, const float* shift, int64_t rows,
                                   int64_t cols) {
  DeviceContext& ctx = this->ctx();
  const int64_t n = rows * cols;
  if (n == 0) return;
  launch(feature_affine_kernel, dim3(grid_stride_blocks(n, kThreads)), dim3(kThreads), 0, ctx.stream, y, x, scale,
         shift, n, cols);
}

}  // namespace customml::CUSTOMML_CUDA_NS
