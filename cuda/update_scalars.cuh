#pragma once
// Defines: GradientScaling, how the optimizer update kernels read their gradient under
// UpdateScalars (backend.h): scaled as scale_by_kernel and then clip_scale_kernel would
// have scaled it in place, each product in double rounded to float, so the update gives
// their bits without their passes. Device functions only: any kernel file may include it.

#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

struct GradientScaling {
  double unscale = 1.0, clip = 1.0;
  bool unscales = false, clips = false;
  // Reads the factors from device memory (once per thread, before the element loop).
  __device__ __forceinline__ explicit GradientScaling(const UpdateScalars& u) {
    if (u.unscale) {
      unscale = *u.unscale;
      unscales = true;
    }
    if (u.norm) {
      clip = static_cast<double>(u.max_norm) / (*u.norm + 1e-6);
      clips = clip < 1.0;
    }
  }
  __device__ __forceinline__ float operator()(float g) const {
    if (unscales) g = static_cast<float>(g * unscale);
    if (clips) g = static_cast<float>(g * clip);
    return g;
  }
};

}  // namespace customml::CUSTOMML_CUDA_NS
