// f32_quantize__avx512: 16 codes per step. The same IEEE division, clamp, magic-number
// rounding and conversion as the portable loop (quantize_math.h), lane by lane, so the codes
// are identical; a NaN clamps to lo as there (max/min return their second operand).

#include <immintrin.h>

#include "cpu/quantize.h"

namespace customml::cpu {

void f32_quantize__avx512(void* q, bool i8, const float* x, int64_t n, const float* scale, const int32_t* zero,
                          bool per_column, int32_t lo, int32_t hi) {
  const __m512 magic = _mm512_set1_ps(12582912.0f);
  const __m512i z0 = _mm512_set1_epi32(zero ? zero[0] : 0);
  const __m512 s0 = _mm512_set1_ps(scale[0]);
  const __m512i vlo = _mm512_set1_epi32(lo), vhi = _mm512_set1_epi32(hi);
  auto* out = static_cast<int8_t*>(q);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - j)) - 1u);
    // Lanes past n divide 0 by 1: nothing is stored from them.
    const __m512 s = per_column ? _mm512_mask_loadu_ps(_mm512_set1_ps(1.0f), m, scale + j) : s0;
    const __m512i z = per_column && zero ? _mm512_maskz_loadu_epi32(m, zero + j) : z0;
    __m512 v = _mm512_div_ps(_mm512_maskz_loadu_ps(m, x + j), s);
    // Clamp to [lo - zero, hi - zero] before rounding (to_code's order and NaN rule).
    v = _mm512_max_ps(v, _mm512_cvtepi32_ps(_mm512_sub_epi32(vlo, z)));
    v = _mm512_min_ps(v, _mm512_cvtepi32_ps(_mm512_sub_epi32(vhi, z)));
    const __m512 r = _mm512_sub_ps(_mm512_add_ps(v, magic), magic);
    const __m512i code = _mm512_add_epi32(_mm512_cvtps_epi32(r), z);
    // Codes lie in [lo, hi]: truncating to the low byte is the int8 / uint8 value.
    _mm512_mask_cvtepi32_storeu_epi8(out + j, m, code);
  }
  (void)i8;
}

}  // namespace customml::cpu
