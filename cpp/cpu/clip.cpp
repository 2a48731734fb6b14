// The gradients' global norm on the CPU (with fp16's loss-scale update after it), and
// global-norm clipping: that reduction pass, then one scaling pass (the scale op,
// cpu/scale.cpp) only when the norm exceeds the limit.

#include <cmath>
#include <vector>

#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"
#include "cpu/thread_pool.h"

namespace customml::cpu {

void CpuBackend::global_norm(double* norm, const float* x, int64_t n, StepState* state, int64_t growth_interval) {
  // float64 accumulation: 1e7 squares summed in float32 would lose ~3 digits.
  // Per-chunk sums added in chunk order: the same result for every thread count.
  const ElementwiseKernels& k = elementwise();
  thread_local std::vector<double> scratch;
  // A name for the caller's vector: inside the lambda, `scratch` would be each worker's own.
  std::vector<double>& partial = scratch;
  partial.assign(static_cast<size_t>(parallel_chunk_count(n)), 0.0);
  for_each_chunk(
      n, [&](int64_t c, int64_t b, int64_t e) { partial[static_cast<size_t>(c)] = k.sum_squares(x + b, e - b); });
  double sum = 0.0;
  for (double p : partial) sum += p;
  *norm = std::sqrt(sum);
  if (state) update_loss_scale(*state, *norm, growth_interval);
}

// grad: (n), in place. As torch.nn.utils.clip_grad_norm_: scale by
// max_norm / (norm + 1e-6) when that is below 1; norm (1) = the norm before scaling.
void CpuBackend::clip_by_global_norm(float* grad, double* norm, int64_t n, float max_norm) {
  global_norm(norm, grad, n, nullptr, 0);
  const double coef = static_cast<double>(max_norm) / (*norm + 1e-6);
  // Scaled in double: the coefficient itself can be below float32's normal range
  // (max_norm / norm < 2^-126) while the scaled gradients are not.
  if (coef < 1.0) scale(grad, n, coef);
}

}  // namespace customml::cpu
