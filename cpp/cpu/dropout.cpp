// Inverted dropout on the CPU, its mask drawn from Philox by element index so that
// the backward pass (and any device) regenerates it instead of storing it.

#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"
#include "random.h"

namespace customml::cpu {

// x: (n) -> y: (n) = keep_i ? x_i / (1 - rate) : 0, keep_i = uniform(seed, stream, i) >= rate
void CpuBackend::dropout(float* y, const float* x, int64_t n, float rate, uint64_t seed, uint64_t stream,
                         const StepState* gate, uint64_t per_step) {
  if (gate) stream += static_cast<uint64_t>(gate->step) * per_step;
  elementwise().dropout(y, x, n, rate, seed, stream);
}

// The specification: Philox4x32-10 one counter block (4 elements) at a time.
void dropout_portable(float* y, const float* x, int64_t n, float rate, uint64_t seed, uint64_t stream) {
  const float scale = 1.0f / (1.0f - rate);
  for (int64_t base = 0; base < n; base += 4) {
    const Philox4 r = philox4x32_10(seed, stream, static_cast<uint64_t>(base / 4));
    const int64_t lanes = n - base < 4 ? n - base : 4;
    for (int64_t j = 0; j < lanes; ++j) {
      const bool keep = uniform_from_bits(r.v[j]) >= rate;
      y[base + j] = keep ? x[base + j] * scale : 0.0f;
    }
  }
}

}  // namespace customml::cpu
