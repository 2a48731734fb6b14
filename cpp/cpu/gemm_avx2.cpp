// f32_gemm__avx2_6x16: AVX2 + FMA microkernel, 6 rows x 16 columns (12 ymm
// accumulators, 2 for B, 1 broadcast of A: 15 of the 16 registers).

#include <immintrin.h>

#include "cpu/gemm_driver.h"

namespace customml::cpu {
namespace {

constexpr int kMr = 6;
constexpr int kNr = 16;

void micro_avx2(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool accumulate) {
  __m256 acc[kMr][2];
#pragma GCC unroll 6
  for (int i = 0; i < kMr; ++i) {
    acc[i][0] = accumulate ? _mm256_loadu_ps(c + i * ldc) : _mm256_setzero_ps();
    acc[i][1] = accumulate ? _mm256_loadu_ps(c + i * ldc + 8) : _mm256_setzero_ps();
  }
  for (int64_t p = 0; p < kc; ++p) {
    const __m256 b0 = _mm256_load_ps(b + p * kNr);
    const __m256 b1 = _mm256_load_ps(b + p * kNr + 8);
#pragma GCC unroll 6
    for (int i = 0; i < kMr; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + p * kMr + i);
      acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < kMr; ++i) {
    _mm256_storeu_ps(c + i * ldc, acc[i][0]);
    _mm256_storeu_ps(c + i * ldc + 8, acc[i][1]);
  }
}

// One row of C in chunks of 32 columns (4 accumulators); the last partial chunk of
// 8, then single columns with a scalar fused multiply-add, which rounds
// as the vector one does.
void row_avx2(int64_t k, const float* a, int64_t a_cs, const float* b, int64_t b_rs, float* c, int64_t n) {
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(),
           acc3 = _mm256_setzero_ps();
    for (int64_t p = 0; p < k; ++p) {
      const __m256 ap = _mm256_set1_ps(a[p * a_cs]);
      const float* bp = b + p * b_rs + j;
      acc0 = _mm256_fmadd_ps(ap, _mm256_loadu_ps(bp), acc0);
      acc1 = _mm256_fmadd_ps(ap, _mm256_loadu_ps(bp + 8), acc1);
      acc2 = _mm256_fmadd_ps(ap, _mm256_loadu_ps(bp + 16), acc2);
      acc3 = _mm256_fmadd_ps(ap, _mm256_loadu_ps(bp + 24), acc3);
    }
    _mm256_storeu_ps(c + j, acc0);
    _mm256_storeu_ps(c + j + 8, acc1);
    _mm256_storeu_ps(c + j + 16, acc2);
    _mm256_storeu_ps(c + j + 24, acc3);
  }
  for (; j + 8 <= n; j += 8) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t p = 0; p < k; ++p)
      acc = _mm256_fmadd_ps(_mm256_set1_ps(a[p * a_cs]), _mm256_loadu_ps(b + p * b_rs + j), acc);
    _mm256_storeu_ps(c + j, acc);
  }
  for (; j < n; ++j) {
    float acc = 0.0f;
    for (int64_t p = 0; p < k; ++p) acc = __builtin_fmaf(a[p * a_cs], b[p * b_rs + j], acc);
    c[j] = acc;
  }
}

}  // namespace

void f32_gemm__avx2_6x16(const GemmArgs& args, const GemmWorkspace& ws) {
  gemm_blocked<kMr, kNr>(args, ws, micro_avx2, row_avx2);
}

}  // namespace customml::cpu
