// Mean squared error with its gradient on the CPU.

#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"

namespace customml::cpu {

// pred, target: (n) -> grad: (n) or null; returns mean (pred - target)^2, and
// dL/dpred = 2 (pred - target) / n.
double CpuBackend::mse(float* grad, const float* pred, const float* target, int64_t n) {
  return elementwise().mse(grad, pred, target, n);
}

}  // namespace customml::cpu
