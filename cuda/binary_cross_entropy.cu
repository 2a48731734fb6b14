// Launcher of binary cross-entropy with logits.

#include "cuda/binary_cross_entropy.cuh"
#include "cuda/launchers.h"

namespace customml::CUSTOMML_CUDA_NS {

double binary_cross_entropy_with_logits(DeviceContext& ctx, float* grad, const float* logits, const float* targets,
                                        int64_t n) {
  std::lock_guard<std::mutex> lock(ctx.scratch_mutex);
  double* partial = ctx.partials.reserve(kReduceBlocks);
  launch(binary_cross_entropy_kernel, dim3(kReduceBlocks), dim3(kThreads), 0, ctx.stream, partial, grad, logits,
         targets, n);
  return sum_partials(ctx, kReduceBlocks) / static_cast<double>(n);
}

}  // namespace customml::CUSTOMML_CUDA_NS
