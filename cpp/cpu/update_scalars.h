#pragma once
// Defines: ScaledGradient, how the CPU optimizer updates read their gradient under
// UpdateScalars (backend.h): each chunk's gradient scaled into a per-thread copy by the
// scale kernel, as scale_by and clip_by_global_norm would scale the gradient in place, so
// the fused update gives their bits.

#include <cstdint>
#include <vector>

#include "backend.h"
#include "cpu/elementwise.h"

namespace customml::cpu {

class ScaledGradient {
 public:
  ScaledGradient(const float* grad, const UpdateScalars& s) : grad_(grad) {
    if (s.unscale) {
      unscale_ = *s.unscale;
      scaled_ = true;
    }
    if (s.norm) {
      clip_ = static_cast<double>(s.max_norm) / (*s.norm + 1e-6);
      if (clip_ < 1.0) scaled_ = true;
    }
  }
  // The gradient of elements [begin, end), from element begin on.
  const float* chunk(int64_t begin, int64_t end) const {
    if (!scaled_) return grad_ + begin;
    thread_local std::vector<float> copy;  // grown once per thread, then reused
    copy.assign(grad_ + begin, grad_ + end);
    const ElementwiseKernels& k = elementwise();
    if (unscale_ != 1.0) k.scale(copy.data(), end - begin, unscale_);
    if (clip_ < 1.0) k.scale(copy.data(), end - begin, clip_);
    return copy.data();
  }

 private:
  const float* grad_;
  double unscale_ = 1.0, clip_ = 1.0;
  bool scaled_ = false;
};

}  // namespace customml::cpu
