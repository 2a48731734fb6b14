// bf16_gemm__avx512_4x64: AVX-512 without the bf16 instructions, 4 rows x 4 panels of 16
// columns (16 zmm accumulators). Each weight dword is split into its two bf16 values widened
// to float32 (the high half masked, the low half shifted up), and each pair element is one
// vfmadd, odd then even: the order and single rounding of vdpbf16ps. Its flush to zero is
// MXCSR.FTZ, set around the sums only (the caller's state is restored before the epilogue,
// which rounds as the portable one does).

#include <immintrin.h>

#include "cpu/gemm_bf16_driver.h"

namespace customml::cpu {
namespace {

struct Avx512Bf16Convert {
  static constexpr int kMr = 4;
  static constexpr int kMaxPanels = 4;
  static constexpr int kAPerPair = 2;
  using AType = float;

  template <int R, int NP>
  static void micro(int64_t pairs, const float* a, int64_t lda, const uint32_t* b, int64_t stride, float* tile) {
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | _MM_FLUSH_ZERO_ON);
    const __m512i high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
    __m512 acc[R][NP];
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < NP; ++q) acc[r][q] = _mm512_setzero_ps();
    for (int64_t p = 0; p < pairs; ++p) {
      __m512 w_odd[NP], w_even[NP];
      for (int q = 0; q < NP; ++q) {
        const __m512i v = _mm512_loadu_si512(b + q * stride + p * kBf16PanelCols);
        w_odd[q] = _mm512_castsi512_ps(_mm512_and_si512(v, high));
        w_even[q] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
      }
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m512 odd = _mm512_set1_ps(a[r * lda + 2 * p + 1]);
        for (int q = 0; q < NP; ++q) acc[r][q] = _mm512_fmadd_ps(odd, w_odd[q], acc[r][q]);
        const __m512 even = _mm512_set1_ps(a[r * lda + 2 * p]);
        for (int q = 0; q < NP; ++q) acc[r][q] = _mm512_fmadd_ps(even, w_even[q], acc[r][q]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < NP; ++q) _mm512_storeu_ps(tile + r * NP * kBf16PanelCols + q * kBf16PanelCols, acc[r][q]);
    _mm_setcsr(csr);
  }
};

}  // namespace

void bf16_gemm__avx512_4x64(const GemmBf16Args& args) { gemm_bf16_blocked<Avx512Bf16Convert>(args); }

}  // namespace customml::cpu
