// Launcher of inverted dropout.

#include "cuda/device_backend.h"
#include "cuda/dropout.cuh"

namespace customml::CUSTOMML_CUDA_NS {

void DeviceBackend::dropout(float* y, const float* x, int64_t n, float rate, uint64_t seed, uint64_t stream,
                            uint64_t first, const StepState* gate, uint64_t per_step) {
  DeviceContext& ctx = this->ctx();
  if (n == 0) return;
  // An unaligned first adds one Philox block.
  launch(dropout_kernel, dim3(grid_stride_blocks((n + 3) / 4 + 1, kThreads)), dim3(kThreads), 0, ctx.stream, y, x, n,
         rate, seed, stream, first, gate, per_step);
}

}  // namespace customml::CUSTOMML_CUDA_NS
