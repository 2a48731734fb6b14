// s8_gemm__avx2_3x16: AVX2 microkernel, 3 rows x one 16-column panel, in two passes of
// 8 columns: 6 ymm accumulators, 2 for B, 3 broadcasts of A and 6 products, since GCC
// issues every vpmaddwd of a group before the adds; at 4 or 6 rows that spills an
// accumulator, and the store-load round trip each group made the kernel 2x slower.
// vpmaddubsw would multiply u8 by s8 in one step but saturates the int16 sum of a pair
// (255 * 127 * 2 > 32767), so A is widened to int16 when packed, B is sign-extended per
// load, and vpmaddwd sums pairs of products exactly into int32.

#include <immintrin.h>

#include "cpu/gemm_s8_driver.h"

namespace customml::cpu {
namespace {

struct Avx2S8 {
  static constexpr int kMr = 3;
  static constexpr int kMaxPanels = 1;
  static constexpr bool kPacksA = true;
  using AType = int16_t;

  // tile (R, 16): each accumulator holds 4 columns as 2 partial sums (k pairs 0-1 and
  // 2-3 of every group), folded by one hadd + permute at the end.
  template <int R, int NP>
  static void micro(int64_t groups, const int16_t* a, int64_t lda, const int8_t* b, int64_t stride, int32_t* tile) {
    for (int half = 0; half < 2; ++half) {
      __m256i acc[R][2];
      for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
      const int8_t* bh = b + half * 32;
      for (int64_t g = 0; g < groups; ++g) {
        const __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bh + g * 64)));
        const __m256i b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bh + g * 64 + 16)));
#pragma GCC unroll 3
        for (int r = 0; r < R; ++r) {
          int64_t a4;
          std::memcpy(&a4, a + (g * R + r) * 4, sizeof(a4));
          const __m256i av = _mm256_set1_epi64x(a4);
          acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(av, b0));
          acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(av, b1));
        }
      }
      for (int r = 0; r < R; ++r) {
        // hadd gives columns (0 1 4 5 | 2 3 6 7); the 64-bit permute puts them in order.
        const __m256i sums = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][0], acc[r][1]), 0xD8);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(tile + r * kS8PanelCols + half * 8), sums);
      }
    }
  }
};

}  // namespace

void s8_gemm__avx2_3x16(const GemmS8Args& args) { gemm_s8_blocked<Avx2S8>(args); }

}  // namespace customml::cpu
