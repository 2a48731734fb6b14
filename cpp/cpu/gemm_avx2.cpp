// f32_gemm__avx2_6x16: AVX2 + FMA microkernel, 6 rows x 16 columns (12 ymm
// accumulators, 2 for B, 1 broadcast of A: 15 of the 16 registers), and the small-m
// kernel for 1-5 rows that reads B in place.

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

// Panels of 16 columns a small-m block of M rows computes at once: 8-12 independent
// accumulators (2 P M) to cover the FMA latency, within the 16 registers with the
// loads of B and a broadcast of A (B may also feed the multiply-add from memory).
template <int M>
constexpr int small_m_panels() {
  return M == 1 ? 4 : M <= 3 ? 2 : 1;
}

// Lanes 0 .. count - 1 set (all for count >= 8, none for count <= 0).
inline __m256i first_lanes(int64_t count) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count < 8 ? (count < 0 ? 0 : count) : 8)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// C rows 0..M-1, columns j0 .. j0 + P 16 - 1 (fewer, cols, when kTail: then P = 1 and
// B is read under the same mask as C, since a row-major B ends at column n).
// a: (M, k) strided  B: panels of 16 columns  bias: (n) -> c: (M, ldc)
template <int M, int P, bool kTail>
void small_m_block(const GemmArgs& g, const BPanels& bp, int64_t j0, int64_t cols) {
  constexpr int kV = 2 * P;  // 8-float vectors per row
  __m256i mask[kV];
#pragma GCC unroll 8
  for (int v = 0; v < kV; ++v) mask[v] = first_lanes(kTail ? cols - 8 * v : 8);
  const float* b = bp.base + (j0 / kNr) * bp.panel_stride;
  __m256 acc[M][kV];
#pragma GCC unroll 5
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < kV; ++v) acc[i][v] = _mm256_setzero_ps();
  for (int64_t p = 0; p < g.k; ++p) {
    __m256 bv[kV];
#pragma GCC unroll 8
    for (int v = 0; v < kV; ++v) {
      const float* src = b + (v / 2) * bp.panel_stride + p * bp.row_stride + (v % 2) * 8;
      bv[v] = kTail ? _mm256_maskload_ps(src, mask[v]) : _mm256_loadu_ps(src);
    }
#pragma GCC unroll 5
    for (int i = 0; i < M; ++i) {
      const __m256 ai = _mm256_broadcast_ss(g.a + i * g.a_rs + p * g.a_cs);
#pragma GCC unroll 8
      for (int v = 0; v < kV; ++v) acc[i][v] = _mm256_fmadd_ps(ai, bv[v], acc[i][v]);
    }
  }
  // Bias and relu in registers, as epilogue() computes them (c + b, then act::relu: c
  // where !(c <= 0), NaN included, else +0; max(c, 0) would return 0 for a NaN c); the
  // rest goes through epilogue().
  const bool fused = g.preact == nullptr && (g.act == Activation::identity || g.act == Activation::relu);
  const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 5
  for (int i = 0; i < M; ++i) {
    float* c = g.c + i * g.ldc + j0;
#pragma GCC unroll 8
    for (int v = 0; v < kV; ++v) {
      __m256 r = acc[i][v];
      if (fused && g.bias)
        r = _mm256_add_ps(
            r, kTail ? _mm256_maskload_ps(g.bias + j0 + 8 * v, mask[v]) : _mm256_loadu_ps(g.bias + j0 + 8 * v));
      if (fused && g.act == Activation::relu) r = _mm256_and_ps(_mm256_cmp_ps(r, zero, _CMP_NLE_UQ), r);
      if (kTail) {
        _mm256_maskstore_ps(c + 8 * v, mask[v], r);
      } else {
        _mm256_storeu_ps(c + 8 * v, r);
      }
    }
  }
  if (!fused) epilogue(g, 0, j0, M, cols);
}

template <int M>
void small_m_rows(const GemmArgs& g, const BPanels& bp) {
  constexpr int P = small_m_panels<M>();
  small_m_columns<P, kNr>(
      g, [&](int64_t j) { small_m_block<M, P, false>(g, bp, j, P * kNr); },
      [&](int64_t j, int64_t cols) { small_m_block<M, 1, true>(g, bp, j, cols); });
}

// 1 <= m < kMr rows of C, B streamed once (see gemm_blocked).
void small_m_avx2(const GemmArgs& g, const BPanels& bp) {
  switch (g.m) {
    case 1: small_m_rows<1>(g, bp); break;
    case 2: small_m_rows<2>(g, bp); break;
    case 3: small_m_rows<3>(g, bp); break;
    case 4: small_m_rows<4>(g, bp); break;
    default: small_m_rows<5>(g, bp); break;
  }
}

static_assert(kMr == 6, "small_m_avx2 covers m = 1 .. kMr - 1");

}  // namespace

void f32_gemm__avx2_6x16(const GemmArgs& args, const GemmWorkspace& ws) {
  gemm_blocked<kMr, kNr>(args, ws, micro_avx2, small_m_avx2);
}

}  // namespace customml::cpu
