// f32_gemm__avx512_12x32: AVX-512 microkernel, 12 rows x 32 columns (24 zmm
// accumulators, 2 for B, 1 broadcast of A: 27 of the 32 registers).

#include <immintrin.h>

#include "cpu/gemm_driver.h"

namespace customml::cpu {
namespace {

constexpr int kMr = 12;
constexpr int kNr = 32;

void micro_avx512(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                  bool accumulate) {
  __m512 acc[kMr][2];
#pragma GCC unroll 12
  for (int i = 0; i < kMr; ++i) {
    acc[i][0] = accumulate ? _mm512_loadu_ps(c + i * ldc) : _mm512_setzero_ps();
    acc[i][1] = accumulate ? _mm512_loadu_ps(c + i * ldc + 16) : _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < kc; ++p) {
    const __m512 b0 = _mm512_load_ps(b + p * kNr);
    const __m512 b1 = _mm512_load_ps(b + p * kNr + 16);
#pragma GCC unroll 12
    for (int i = 0; i < kMr; ++i) {
      const __m512 ai = _mm512_set1_ps(a[p * kMr + i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < kMr; ++i) {
    _mm512_storeu_ps(c + i * ldc, acc[i][0]);
    _mm512_storeu_ps(c + i * ldc + 16, acc[i][1]);
  }
}

// One row of C in chunks of 64 columns (4 accumulators), the tail under a mask.
void row_avx512(int64_t k, const float* a, int64_t a_cs, const float* b, int64_t b_rs, float* c, int64_t n) {
  int64_t j = 0;
  for (; j + 64 <= n; j += 64) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(),
           acc3 = _mm512_setzero_ps();
    for (int64_t p = 0; p < k; ++p) {
      const __m512 ap = _mm512_set1_ps(a[p * a_cs]);
      const float* bp = b + p * b_rs + j;
      acc0 = _mm512_fmadd_ps(ap, _mm512_loadu_ps(bp), acc0);
      acc1 = _mm512_fmadd_ps(ap, _mm512_loadu_ps(bp + 16), acc1);
      acc2 = _mm512_fmadd_ps(ap, _mm512_loadu_ps(bp + 32), acc2);
      acc3 = _mm512_fmadd_ps(ap, _mm512_loadu_ps(bp + 48), acc3);
    }
    _mm512_storeu_ps(c + j, acc0);
    _mm512_storeu_ps(c + j + 16, acc1);
    _mm512_storeu_ps(c + j + 32, acc2);
    _mm512_storeu_ps(c + j + 48, acc3);
  }
  for (; j < n; j += 16) {
    const __mmask16 mask = n - j >= 16 ? static_cast<__mmask16>(0xFFFF)
                                       : static_cast<__mmask16>((1u << (n - j)) - 1u);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t p = 0; p < k; ++p)
      acc = _mm512_fmadd_ps(_mm512_set1_ps(a[p * a_cs]), _mm512_maskz_loadu_ps(mask, b + p * b_rs + j), acc);
    _mm512_mask_storeu_ps(c + j, mask, acc);
  }
}

}  // namespace

void f32_gemm__avx512_12x32(const GemmArgs& args, const GemmWorkspace& ws) {
  gemm_blocked<kMr, kNr>(args, ws, micro_avx512, row_avx512);
}

}  // namespace customml::cpu
