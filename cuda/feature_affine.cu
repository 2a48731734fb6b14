// Launcher of the per-feature affine map.

#include "cuda/feature_affine.cuh"
#include "cuda/launchers.h"

namespace customml::CUSTOMML_CUDA_NS {

void feature_affine(DeviceContext& ctx, float* y, const float* x, const float* scale, const float* shift, int64_t rows,
                    int64_t cols) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  launch(feature_affine_kernel, dim3(grid_stride_blocks(n, kThreads)), dim3(kThreads), 0, ctx.stream, y, x, scale,
         shift, n, cols);
}

}  // namespace customml::CUSTOMML_CUDA_NS
