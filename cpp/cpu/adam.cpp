// Adam / AdamW (with optional amsgrad) on the CPU: one pass reading each parameter,
// gradient and moment once.

#include <cmath>

#include "cpu/cpu_backend.h"

namespace customml::cpu {

// param, m, v, grad: (n); vmax: (n) when amsgrad, else null. As torch.optim.Adam /
// AdamW: Adam adds wd p to the gradient (L2); AdamW decays p by lr wd first
// (decoupled). m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
// p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
void CpuBackend::adam_update(float* param, float* m, float* v, float* vmax, const float* grad,
                             int64_t n, const Segment* no_decay, int64_t n_no_decay,
                             const AdamConfig& c) {
  const double t = static_cast<double>(c.step);
  const float bias1 = static_cast<float>(1.0 - std::pow(static_cast<double>(c.beta1), t));
  const float bias2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(c.beta2), t)));
  const float step_size = c.lr / bias1;
  // Hyper-parameters in locals: read through the config reference, they could alias
  // the float stores and would block vectorization.
  const float b1 = c.beta1, b2 = c.beta2, one_b1 = 1.0f - c.beta1, one_b2 = 1.0f - c.beta2, eps = c.eps;
  for_each_decay_range(n, no_decay, n_no_decay, [&](int64_t begin, int64_t end, bool decay) {
    const float wd = decay ? c.weight_decay : 0.0f;
    const float l2 = c.decoupled ? 0.0f : wd;
    const float shrink = c.decoupled ? 1.0f - c.lr * wd : 1.0f;
    for (int64_t i = begin; i < end; ++i) {
      const float p = param[i] * shrink;
      const float g = grad[i] + l2 * p;
      const float mi = b1 * m[i] + one_b1 * g;
      const float vi = b2 * v[i] + one_b2 * g * g;
      m[i] = mi;
      v[i] = vi;
      float vhat = vi;
      if (vmax) {
        vhat = vmax[i] > vi ? vmax[i] : vi;
        vmax[i] = vhat;
      }
      param[i] = p - step_size * mi / (std::sqrt(vhat) / bias2_sqrt + eps);
    }
  });
}

}  // namespace customml::cpu
