// Launcher of global-norm clipping: a reduction pass, then a scaling pass (the scale op,
// cuda/scale.cu) only when the norm exceeds the limit (as torch.nn.utils.clip_grad_norm_,
// coefficient max_norm / (norm + 1e-6)).

#include <cmath>

#include "cuda/clip.cuh"
#include "cuda/device_backend.h"

namespace customml::CUSTOMML_CUDA_NS {

double DeviceBackend::clip_by_global_norm(float* grad, int64_t n, float max_norm) {
  DeviceContext& ctx = this->ctx();
  double norm = 0.0;
  {
    std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
    double* partial = ctx.partials.reserve(kReduceBlocks);
    launch(sum_squares_kernel, dim3(kReduceBlocks), dim3(kThreads), 0, ctx.stream, partial,
           static_cast<const float*>(grad), n, (reinterpret_cast<uintptr_t>(grad) & 15) == 0);
    norm = std::sqrt(sum_partials(ctx, kReduceBlocks));
  }
  const double coef = static_cast<double>(max_norm) / (norm + 1e-6);
  if (coef < 1.0) scale(grad, n, coef);
  return norm;
}

}  // namespace customml::CUSTOMML_CUDA_NS
