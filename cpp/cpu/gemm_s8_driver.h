#pragma once
// Defines: gemm_s8_blocked, the int8 GEMM driver shared by every variant: column blocks
// of the pre-packed weight panels sized for L2, the A rows packed per microkernel tile, an
// R x (NP panels) microkernel into an int32 tile, and the fused epilogue.
//
// Internal linkage and no standard-library templates, as gemm_driver.h: each ISA file
// includes it under its own compiler flags.

#include <cstdint>
#include <cstring>

#include "activation.h"
#include "cpu/gemm_s8.h"
#include "cpu/quantize_math.h"
#include "cpu/vmath.h"

namespace customml::cpu {
namespace {

// Packed weight bytes one column block spans: a block of MR rows sweeps it once per row
// tile, so it stays in L2 (1 MiB and up on current x86 cores) with room for A and C.
constexpr int64_t kS8BlockBytes = 256 * 1024;
// The widest microkernel tile, in columns (4 panels).
constexpr int64_t kS8MaxTileCols = 64;

inline int64_t s8_min(int64_t a, int64_t b) { return a < b ? a : b; }

// rows x k of A (leading dimension k) -> dst [groups][rows][4], k zero-padded to a
// multiple of 4, converted to T (u8 for vpdpbusd and the portable loop, i16 for vpmaddwd).
template <class T>
void pack_a_s8(T* dst, const uint8_t* a, int64_t k, int64_t rows) {
  const int64_t groups = s8_groups(k), full = k / 4;
  for (int64_t g = 0; g < full; ++g)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t t = 0; t < 4; ++t) dst[(g * rows + r) * 4 + t] = static_cast<T>(a[r * k + g * 4 + t]);
  if (full < groups)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t t = 0; t < 4; ++t) {
        const int64_t p = full * 4 + t;
        dst[(full * rows + r) * 4 + t] = p < k ? static_cast<T>(a[r * k + p]) : T(0);
      }
}

// r = a_scale w_scale (acc - a_zero colsum) + bias, then the activation, then f32 out,
// u8 out (requantized) or, without scaling, i32 out. The zero-point correction wraps in
// uint32: its true value fits in int32 (k <= kGemmS8MaxK), so the wrapped result is exact.
inline void s8_epilogue(const GemmS8Args& g, const int32_t* tile, int64_t ld, int64_t i0, int64_t rows, int64_t j0,
                        int64_t cols) {
  const GemmS8Epilogue& e = g.e;
  const int32_t* cs = g.colsum + j0;
  alignas(64) float buf[kS8MaxTileCols];
  for (int64_t t = 0; t < rows; ++t) {
    const int64_t i = i0 + t;
    const int32_t* acc = tile + t * ld;
    const uint32_t az = static_cast<uint32_t>(e.a_zero[e.a_per_row ? i : 0]);
    if (g.y_i32) {
      int32_t* y = g.y_i32 + i * g.ldy + j0;
      for (int64_t j = 0; j < cols; ++j)
        y[j] = static_cast<int32_t>(static_cast<uint32_t>(acc[j]) - az * static_cast<uint32_t>(cs[j]));
      continue;
    }
    float* r = g.y_f32 ? g.y_f32 + i * g.ldy + j0 : buf;
    const float as = e.a_scale[e.a_per_row ? i : 0];
    if (e.w_per_channel) {
      const float* ws = e.w_scale + j0;
      for (int64_t j = 0; j < cols; ++j)
        r[j] = (as * ws[j]) *
               static_cast<float>(static_cast<int32_t>(static_cast<uint32_t>(acc[j]) - az * static_cast<uint32_t>(cs[j])));
    } else {
      const float s = as * e.w_scale[0];
      for (int64_t j = 0; j < cols; ++j)
        r[j] = s * static_cast<float>(static_cast<int32_t>(static_cast<uint32_t>(acc[j]) - az * static_cast<uint32_t>(cs[j])));
    }
    if (e.bias) {
      const float* b = e.bias + j0;
      for (int64_t j = 0; j < cols; ++j) r[j] += b[j];
    }
    switch (e.act) {
      case Activation::identity: break;
      case Activation::relu:
        for (int64_t j = 0; j < cols; ++j) r[j] = r[j] > 0.0f ? r[j] : 0.0f;
        break;
      case Activation::sigmoid: vmath_map<vsigmoid>(r, r, cols); break;
      case Activation::tanh: vmath_map<vtanh>(r, r, cols); break;
      case Activation::gelu: vmath_map<vgelu>(r, r, cols); break;
    }
    if (g.y_u8) {
      uint8_t* y = g.y_u8 + i * g.ldy + j0;
      for (int64_t j = 0; j < cols; ++j) y[j] = static_cast<uint8_t>(to_code(r[j] / e.out_scale, e.out_zero, 0, 255));
    }
  }
}

// K::micro<R, NP> for the tile's actual rows (1 .. K::kMr) and panels (1 .. K::kMaxPanels):
// edge tiles and the batch-1 row (R = 1, a GEMV) run exactly the work they need.
template <class K, int R, int NP = K::kMaxPanels>
void s8_tile_panels(int np, int64_t groups, const typename K::AType* a, const int8_t* b, int64_t stride,
                    int32_t* tile) {
  if constexpr (NP > 1) {
    if (np < NP) return s8_tile_panels<K, R, NP - 1>(np, groups, a, b, stride, tile);
  }
  K::template micro<R, NP>(groups, a, b, stride, tile);
}

template <class K, int R = K::kMr>
void s8_tile(int rows, int np, int64_t groups, const typename K::AType* a, const int8_t* b, int64_t stride,
             int32_t* tile) {
  if constexpr (R > 1) {
    if (rows < R) return s8_tile<K, R - 1>(rows, np, groups, a, b, stride, tile);
  }
  s8_tile_panels<K, R>(np, groups, a, b, stride, tile);
}

// K: kMr (rows per tile), kMaxPanels (16-column panels per tile), AType (the packed A
// element) and micro<R, NP>(groups, a [groups][R][4], b (first panel), panel stride in
// bytes, tile (R, NP * 16) int32), which sums over every group.
template <class K>
void gemm_s8_blocked(const GemmS8Args& g) {
  if (g.m == 0 || g.n == 0) return;
  const int64_t groups = s8_groups(g.k), panels = s8_panels(g.n), stride = s8_panel_bytes(g.k);
  int64_t block = kS8BlockBytes / stride / K::kMaxPanels * K::kMaxPanels;
  if (block < K::kMaxPanels) block = K::kMaxPanels;
  typename K::AType* ap = static_cast<typename K::AType*>(g.a_work);
  alignas(64) int32_t tile[K::kMr * kS8MaxTileCols];
  for (int64_t p0 = 0; p0 < panels; p0 += block) {
    const int64_t p1 = s8_min(panels, p0 + block);
    for (int64_t i0 = 0; i0 < g.m; i0 += K::kMr) {
      const int64_t rows = s8_min(K::kMr, g.m - i0);
      pack_a_s8(ap, g.a + i0 * g.k, g.k, rows);
      for (int64_t p = p0; p < p1; p += K::kMaxPanels) {
        const int np = static_cast<int>(s8_min(K::kMaxPanels, p1 - p));
        s8_tile<K>(static_cast<int>(rows), np, groups, ap, g.panels + p * stride, stride, tile);
        const int64_t j0 = p * kS8PanelCols;
        s8_epilogue(g, tile, np * kS8PanelCols, i0, rows, j0, s8_min(np * kS8PanelCols, g.n - j0));
      }
    }
  }
}

}  // namespace
}  // namespace customml::cpu
