// Binary cross-entropy on logits, with its gradient, on the CPU.

#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"

namespace customml::cpu {

// logits, targets: (n) -> grad: (n) or null; returns mean_i l_i with
// l_i = max(z, 0) - z t + log1p(exp(-|z|)), which never overflows, and
// dl/dz = sigmoid(z) - t.
double CpuBackend::binary_cross_entropy_with_logits(float* grad, const float* logits,
                                                    const float* targets, int64_t n) {
  return elementwise().binary_cross_entropy(grad, logits, targets, n);
}

}  // namespace customml::cpu
