#pragma once
// Defines: StepState, what fp16 training keeps of a step on the device (the step count, the
// dynamic loss scale, and whether this step's gradients overflowed), so that a step is
// skipped there without the host waiting to know; update_loss_scale, the decision; and
// adam_bias, Adam's bias corrections for a step count, which the device then computes from
// its own count. One definition each for the CPU and CUDA kernels (and so their emulation).

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace customml {

// Doubles throughout: counts stay exact below 2^53, and the kernels read one type.
struct StepState {
  double step;        // optimizer steps applied: Adam's t, and the dropout streams
  double scale;       // the loss scale the next backward pass multiplies by
  double good_steps;  // finite steps since the scale last changed
  double skip;        // 1 when this step's gradients overflowed: the updates do nothing
  double unscale;     // 1 / the scale this step's gradients carry
};

// After the backward pass, from the gradients' global norm (computed with the scale):
// finite, the step counts and its gradients are to be multiplied by unscale, and
// growth_interval finite steps in a row double the scale; infinite or NaN, the step is
// skipped and the scale halved (torch.cuda.amp.GradScaler's rule).
CUSTOMML_HD inline void update_loss_scale(StepState& s, double norm, int64_t growth_interval) {
  if (norm <= DBL_MAX) {  // false for inf and NaN; a norm is never negative
    s.unscale = 1.0 / s.scale;
    s.step += 1.0;
    s.skip = 0.0;
    s.good_steps += 1.0;
    if (s.good_steps == static_cast<double>(growth_interval)) {
      s.scale *= 2.0;
      s.good_steps = 0.0;
    }
  } else {
    s.scale *= 0.5;
    s.good_steps = 0.0;
    s.skip = 1.0;
  }
}

// Adam's step size lr / (1 - beta1^t) and sqrt(1 - beta2^t) for the 1-based step t, each in
// double and rounded once to float.
struct AdamBias {
  float step_size;
  float bias2_sqrt;
};
CUSTOMML_HD inline AdamBias adam_bias(float lr, float beta1, float beta2, double t) {
  const float bias1 = static_cast<float>(1.0 - pow(static_cast<double>(beta1), t));
  return {lr / bias1, static_cast<float>(sqrt(1.0 - pow(static_cast<double>(beta2), t)))};
}

}  // namespace customml
