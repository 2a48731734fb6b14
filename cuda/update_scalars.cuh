#pragma once
// Defines: GradientScaling, how the optimizer update kernels read their gradient under
// UpdateScalars (backend.h): scaled as scale_by_kernel, the penalty's gradient added as
// kernel_penalties_kernel and then scaled as clip_scale_kernel would have done it in place,
// each product in double rounded to float, so the update gives their bits without their
// passes. Device functions only: any kernel file may include it.

#include "cuda/common.cuh"
#include "cuda/penalty.cuh"

namespace customml::CUSTOMML_CUDA_NS {

struct GradientScaling {
  double unscale = 1.0, clip = 1.0;
  bool unscales = false, clips = false;
  const UpdateScalars& spans;  // the launch's parameters: the penalty spans read in place
  // Reads the factors from device memory (once per thread, before the element loop).
  __device__ __forceinline__ explicit GradientScaling(const UpdateScalars& u) : spans(u) {
    if (u.unscale) {
      unscale = *u.unscale;
      unscales = true;
    }
    if (u.norm) {
      clip = static_cast<double>(u.max_norm) / (*u.norm + 1e-6);
      clips = clip < 1.0;
    }
  }
  // The gradient g of element i of the update, whose parameter is w.
  __device__ __forceinline__ float operator()(float g, float w, int64_t i) const {
    if (unscales) g = static_cast<float>(g * unscale);
    CUSTOMML_UNROLL
    for (int k = 0; k < kUpdatePenaltySpans; ++k)  // constant indices: no local copy of the spans
      if (k < spans.penalty_count && i >= spans.penalties[k].begin && i < spans.penalties[k].end)
        g += penalty_gradient(spans.penalties[k].l1, spans.penalties[k].l2, w);
    if (clips) g = static_cast<float>(g * clip);
    return g;
  }
};

}  // namespace customml::CUSTOMML_CUDA_NS
