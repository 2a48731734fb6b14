// Launcher of the pruning mask.

#include "cuda/device_backend.h"
#include "cuda/mask.cuh"

namespace customml::CUSTOMML_CUDA_NS {

void DeviceBackend::apply_mask(float* param, const uint8_t* keep, int64_t n) {
  DeviceContext& ctx = this->ctx();
  if (n == 0) return;
  launch(apply_mask_kernel, dim3(grid_stride_blocks(n, kThreads * kMaskVec)), dim3(kThreads), 0, ctx.stream, param,
         keep, n);
}

}  // namespace customml::CUSTOMML_CUDA_NS
