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

}  // namespace

void f32_gemm__avx512_12x32(const GemmArgs& args, const GemmWorkspace& ws) {
  gemm_blocked<kMr, kNr>(args, ws, micro_avx512);
}

}  // namespace customml::cpu
