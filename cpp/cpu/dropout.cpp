// Inverted dropout on the CPU, its mask drawn from Philox by element index so that
// the backward pass (and any device) regenerates it instead of storing it.

#include "cpu/cpu_backend.h"
#include "cpu/elementwise.h"
#include "random.h"

namespace customml::cpu {

// x: (n) -> y: (n) = keep_i ? x_i / (1 - rate) : 0, keep_i = uniform(seed, stream, first + i) >= rate
void CpuBackend::dropout(float* y, const float* x, int64_t n, float rate, uint64_t seed, uint64_t stream,
                         uint64_t first, const StepState* gate, uint64_t per_step) {
  if (gate) stream += static_cast<uint64_t>(gate->step) * per_step;
  elementwise().dropout(y, x, n, rate, seed, stream, first);
}

// The specification: Philox4x32-10 one counter block (4 elements) at a time; element
// first + i of the mask is word (first + i) % 4 of block (first + i) / 4.
void dropout_portable(float* y, const float* x, int64_t n, float rate, uint64_t seed, uint64_t stream, uint64_t first) {
  const float scale = 1.0f / (1.0f - rate);
  const uint64_t end = first + static_cast<uint64_t>(n);
  for (uint64_t base = first / 4 * 4; base < end; base += 4) {
    const Philox4 r = philox4x32_10(seed, stream, base / 4);
    for (uint64_t j = 0; j < 4; ++j) {
      if (base + j < first || base + j >= end) continue;
      const int64_t i = static_cast<int64_t>(base + j - first);
      y[i] = uniform_from_bits(r.v[j]) >= rate ? x[i] * scale : 0.0f;
    }
  }
}

}  // namespace customml::cpu
