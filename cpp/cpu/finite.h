#pragma once
// Defines: first_nonfinite, the one-pass check for NaN and infinity that fit runs over
// its host inputs (x, validation x, regression targets, sample weights).

#include <cstdint>

#include "private_api.h"

namespace customml::cpu {

// x: (n) f32, host memory -> the flat index of the first NaN or +-inf, or -1 when every
// element is finite. The active ISA level's kernel (ElementwiseKernels::first_nonfinite),
// large arrays split over the thread pool; reads x once and allocates nothing per element.
CUSTOMML_PRIVATE_API int64_t first_nonfinite(const float* x, int64_t n);

}  // namespace customml::cpu
