// Adam / AdamW (with optional amsgrad) on the CPU: one pass reading each parameter,
// gradient and moment once.

#include <cmath>

#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"
#include "cpu/thread_pool.h"
#include "cpu/update_scalars.h"

namespace customml::cpu {

// param, grad, m, v: (n); vmax: (n) when amsgrad, else null. As torch.optim.Adam /
// AdamW: Adam adds wd p to the gradient (L2); AdamW decays p by lr wd first
// (decoupled). m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
// p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
void CpuBackend::adam_update(float* param, const float* grad, float* m, float* v, float* vmax, int64_t n,
                             const Segment* no_decay, int64_t n_no_decay, const AdamConfig& c, const StepState* gate,
                             const UpdateScalars& scalars) {
  if (gate && gate->skip != 0.0) return;
  const float lr = scalars.lr ? *scalars.lr : c.lr;
  const AdamBias bias = adam_bias(lr, c.beta1, c.beta2, gate ? gate->step : static_cast<double>(c.step));
  const ElementwiseKernels& k = elementwise();
  AdamStep steps[2];  // [decay]
  for (int decay = 0; decay < 2; ++decay) {
    const float wd = decay ? c.weight_decay : 0.0f;
    AdamStep& s = steps[decay];
    s.shrink = c.decoupled ? 1.0f - lr * wd : 1.0f;
    s.l2 = c.decoupled ? 0.0f : wd;
    s.beta1 = c.beta1;
    s.beta2 = c.beta2;
    s.step_size = bias.step_size;
    s.bias2_sqrt = bias.bias2_sqrt;
    s.eps = c.eps;
  }
  // Chunks of the whole buffer, each cut at the decay ranges, rather than chunks of each
  // range: an MLP's ranges (a layer's kernel, its bias) are each below the size that is
  // threaded, while the whole is not. Every element's update is the same either way.
  const ScaledGradient scaled(grad, scalars);
  for_each_chunk(n, [&](int64_t, int64_t chunk_begin, int64_t chunk_end) {
    const float* g = scaled.chunk(chunk_begin, chunk_end);
    for_each_decay_range(n, no_decay, n_no_decay, [&](int64_t begin, int64_t end, bool decay) {
      const int64_t o = begin > chunk_begin ? begin : chunk_begin;
      const int64_t e = end < chunk_end ? end : chunk_end;
      if (o < e)
        k.adam_update(param + o, g + (o - chunk_begin), m + o, v + o, vmax ? vmax + o : nullptr, e - o, steps[decay]);
    });
  });
}

}  // namespace customml::cpu
