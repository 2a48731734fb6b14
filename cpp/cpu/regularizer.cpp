// L1/L2 penalty on a Dense kernel on the CPU: one pass that adds the penalty's gradient
// to the kernel's gradient and sums the penalty itself; and the layers' penalties in turn.

#include <cmath>

#include "cpu/cpu_backend.h"

namespace customml::cpu {

// grad, param: (n); grad += l1 sign(w) + 2 l2 w (sign(0) = 0, as Keras' gradient of |w|)
// when grad is non-null; penalty (1) += l1 sum |w| + l2 sum w^2, summed in double.
void CpuBackend::l1_l2_penalty(float* grad, double* penalty, const float* param, int64_t n, float l1, float l2) {
  double abs_sum = 0.0, sq_sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float w = param[i];
    abs_sum += std::fabs(static_cast<double>(w));
    sq_sum += static_cast<double>(w) * w;
    if (grad) {
      const float sign = w > 0.0f ? 1.0f : (w < 0.0f ? -1.0f : 0.0f);
      grad[i] += l1 * sign + 2.0f * l2 * w;
    }
  }
  *penalty += static_cast<double>(l1) * abs_sum + static_cast<double>(l2) * sq_sum;
}

void CpuBackend::kernel_penalties(double* penalty, double* sum, const PenaltyTerm* terms, int64_t count, double weight,
                                  const StepState* gate) {
  *penalty = 0.0;
  for (int64_t t = 0; t < count; ++t)
    l1_l2_penalty(terms[t].grad, penalty, terms[t].param, terms[t].n, terms[t].l1, terms[t].l2);
  if (sum) accumulate(sum, penalty, weight, gate);
}

}  // namespace customml::cpu
