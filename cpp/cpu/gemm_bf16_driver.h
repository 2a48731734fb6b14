#pragma once
// Defines: gemm_bf16_blocked, the bf16 GEMM driver shared by every variant: chunks of x rows
// rounded to bf16 once, column blocks of the pre-packed weight panels sized for L2, an
// R x (NP panels) microkernel into a float tile, and the fused bias + activation epilogue.
//
// Internal linkage and no standard-library templates, as gemm_driver.h: each ISA file
// includes it under its own compiler flags.

#include <cmath>
#include <cstdint>
#include <cstring>

#include "activation.h"
#include "cpu/gemm_bf16.h"
#include "cpu/vmath.h"

namespace customml::cpu {
namespace {

// Packed weight bytes one column block spans: every row tile of a chunk sweeps it, so it
// stays in L2 next to the converted rows (as gemm_s8's kS8BlockBytes).
constexpr int64_t kBf16BlockBytes = 256 * 1024;
// The widest microkernel tile, in columns (4 panels).
constexpr int64_t kBf16MaxTileCols = 64;

inline int64_t bf16_min(int64_t a, int64_t b) { return a < b ? a : b; }

// The accumulator's flush to zero (FTZ out): a result below the smallest normal becomes a
// zero of its sign; NaN and inf pass.
inline float bf16_ftz(float v) { return std::fabs(v) < 1.17549435e-38f ? std::copysign(0.0f, v) : v; }

// rows x k of x (leading dimension k) -> dst, each row ld elements: for AType uint32_t the
// bf16 pairs (x[2p] low, x[2p + 1] high), for float the bf16 values widened back; zero
// past k (the padding multiplies the weights' zero padding).
inline void bf16_convert_rows(uint32_t* dst, int64_t ld, const float* x, int64_t k, int64_t rows) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * k;
    uint32_t* d = dst + r * ld;
    const int64_t full = k / 2;
    for (int64_t p = 0; p < full; ++p)
      d[p] = static_cast<uint32_t>(bf16_from_float(xr[2 * p])) |
             (static_cast<uint32_t>(bf16_from_float(xr[2 * p + 1])) << 16);
    if (k % 2) d[full] = bf16_from_float(xr[k - 1]);
    for (int64_t p = bf16_pairs(k); p < ld; ++p) d[p] = 0;
  }
}

inline void bf16_convert_rows(float* dst, int64_t ld, const float* x, int64_t k, int64_t rows) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * k;
    float* d = dst + r * ld;
    for (int64_t i = 0; i < k; ++i) d[i] = bf16_to_float(bf16_from_float(xr[i]));
    for (int64_t i = k; i < ld; ++i) d[i] = 0.0f;
  }
}

// tile (rows, ld) -> y rows i0 .., columns j0 .. j0 + cols: + bias, then the activation.
// relu is x < 0 ? 0 : x, so NaN passes (as PyTorch's).
inline void bf16_epilogue(const GemmBf16Args& g, const float* tile, int64_t ld, int64_t i0, int64_t rows, int64_t j0,
                          int64_t cols) {
  for (int64_t t = 0; t < rows; ++t) {
    float* y = g.y + (i0 + t) * g.ldy + j0;
    const float* acc = tile + t * ld;
    if (g.bias) {
      const float* b = g.bias + j0;
      for (int64_t j = 0; j < cols; ++j) y[j] = acc[j] + b[j];
    } else {
      for (int64_t j = 0; j < cols; ++j) y[j] = acc[j];
    }
    switch (g.act) {
      case Activation::identity: break;
      case Activation::relu:
        for (int64_t j = 0; j < cols; ++j) y[j] = y[j] < 0.0f ? 0.0f : y[j];
        break;
      case Activation::sigmoid: vmath_map<vsigmoid>(y, y, cols); break;
      case Activation::tanh: vmath_map<vtanh>(y, y, cols); break;
      case Activation::gelu: vmath_map<vgelu>(y, y, cols); break;
    }
  }
}

// K::micro<R, NP> for the tile's actual rows (1 .. K::kMr) and panels (1 .. K::kMaxPanels).
template <class K, int R, int NP = K::kMaxPanels>
void bf16_tile_panels(int np, int64_t pairs, const typename K::AType* a, int64_t lda, const uint32_t* b, int64_t stride,
                      float* tile) {
  if constexpr (NP > 1) {
    if (np < NP) return bf16_tile_panels<K, R, NP - 1>(np, pairs, a, lda, b, stride, tile);
  }
  K::template micro<R, NP>(pairs, a, lda, b, stride, tile);
}

template <class K, int R = K::kMr>
void bf16_tile(int rows, int np, int64_t pairs, const typename K::AType* a, int64_t lda, const uint32_t* b,
               int64_t stride, float* tile) {
  if constexpr (R > 1) {
    if (rows < R) return bf16_tile<K, R - 1>(rows, np, pairs, a, lda, b, stride, tile);
  }
  bf16_tile_panels<K, R>(np, pairs, a, lda, b, stride, tile);
}

// K: kMr (rows per tile), kMaxPanels (16-column panels per tile), AType and kAPerPair
// (uint32_t, 1: x as bf16 pairs; float, 2: x as bf16 values widened) and micro<R, NP>(pairs, a (row 0), lda
// (AType elements a row), b (first panel), panel stride in dwords, tile (R, NP * 16)), which
// sums over pairs 0 .. pairs - 1 in the order of gemm_bf16.h.
template <class K>
void gemm_bf16_blocked(const GemmBf16Args& g) {
  if (g.m == 0 || g.n == 0) return;
  using AType = typename K::AType;
  const int64_t pairs = bf16_pairs(g.k), panels = bf16_panels(g.n), stride = bf16_panel_dwords(g.k);
  const int64_t lda = bf16_padded_pairs(g.k) * K::kAPerPair;
  int64_t block = kBf16BlockBytes / (stride * 4) / K::kMaxPanels * K::kMaxPanels;
  if (block < K::kMaxPanels) block = K::kMaxPanels;
  const int64_t chunk = bf16_row_chunk(g.k);
  alignas(64) float tile[K::kMr * kBf16MaxTileCols];
  AType* a = static_cast<AType*>(g.a_work);
  for (int64_t c0 = 0; c0 < g.m; c0 += chunk) {
    const int64_t mc = bf16_min(chunk, g.m - c0);
    bf16_convert_rows(a, lda, g.x + c0 * g.k, g.k, mc);
    for (int64_t p0 = 0; p0 < panels; p0 += block) {
      const int64_t p1 = bf16_min(panels, p0 + block);
      for (int64_t i0 = 0; i0 < mc; i0 += K::kMr) {
        const int64_t rows = bf16_min(K::kMr, mc - i0);
        for (int64_t p = p0; p < p1; p += K::kMaxPanels) {
          const int np = static_cast<int>(bf16_min(K::kMaxPanels, p1 - p));
          bf16_tile<K>(static_cast<int>(rows), np, pairs, a + i0 * lda, lda, g.panels + p * stride, stride, tile);
          const int64_t j0 = p * kBf16PanelCols;
          bf16_epilogue(g, tile, np * kBf16PanelCols, c0 + i0, rows, j0, bf16_min(np * kBf16PanelCols, g.n - j0));
        }
      }
    }
  }
}

}  // namespace
}  // namespace customml::cpu
