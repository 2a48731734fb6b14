// SGD with momentum, Nesterov and L2 weight decay on the CPU: one pass over the
// flat buffers.

#include "cpu/cpu_backend.h"

namespace customml::cpu {

// param, velocity, grad: (n); velocity may be null when momentum == 0. As
// torch.optim.SGD (dampening 0): g += wd p; v = mu v + g; g = nesterov ? g + mu v : v;
// p -= lr g.
void CpuBackend::sgd_update(float* param, float* velocity, const float* grad, int64_t n,
                            const Segment* no_decay, int64_t n_no_decay, const SgdConfig& c) {
  // Hyper-parameters in locals: read through the config reference, they could alias
  // the float stores and would block vectorization.
  const float lr = c.lr, mu = c.momentum;
  const bool nesterov = c.nesterov;
  for_each_decay_range(n, no_decay, n_no_decay, [&](int64_t begin, int64_t end, bool decay) {
    const float wd = decay ? c.weight_decay : 0.0f;
    if (mu == 0.0f) {
      for (int64_t i = begin; i < end; ++i) param[i] -= lr * (grad[i] + wd * param[i]);
      return;
    }
    for (int64_t i = begin; i < end; ++i) {
      const float g = grad[i] + wd * param[i];
      const float v = mu * velocity[i] + g;
      velocity[i] = v;
      param[i] -= lr * (nesterov ? g + mu * v : v);
    }
  });
}

}  // namespace customml::cpu
