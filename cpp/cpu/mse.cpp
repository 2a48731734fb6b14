// Mean squared error with its gradient on the CPU.

#include "cpu/cpu_backend.h"

namespace customml::cpu {

// pred, target: (n) -> grad: (n) or null; returns mean (pred - target)^2, and
// dL/dpred = 2 (pred - target) / n.
double CpuBackend::mse(float* grad, const float* pred, const float* target, int64_t n) {
  double loss = 0.0;
  const float scale = 2.0f / static_cast<float>(n);
  for (int64_t i = 0; i < n; ++i) {
    const float d = pred[i] - target[i];
    loss += static_cast<double>(d) * d;
    if (grad) grad[i] = scale * d;
  }
  return loss / static_cast<double>(n);
}

}  // namespace customml::cpu
