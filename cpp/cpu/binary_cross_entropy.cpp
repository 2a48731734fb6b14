// Binary cross-entropy on logits, with its gradient, on the CPU.

#include <cmath>

#include "cpu/cpu_backend.h"

namespace customml::cpu {

// logits, targets: (n) -> grad: (n) or null; returns mean_i l_i with
// l_i = max(z, 0) - z t + log1p(exp(-|z|)), which never overflows, and
// dl/dz = sigmoid(z) - t.
double CpuBackend::binary_cross_entropy_with_logits(float* grad, const float* logits,
                                                    const float* targets, int64_t n) {
  double loss = 0.0;
  const float inv_n = 1.0f / static_cast<float>(n);
  for (int64_t i = 0; i < n; ++i) {
    const float z = logits[i], t = targets[i];
    loss += static_cast<double>(z > 0.0f ? z : 0.0f) - static_cast<double>(z) * t +
            std::log1p(std::exp(-static_cast<double>(std::fabs(z))));
    if (grad) grad[i] = (act::sigmoid(z) - t) * inv_n;
  }
  return loss / static_cast<double>(n);
}

}  // namespace customml::cpu
