// SGD with momentum, Nesterov and L2 weight decay on the CPU: one pass over the
// flat buffers.

#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"
#include "cpu/thread_pool.h"

namespace customml::cpu {

// param, velocity, grad: (n); velocity may be null when momentum == 0. As
// torch.optim.SGD (dampening 0): g += wd p; v = mu v + g; g = nesterov ? g + mu v : v;
// p -= lr g.
void CpuBackend::sgd_update(float* param, float* velocity, const float* grad, int64_t n,
                            const Segment* no_decay, int64_t n_no_decay, const SgdConfig& c) {
  const ElementwiseKernels& k = elementwise();
  for_each_decay_range(n, no_decay, n_no_decay, [&](int64_t begin, int64_t end, bool decay) {
    const SgdStep s{c.lr, c.momentum, decay ? c.weight_decay : 0.0f, c.nesterov};
    for_each_chunk(end - begin, [&](int64_t, int64_t b, int64_t e) {
      const int64_t o = begin + b;
      k.sgd(param + o, c.momentum == 0.0f ? nullptr : velocity + o, grad + o, e - b, s);
    });
  });
}

}  // namespace customml::cpu
