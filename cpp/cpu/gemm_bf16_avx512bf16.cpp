// bf16_gemm__avx512bf16_6x64: AVX512-BF16, 6 rows x 4 panels of 16 columns (24 zmm
// accumulators, 4 for the weights, 1 broadcast of x). vdpbf16ps multiplies a pair of bf16 of
// x by a pair of a column and adds both exact products to the float32 lane, odd then even,
// each add rounded to nearest even with denormals read as zero and flushed to zero: the
// arithmetic gemm_bf16.h specifies, one instruction a pair. A row's pair is one dword of the
// converted chunk, broadcast as it is.

#include <immintrin.h>

#include "cpu/gemm_bf16_driver.h"

namespace customml::cpu {
namespace {

struct Avx512Bf16 {
  static constexpr int kMr = 6;
  static constexpr int kMaxPanels = 4;
  static constexpr int kAPerPair = 1;
  using AType = uint32_t;

  template <int R, int NP>
  static void micro(int64_t pairs, const uint32_t* a, int64_t lda, const uint32_t* b, int64_t stride, float* tile) {
    __m512 acc[R][NP];
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < NP; ++q) acc[r][q] = _mm512_setzero_ps();
    for (int64_t p = 0; p < pairs; ++p) {
      __m512bh w[NP];
      for (int q = 0; q < NP; ++q) w[q] = (__m512bh)_mm512_loadu_si512(b + q * stride + p * kBf16PanelCols);
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r) {
        const __m512bh x = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[r * lda + p]));
        for (int q = 0; q < NP; ++q) acc[r][q] = _mm512_dpbf16_ps(acc[r][q], x, w[q]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < NP; ++q) _mm512_storeu_ps(tile + r * NP * kBf16PanelCols + q * kBf16PanelCols, acc[r][q]);
  }
};

}  // namespace

void bf16_gemm__avx512bf16_6x64(const GemmBf16Args& args) { gemm_bf16_blocked<Avx512Bf16>(args); }

}  // namespace customml::cpu
