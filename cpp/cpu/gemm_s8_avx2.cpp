// s8_gemm__avx2_6x16: AVX2 microkernel, 6 rows x one 16-column panel, in two passes of
// 8 columns: 12 ymm accumulators, 2 for B, 1 broadcast of A and 1 product. The 6-row tile's
// loop is inline assembly (GCC and Clang): from intrinsics GCC issues every vpmaddwd of a
// group before the adds, which needs a register per product, so more than 3 rows spilled
// an accumulator (the store-load round trip each group made the kernel 2x slower), and the
// 3-row tile that fitted sign-extended each weight vector for 3 rows instead of 6. The
// assembly took 1024 x 784 x 256 from 157 to 187 Gop/s (72% -> 85% of the vpmaddwd peak on
// Zen 5). Edge tiles (fewer rows: batch 1, a chunk's last rows) and other compilers run
// the intrinsics loop.
// vpmaddubsw would multiply u8 by s8 in one step but saturates the int16 sum of a pair
// (255 * 127 * 2 > 32767), so A is widened to int16 when packed, B is sign-extended per
// load, and vpmaddwd sums pairs of products exactly into int32.

#include <immintrin.h>

#include "cpu/gemm_s8_driver.h"

namespace customml::cpu {
namespace {

#ifdef __GNUC__
// Rows 0-5 of a 6-row tile, columns 8 h .. 8 h + 7 (b at the half's first byte, out at
// the tile's column 8 h), summed over every group: 12 accumulators (ymm0-11), the two
// sign-extended weight vectors (ymm12-13), one broadcast of A (ymm14) and one product
// (ymm15), each product added as soon as it is made.
#define S8_AVX2_ROW(off, acc0, acc1)          \
  "vpbroadcastq " off                         \
  "(%[a]), %%ymm14\n\t"                       \
  "vpmaddwd %%ymm12, %%ymm14, %%ymm15\n\t"    \
  "vpaddd %%ymm15, %%ymm" acc0 ", %%ymm" acc0 \
  "\n\t"                                      \
  "vpmaddwd %%ymm13, %%ymm14, %%ymm15\n\t"    \
  "vpaddd %%ymm15, %%ymm" acc1 ", %%ymm" acc1 "\n\t"
// hadd gives columns (0 1 4 5 | 2 3 6 7); the 64-bit permute puts them in order.
#define S8_AVX2_FOLD(acc0, acc1, off)                \
  "vphaddd %%ymm" acc1 ", %%ymm" acc0 ", %%ymm" acc0 \
  "\n\t"                                             \
  "vpermq $0xD8, %%ymm" acc0 ", %%ymm" acc0          \
  "\n\t"                                             \
  "vmovdqu %%ymm" acc0 ", " off "(%[out])\n\t"

inline void s8_avx2_6rows_half(int64_t groups, const int16_t* a, const int8_t* b, int32_t* out) {
  __asm__ volatile(
      "vpxor %%xmm0, %%xmm0, %%xmm0\n\tvpxor %%xmm1, %%xmm1, %%xmm1\n\tvpxor %%xmm2, %%xmm2, %%xmm2\n\t"
      "vpxor %%xmm3, %%xmm3, %%xmm3\n\tvpxor %%xmm4, %%xmm4, %%xmm4\n\tvpxor %%xmm5, %%xmm5, %%xmm5\n\t"
      "vpxor %%xmm6, %%xmm6, %%xmm6\n\tvpxor %%xmm7, %%xmm7, %%xmm7\n\tvpxor %%xmm8, %%xmm8, %%xmm8\n\t"
      "vpxor %%xmm9, %%xmm9, %%xmm9\n\tvpxor %%xmm10, %%xmm10, %%xmm10\n\tvpxor %%xmm11, %%xmm11, %%xmm11\n\t"
      "1:\n\t"
      "vpmovsxbw (%[b]), %%ymm12\n\t"
      "vpmovsxbw 16(%[b]), %%ymm13\n\t"
      S8_AVX2_ROW("0", "0", "1") S8_AVX2_ROW("8", "2", "3") S8_AVX2_ROW("16", "4", "5")
      S8_AVX2_ROW("24", "6", "7") S8_AVX2_ROW("32", "8", "9") S8_AVX2_ROW("40", "10", "11")
      "add $64, %[b]\n\t"
      "add $48, %[a]\n\t"
      "dec %[g]\n\t"
      "jnz 1b\n\t"
      S8_AVX2_FOLD("0", "1", "0") S8_AVX2_FOLD("2", "3", "64") S8_AVX2_FOLD("4", "5", "128")
      S8_AVX2_FOLD("6", "7", "192") S8_AVX2_FOLD("8", "9", "256") S8_AVX2_FOLD("10", "11", "320")
      : [a] "+r"(a), [b] "+r"(b), [g] "+r"(groups)
      : [out] "r"(out)
      : "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
}
#endif

struct Avx2S8 {
  static constexpr int kMr = 6;
  static constexpr int kMaxPanels = 1;
  static constexpr bool kPacksA = true;
  using AType = int16_t;

  // tile (R, 16): each accumulator holds 4 columns as 2 partial sums (k pairs 0-1 and
  // 2-3 of every group), folded by one hadd + permute at the end.
  template <int R, int NP>
  static void micro(int64_t groups, const int16_t* a, int64_t lda, const int8_t* b, int64_t stride, int32_t* tile) {
#ifdef __GNUC__
    if constexpr (R == 6) {
      for (int half = 0; half < 2; ++half) s8_avx2_6rows_half(groups, a, b + half * 32, tile + half * 8);
      return;
    }
#endif
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

void s8_gemm__avx2_6x16(const GemmS8Args& args) { gemm_s8_blocked<Avx2S8>(args); }

}  // namespace customml::cpu
