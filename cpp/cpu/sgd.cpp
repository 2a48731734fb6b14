// SGD with momentum, Nesterov and L2 weight decay on the CPU: one pass over the
// flat buffers.

#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"
#include "cpu/thread_pool.h"
#include "cpu/update_scalars.h"

namespace customml::cpu {

// param, grad, velocity: (n); velocity may be null when momentum == 0. As
// torch.optim.SGD (dampening 0): g += wd p; v = mu v + g; g = nesterov ? g + mu v : v;
// p -= lr g.
void CpuBackend::sgd_update(float* param, const float* grad, float* velocity, int64_t n, const Segment* no_decay,
                            int64_t n_no_decay, const SgdConfig& c, const StepState* gate,
                            const UpdateScalars& scalars) {
  if (gate && gate->skip != 0.0) return;
  const ElementwiseKernels& k = elementwise();
  const float lr = scalars.lr ? *scalars.lr : c.lr;
  const SgdStep steps[2] = {{lr, c.momentum, 0.0f, c.nesterov}, {lr, c.momentum, c.weight_decay, c.nesterov}};
  const ScaledGradient scaled(grad, scalars);
  // Chunks of the whole buffer cut at the decay ranges, as adam_update does.
  for_each_chunk(n, [&](int64_t, int64_t chunk_begin, int64_t chunk_end) {
    const float* g = scaled.chunk(chunk_begin, chunk_end);
    for_each_decay_range(n, no_decay, n_no_decay, [&](int64_t begin, int64_t end, bool decay) {
      const int64_t o = begin > chunk_begin ? begin : chunk_begin;
      const int64_t e = end < chunk_end ? end : chunk_end;
      if (o < e)
        k.sgd_update(param + o, g + (o - chunk_begin), c.momentum == 0.0f ? nullptr : velocity + o, e - o,
                     steps[decay]);
    });
  });
}

}  // namespace customml::cpu
