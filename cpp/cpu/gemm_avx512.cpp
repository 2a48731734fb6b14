// f32_gemm__avx512_12x32: AVX-512 microkernel, 12 rows x 32 columns (24 zmm
// accumulators, 2 for B, 1 broadcast of A: 27 of the 32 registers), and the small-m
// kernel for 1-11 rows that reads B in place.

#include <immintrin.h>

#include "cpu/gemm_driver.h"

namespace customml::cpu {
namespace {

constexpr int kMr = 12;
constexpr int kNr = 32;

void micro_avx512(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool accumulate) {
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

// Panels of 32 columns a small-m block of M rows computes at once: at least 8
// independent accumulators (2 P M) to cover the FMA latency on both FMA pipes, at most
// 28, which leaves registers for the 2 P loads of B and a broadcast of A.
template <int M>
constexpr int small_m_panels() {
  return M <= 3 ? 4 : M <= 7 ? 2 : 1;
}

// C rows 0..M-1, columns j0 .. j0 + 16 kV - 1, kV 16-float vectors per row: 2 P for P
// whole panels; on the edge (kTail) cols of them, kV = 1 or 2, and B is read under the
// same mask as C, since a row-major B ends at column n.
// a: (M, k) strided  B: panels of 32 columns  bias: (n) -> c: (M, ldc)
template <int M, int kV, bool kTail>
void small_m_block(const GemmArgs& g, const BPanels& bp, int64_t j0, int64_t cols) {
  __mmask16 mask[kV];
#pragma GCC unroll 8
  for (int v = 0; v < kV; ++v) mask[v] = kTail ? first_lanes(cols - 16 * v) : static_cast<__mmask16>(0xFFFF);
  const float* b = bp.base + (j0 / kNr) * bp.panel_stride;
  __m512 acc[M][kV];
#pragma GCC unroll 11
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < kV; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < g.k; ++p) {
    __m512 bv[kV];
#pragma GCC unroll 8
    for (int v = 0; v < kV; ++v) {
      const float* src = b + (v / 2) * bp.panel_stride + p * bp.row_stride + (v % 2) * 16;
      bv[v] = kTail ? _mm512_maskz_loadu_ps(mask[v], src) : _mm512_loadu_ps(src);
    }
#pragma GCC unroll 11
    for (int i = 0; i < M; ++i) {
      const __m512 ai = _mm512_set1_ps(g.a[i * g.a_rs + p * g.a_cs]);
#pragma GCC unroll 8
      for (int v = 0; v < kV; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
    }
  }
  // Bias and relu in registers, as epilogue() computes them (c + b, then act::relu: c
  // where !(c <= 0), NaN included, else +0; max(c, 0) would return 0 for a NaN c); the
  // rest goes through epilogue().
  const bool fused = g.preact == nullptr && (g.act == Activation::identity || g.act == Activation::relu);
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 11
  for (int i = 0; i < M; ++i) {
    float* c = g.c + i * g.ldc + j0;
#pragma GCC unroll 8
    for (int v = 0; v < kV; ++v) {
      __m512 r = acc[i][v];
      if (fused && g.bias) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mask[v], g.bias + j0 + 16 * v));
      if (fused && g.act == Activation::relu) r = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(r, zero, _CMP_NLE_UQ), r);
      _mm512_mask_storeu_ps(c + 16 * v, mask[v], r);
    }
  }
  if (!fused) epilogue(g, 0, j0, M, cols);
}

template <int M>
void small_m_rows(const GemmArgs& g, const BPanels& bp) {
  constexpr int P = small_m_panels<M>();
  // An edge of at most 16 columns (a 10-class output layer) takes one vector per row.
  small_m_columns<P, kNr>(
      g, [&](int64_t j) { small_m_block<M, 2 * P, false>(g, bp, j, P * kNr); },
      [&](int64_t j, int64_t cols) {
        if (cols <= 16)
          small_m_block<M, 1, true>(g, bp, j, cols);
        else
          small_m_block<M, 2, true>(g, bp, j, cols);
      });
}

// 1 <= m < kMr rows of C, B streamed once (see gemm_blocked).
void small_m_avx512(const GemmArgs& g, const BPanels& bp) {
  switch (g.m) {
    case 1: small_m_rows<1>(g, bp); break;
    case 2: small_m_rows<2>(g, bp); break;
    case 3: small_m_rows<3>(g, bp); break;
    case 4: small_m_rows<4>(g, bp); break;
    case 5: small_m_rows<5>(g, bp); break;
    case 6: small_m_rows<6>(g, bp); break;
    case 7: small_m_rows<7>(g, bp); break;
    case 8: small_m_rows<8>(g, bp); break;
    case 9: small_m_rows<9>(g, bp); break;
    case 10: small_m_rows<10>(g, bp); break;
    default: small_m_rows<11>(g, bp); break;
  }
}

static_assert(kMr == 12, "small_m_avx512 covers m = 1 .. kMr - 1");

}  // namespace

void f32_gemm__avx512_12x32(const GemmArgs& args, const GemmWorkspace& ws) {
  gemm_blocked<kMr, kNr>(args, ws, micro_avx512, small_m_avx512);
}

}  // namespace customml::cpu
