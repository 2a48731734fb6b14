// s8_gemm__avx512vnni_6x64: AVX-512 VNNI microkernel, 6 rows x 4 panels of 16 columns
// (24 zmm accumulators, 4 for B, 1 broadcast of A). vpdpbusd multiplies 4 u8 of A by 4
// s8 of a column and adds the exact sum to an int32 lane: one packed group per
// instruction, no saturation (that is vpdpbusds). A's 4 codes of a group are contiguous in
// a row already, so the tile broadcasts them from the rows in place: packing A cost as much
// as a tenth of a 1024 x 784 x 256 product (it is redone for every call).

#include <immintrin.h>

#include "cpu/gemm_s8_driver.h"

namespace customml::cpu {
namespace {

struct Avx512VnniS8 {
  static constexpr int kMr = 6;
  static constexpr int kMaxPanels = 4;
  static constexpr bool kPacksA = false;
  using AType = uint8_t;

  template <int R, int NP>
  static void micro(int64_t groups, const uint8_t* a, int64_t lda, const int8_t* b, int64_t stride, int32_t* tile) {
    __m512i acc[R][NP];
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < NP; ++p) acc[r][p] = _mm512_setzero_si512();
    for (int64_t g = 0; g < groups; ++g) {
      __m512i bv[NP];
      for (int p = 0; p < NP; ++p) bv[p] = _mm512_loadu_si512(b + p * stride + g * 64);
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r) {
        int32_t a4;
        std::memcpy(&a4, a + r * lda + g * 4, sizeof(a4));
        const __m512i av = _mm512_set1_epi32(a4);
        for (int p = 0; p < NP; ++p) acc[r][p] = _mm512_dpbusd_epi32(acc[r][p], av, bv[p]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < NP; ++p) _mm512_storeu_si512(tile + r * NP * kS8PanelCols + p * kS8PanelCols, acc[r][p]);
  }
};

}  // namespace

void s8_gemm__avx512vnni_6x64(const GemmS8Args& args) { gemm_s8_blocked<Avx512VnniS8>(args); }

}  // namespace customml::cpu
