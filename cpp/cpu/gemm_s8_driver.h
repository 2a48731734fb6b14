#pragma once
// Defines: gemm_s8_blocked, the int8 GEMM driver shared by every variant: chunks of A rows,
// column blocks of the pre-packed weight panels sized for L2, an R x (NP panels)
// microkernel into an int32 tile that reads A in place or packed, and the fused epilogue.
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

// Packed weight bytes one column block spans: every row tile of a chunk sweeps it, so it
// should stay in L2 next to the A chunk; 128 KiB leaves room in an L2 of 1 MiB shared by
// two SMT threads (Zen 4, Sapphire Rapids has 2 MiB).
constexpr int64_t kS8BlockBytes = 128 * 1024;
// The widest microkernel tile, in columns (4 panels).
constexpr int64_t kS8MaxTileCols = 64;

inline int64_t s8_min(int64_t a, int64_t b) { return a < b ? a : b; }

// rows x k of A (leading dimension k) -> dst [groups][rows][4], k zero-padded to a
// multiple of 4, converted to T (i16 for vpmaddwd).
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

// The rows [c0, c0 + mc) of A with a leading dimension that is a multiple of 4, so that a
// tile reads whole groups without a tail: the caller's codes in place when k is one, else
// copied into staged with each row zero-padded (reading across a row's end would run past
// the last row). The padding meets the weights' zero padding, so its value is never seen;
// it is zeroed so that no tile reads uninitialized bytes.
inline const uint8_t* s8_chunk_codes(const GemmS8Args& g, int64_t c0, int64_t mc, uint8_t* staged, int64_t* lda) {
  if (g.k % 4 == 0) {
    *lda = g.k;
    return g.a + c0 * g.k;
  }
  const int64_t ld = s8_groups(g.k) * 4;
  for (int64_t i = 0; i < mc; ++i) {
    uint8_t* row = staged + i * ld;
    std::memcpy(row, g.a + (c0 + i) * g.k, static_cast<size_t>(g.k));
    std::memset(row + g.k, 0, static_cast<size_t>(ld - g.k));
  }
  *lda = ld;
  return staged;
}

// One row's r = a_scale w_scale (acc - a_zero colsum) + bias over cols columns, then ReLU
// (kRelu) and the requantized code (kU8: into q, else r into y): one pass from the
// accumulators to the output, each case its own loop so that GCC vectorizes it without
// branches. The zero-point correction wraps in uint32: its true value fits in int32
// (k <= kGemmS8MaxK), so the wrapped result is exact.
template <bool kPerChannel, bool kBias, bool kRelu, bool kU8>
inline void s8_epilogue_row(float* y, uint8_t* q, const int32_t* acc, const int32_t* cs, uint32_t az, float as,
                            const float* ws, const float* bias, float out_scale, int32_t out_zero, int64_t cols) {
  const float s0 = as * ws[0];
  for (int64_t j = 0; j < cols; ++j) {
    const float sc = kPerChannel ? as * ws[j] : s0;
    float v = sc * static_cast<float>(
                       static_cast<int32_t>(static_cast<uint32_t>(acc[j]) - az * static_cast<uint32_t>(cs[j])));
    if (kBias) v += bias[j];
    if (kRelu) v = act::relu(v);
    if (kU8)
      q[j] = static_cast<uint8_t>(to_code(v / out_scale, out_zero, 0, 255));
    else
      y[j] = v;
  }
}

using S8EpilogueRow = void (*)(float*, uint8_t*, const int32_t*, const int32_t*, uint32_t, float, const float*,
                               const float*, float, int32_t, int64_t);

template <bool kPerChannel, bool kBias, bool kRelu>
S8EpilogueRow s8_epilogue_row_for(bool u8) {
  return u8 ? s8_epilogue_row<kPerChannel, kBias, kRelu, true> : s8_epilogue_row<kPerChannel, kBias, kRelu, false>;
}

template <bool kPerChannel, bool kBias>
S8EpilogueRow s8_epilogue_row_for(bool relu, bool u8) {
  return relu ? s8_epilogue_row_for<kPerChannel, kBias, true>(u8) : s8_epilogue_row_for<kPerChannel, kBias, false>(u8);
}

// The row pass for this epilogue; ReLU only for relu itself (the other activations follow
// the pass, in f32 out).
inline S8EpilogueRow s8_epilogue_row_for(const GemmS8Epilogue& e, bool relu, bool u8) {
  if (e.w_per_channel)
    return e.bias ? s8_epilogue_row_for<true, true>(relu, u8) : s8_epilogue_row_for<true, false>(relu, u8);
  return e.bias ? s8_epilogue_row_for<false, true>(relu, u8) : s8_epilogue_row_for<false, false>(relu, u8);
}

// tile (rows, ld) int32 -> output rows i0 .. i0 + rows, columns j0 .. j0 + cols: f32 out,
// u8 out (requantized) or, without scaling, i32 out. As a pass per step (scale, bias,
// activation, code) the epilogue cost a tenth of a 1024 x 784 x 256 call, each pass
// reloading what the last had just stored; identity and ReLU now take one.
inline void s8_epilogue(const GemmS8Args& g, const int32_t* tile, int64_t ld, int64_t i0, int64_t rows, int64_t j0,
                        int64_t cols) {
  const GemmS8Epilogue& e = g.e;
  const int32_t* cs = g.colsum + j0;
  if (g.y_i32) {
    for (int64_t t = 0; t < rows; ++t) {
      const int64_t i = i0 + t;
      const int32_t* acc = tile + t * ld;
      const uint32_t az = static_cast<uint32_t>(e.a_zero[e.a_per_row ? i : 0]);
      int32_t* y = g.y_i32 + i * g.ldy + j0;
      for (int64_t j = 0; j < cols; ++j)
        y[j] = static_cast<int32_t>(static_cast<uint32_t>(acc[j]) - az * static_cast<uint32_t>(cs[j]));
    }
    return;
  }
  const float* ws = e.w_scale + (e.w_per_channel ? j0 : 0);
  const float* bias = e.bias ? e.bias + j0 : nullptr;
  const bool fused = e.act == Activation::identity || e.act == Activation::relu;
  const S8EpilogueRow row = s8_epilogue_row_for(e, e.act == Activation::relu, g.y_u8 && fused);
  alignas(64) float buf[kS8MaxTileCols];
  for (int64_t t = 0; t < rows; ++t) {
    const int64_t i = i0 + t;
    const uint32_t az = static_cast<uint32_t>(e.a_zero[e.a_per_row ? i : 0]);
    const float as = e.a_scale[e.a_per_row ? i : 0];
    // Straight to the output when nothing follows the pass; else into buf.
    float* r = g.y_f32 && fused ? g.y_f32 + i * g.ldy + j0 : buf;
    uint8_t* q = g.y_u8 ? g.y_u8 + i * g.ldy + j0 : nullptr;
    row(r, q, tile + t * ld, cs, az, as, ws, bias, e.out_scale, e.out_zero, cols);
    if (fused) continue;
    switch (e.act) {
      case Activation::sigmoid: vmath_map<vsigmoid>(r, r, cols); break;
      case Activation::tanh: vmath_map<vtanh>(r, r, cols); break;
      case Activation::gelu: vmath_map<vgelu>(r, r, cols); break;
      default: break;
    }
    if (q) {
      for (int64_t j = 0; j < cols; ++j) q[j] = static_cast<uint8_t>(to_code(r[j] / e.out_scale, e.out_zero, 0, 255));
    } else {
      std::memcpy(g.y_f32 + i * g.ldy + j0, r, sizeof(float) * static_cast<size_t>(cols));
    }
  }
}

// K::micro<R, NP> for the tile's actual rows (1 .. K::kMr) and panels (1 .. K::kMaxPanels):
// edge tiles and the batch-1 row (R = 1, a GEMV) run exactly the work they need.
template <class K, int R, int NP = K::kMaxPanels>
void s8_tile_panels(int np, int64_t groups, const typename K::AType* a, int64_t lda, const int8_t* b, int64_t stride,
                    int32_t* tile) {
  if constexpr (NP > 1) {
    if (np < NP) return s8_tile_panels<K, R, NP - 1>(np, groups, a, lda, b, stride, tile);
  }
  K::template micro<R, NP>(groups, a, lda, b, stride, tile);
}

template <class K, int R = K::kMr>
void s8_tile(int rows, int np, int64_t groups, const typename K::AType* a, int64_t lda, const int8_t* b, int64_t stride,
             int32_t* tile) {
  if constexpr (R > 1) {
    if (rows < R) return s8_tile<K, R - 1>(rows, np, groups, a, lda, b, stride, tile);
  }
  s8_tile_panels<K, R>(np, groups, a, lda, b, stride, tile);
}

// K: kMr (rows per tile), kMaxPanels (16-column panels per tile), kPacksA, AType (the
// element its tiles read) and micro<R, NP>(groups, a, lda, b (first panel), panel stride in
// bytes, tile (R, NP * 16) int32), which sums over every group. Without kPacksA a tile
// reads the chunk's codes in place (AType uint8_t), R rows of leading dimension lda (a
// multiple of 4); with it, A packed per tile, [groups][R][4] of AType, and lda is unused.
template <class K>
void gemm_s8_blocked(const GemmS8Args& g) {
  if (g.m == 0 || g.n == 0) return;
  using AType = typename K::AType;
  constexpr bool kPacked = K::kPacksA;
  const int64_t groups = s8_groups(g.k), panels = s8_panels(g.n), stride = s8_panel_bytes(g.k);
  int64_t block = kS8BlockBytes / stride / K::kMaxPanels * K::kMaxPanels;
  if (block < K::kMaxPanels) block = K::kMaxPanels;
  const int64_t chunk = s8_row_chunk(g.k);
  alignas(64) int32_t tile[K::kMr * kS8MaxTileCols];
  for (int64_t c0 = 0; c0 < g.m; c0 += chunk) {
    const int64_t mc = s8_min(chunk, g.m - c0);
    int64_t lda = g.k;
    const uint8_t* codes = nullptr;
    AType* ap = static_cast<AType*>(g.a_work);
    // Tile i0 of the chunk (rows c0 + i0 .. + K::kMr): packed at ap + i0 * groups * 4.
    if constexpr (kPacked)
      for (int64_t i0 = 0; i0 < mc; i0 += K::kMr)
        pack_a_s8(ap + i0 * groups * 4, g.a + (c0 + i0) * g.k, g.k, s8_min(K::kMr, mc - i0));
    else
      codes = s8_chunk_codes(g, c0, mc, static_cast<uint8_t*>(g.a_work), &lda);
    for (int64_t p0 = 0; p0 < panels; p0 += block) {
      const int64_t p1 = s8_min(panels, p0 + block);
      for (int64_t i0 = 0; i0 < mc; i0 += K::kMr) {
        const int64_t rows = s8_min(K::kMr, mc - i0);
        const AType* at;
        if constexpr (kPacked)
          at = ap + i0 * groups * 4;
        else
          at = codes + i0 * lda;
        for (int64_t p = p0; p < p1; p += K::kMaxPanels) {
          const int np = static_cast<int>(s8_min(K::kMaxPanels, p1 - p));
          s8_tile<K>(static_cast<int>(rows), np, groups, at, lda, g.panels + p * stride, stride, tile);
          const int64_t j0 = p * kS8PanelCols;
          s8_epilogue(g, tile, np * kS8PanelCols, c0 + i0, rows, j0, s8_min(np * kS8PanelCols, g.n - j0));
        }
      }
    }
  }
}

}  // namespace
}  // namespace customml::cpu
