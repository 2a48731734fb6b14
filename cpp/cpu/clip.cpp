// Global-norm gradient clipping on the CPU: one reduction pass, then one scaling
// pass only when the norm exceeds the limit.

#include <cmath>

#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"

namespace customml::cpu {

// grad: (n), in place. As torch.nn.utils.clip_grad_norm_: scale by
// max_norm / (norm + 1e-6) when that is below 1. Returns the norm before scaling.
double CpuBackend::clip_by_global_norm(float* grad, int64_t n, float max_norm) {
  // float64 accumulation: 1e7 squares summed in float32 would lose ~3 digits.
  const ElementwiseKernels& k = elementwise();
  const double norm = std::sqrt(k.sum_squares(grad, n));
  const double coef = static_cast<double>(max_norm) / (norm + 1e-6);
  // Scaled in double: the coefficient itself can be below float32's normal range
  // (max_norm / norm < 2^-126) while the scaled gradients are not.
  if (coef < 1.0) k.scale(grad, n, coef);
  return norm;
}

void CpuBackend::scale(float* x, int64_t n, double coef) { elementwise().scale(x, n, coef); }

}  // namespace customml::cpu
