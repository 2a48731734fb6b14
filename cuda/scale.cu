// Launcher of scale: x *= coef in place, each product in double.

#include "cuda/device_backend.h"
#include "cuda/scale.cuh"

namespace customml::CUSTOMML_CUDA_NS {

void DeviceBackend::scale(float* x, int64_t n, double coef) {
  DeviceContext& ctx = this->ctx();
  if (n == 0) return;
  const Vec4Split split = vec4_split(n, {x});
  launch(scale_kernel, dim3(vec4_blocks(n, split)), dim3(kThreads), 0, ctx.stream, x, n, split, coef);
}

void DeviceBackend::scale_by(float* x, int64_t n, const double* coef) {
  DeviceContext& ctx = this->ctx();
  if (n == 0) return;
  const Vec4Split split = vec4_split(n, {x});
  launch(scale_by_kernel, dim3(vec4_blocks(n, split)), dim3(kThreads), 0, ctx.stream, x, n, split, coef);
}

}  // namespace customml::CUSTOMML_CUDA_NS
