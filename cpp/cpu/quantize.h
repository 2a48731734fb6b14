#pragma once
// Defines: the quantize family's row kernel, its variants and their run-time selection.

#include <cstdint>

#include "cpu/isa.h"
#include "private_api.h"

namespace customml::cpu {

// x: (n) -> q: (n) codes clamp(round_half_even(x / scale) + zero, lo, hi) as int8 (i8) or
// uint8, with one scale and zero point (scale[0], zero[0]) or one per column (scale[j],
// zero[j]); zero may be null (0). Every variant divides and rounds as the portable one, so
// their codes are the same.
using QuantizeRowFn = void (*)(void* q, bool i8, const float* x, int64_t n, const float* scale, const int32_t* zero,
                               bool per_column, int32_t lo, int32_t hi);

void select_quantize(IsaLevel level);
CUSTOMML_PRIVATE_API const char* quantize_variant();
QuantizeRowFn quantize_row_kernel();

void f32_quantize__portable(void* q, bool i8, const float* x, int64_t n, const float* scale, const int32_t* zero,
                            bool per_column, int32_t lo, int32_t hi);
#ifdef CUSTOMML_X86_KERNELS
void f32_quantize__avx512(void* q, bool i8, const float* x, int64_t n, const float* scale, const int32_t* zero,
                          bool per_column, int32_t lo, int32_t hi);
#endif

}  // namespace customml::cpu
