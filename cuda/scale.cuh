#pragma once
// Defines: scale_kernel and scale_by_kernel, a flat buffer scaled in place in float4s
// (global-norm clipping's second pass, the fp16 loss scale).

#include <cstdint>

#include "cuda/common.cuh"

namespace customml::CUSTOMML_CUDA_NS {

// x (n) *= coef, in double: the coefficient may be below float32's normal range.
__global__ void scale_kernel(float* x, int64_t n, Vec4Split split, double coef) { scale_elements(x, n, split, coef); }

// x (n) *= *coef, the coefficient in device memory (fp16's loss scale, decided there).
__global__ void scale_by_kernel(float* x, int64_t n, Vec4Split split, const double* coef) {
  scale_elements(x, n, split, *coef);
}

}  // namespace customml::CUSTOMML_CUDA_NS
