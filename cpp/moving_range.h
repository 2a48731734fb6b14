#pragma once
// Defines: update_moving_range, the moving input range of quantization-aware training and
// its asymmetric uint8 encoding, one definition for the CPU kernel and the CUDA kernel
// (and so its host emulation): the range and the codes training sees must be the ones
// the int8 plan will be given.

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace customml {

struct RangeEncoding {
  float scale;
  int32_t zero;
};

// range (lo, hi) float64 <- the batch's [lo, hi] (lo <= 0 <= hi) on the first batch, else
// an exponential moving average of the batch ranges (as PyTorch's
// MovingAverageMinMaxObserver: a stable range that still follows the weights); then the
// encoding customml.quantize.activation_encoding gives the range: scale = (hi - lo) / 255
// rounded to float32, zero the code of 0; an empty range takes scale 1, zero 0.
CUSTOMML_HD inline RangeEncoding update_moving_range(double* range, float lo, float hi, float momentum, bool first) {
  if (first) {
    range[0] = lo;
    range[1] = hi;
  } else {
    // Each product and sum rounded on its own (nvcc would fuse them into an FMA), so the
    // device keeps the host's bits.
#if defined(__CUDA_ARCH__)
    range[0] = __dadd_rn(__dmul_rn(momentum, range[0]), __dmul_rn(1.0 - momentum, lo));
    range[1] = __dadd_rn(__dmul_rn(momentum, range[1]), __dmul_rn(1.0 - momentum, hi));
#else
    range[0] = momentum * range[0] + (1.0 - momentum) * lo;
    range[1] = momentum * range[1] + (1.0 - momentum) * hi;
#endif
  }
  const float scale = static_cast<float>((range[1] - range[0]) / 255.0);
  if (!(scale > 0.0f)) return {1.0f, 0};
  float z = rintf(static_cast<float>(-range[0]) / scale);  // half to even, the default rounding
  // Clamped so that a NaN (an infinite range: inf / inf) becomes 0, never undefined behaviour.
  z = z > 0.0f ? z : 0.0f;
  z = z < 255.0f ? z : 255.0f;
  return {scale, static_cast<int32_t>(z)};
}

}  // namespace customml
