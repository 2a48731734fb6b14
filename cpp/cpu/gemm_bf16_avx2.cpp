// bf16_gemm__avx2_4x16: AVX2 + FMA, 4 rows x one 16-column panel (8 ymm accumulators), each
// weight dword split into its two bf16 values widened to float32 and each pair element one
// vfmadd, odd then even, under MXCSR.FTZ: the arithmetic of bf16_gemm__avx512_4x64, 8
// columns a vector.

#include <immintrin.h>

#include "cpu/gemm_bf16_driver.h"

namespace customml::cpu {
namespace {

struct Avx2Bf16Convert {
  static constexpr int kMr = 4;
  static constexpr int kMaxPanels = 1;
  static constexpr int kAPerPair = 2;
  using AType = float;

  template <int R, int NP>
  static void micro(int64_t pairs, const float* a, int64_t lda, const uint32_t* b, int64_t stride, float* tile) {
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | _MM_FLUSH_ZERO_ON);
    const __m256i high = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
    __m256 acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t p = 0; p < pairs; ++p) {
      __m256 w_odd[2], w_even[2];
      for (int h = 0; h < 2; ++h) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + p * kBf16PanelCols + 8 * h));
        w_odd[h] = _mm256_castsi256_ps(_mm256_and_si256(v, high));
        w_even[h] = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
      }
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m256 odd = _mm256_broadcast_ss(a + r * lda + 2 * p + 1);
        acc[r][0] = _mm256_fmadd_ps(odd, w_odd[0], acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(odd, w_odd[1], acc[r][1]);
        const __m256 even = _mm256_broadcast_ss(a + r * lda + 2 * p);
        acc[r][0] = _mm256_fmadd_ps(even, w_even[0], acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(even, w_even[1], acc[r][1]);
      }
    }
    for (int r = 0; r < R; ++r) {
      _mm256_storeu_ps(tile + r * kBf16PanelCols, acc[r][0]);
      _mm256_storeu_ps(tile + r * kBf16PanelCols + 8, acc[r][1]);
    }
    _mm_setcsr(csr);
  }
};

}  // namespace

void bf16_gemm__avx2_4x16(const GemmBf16Args& args) { gemm_bf16_blocked<Avx2Bf16Convert>(args); }

}  // namespace customml::cpu
