#pragma once
// Defines: gemm_blocked, the BLIS-style cache-blocked driver (pack B panel, pack A
// block, run an MR x NR microkernel, fused epilogue) shared by every gemm variant.
//
// Everything here has internal linkage and uses no standard-library templates: each
// ISA file includes it under its own compiler flags, and a shared out-of-line copy
// compiled for AVX-512 must never be what the portable path calls.

#include <cstdint>
#include <cstring>

#include "activation.h"
#include "cpu/gemm.h"
#include "cpu/vmath.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace customml::cpu {
namespace {

inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

#if defined(__AVX512F__)
// The first min(max(count, 0), 16) lanes.
inline __mmask16 first_lanes(int64_t count) {
  return count >= 16  ? static_cast<__mmask16>(0xFFFF)
         : count <= 0 ? static_cast<__mmask16>(0)
                      : static_cast<__mmask16>((1u << count) - 1u);
}

// Packing a transposed operand (A row-major, as the forward GEMMs' x and the backward
// dz are; B column-major, as w^T in dz . w^T is) element by element is a strided scalar
// gather at about a cycle per element, while each packed element feeds only n (A) or m
// (B) multiply-adds: 128-256 in a training step, 4-8 cycles at the FMA peak. These
// helpers move 16 x 16 blocks through registers instead.

// r[i] holds row i of a 16 x 16 block; afterwards r[j] holds its column j.
inline void transpose16x16(__m512 r[16]) {
  // t[2 i], t[2 i + 1], 128-bit lane L: rows 2 i, 2 i + 1 interleaved over columns 4 L .. 4 L + 3
  __m512 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4 g + c], 128-bit lane L: rows 4 g .. 4 g + 3 of column 4 L + c
  __m512 u[16];
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    const __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
    u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  // column 4 L + c gathers lane L of u[c], u[4 + c], u[8 + c], u[12 + c]
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    const __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
    const __m512 v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xdd);
    const __m512 w0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
    const __m512 w1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xdd);
    r[c] = _mm512_shuffle_f32x4(v0, w0, 0x88);
    r[4 + c] = _mm512_shuffle_f32x4(v1, w1, 0x88);
    r[8 + c] = _mm512_shuffle_f32x4(v0, w0, 0xdd);
    r[12 + c] = _mm512_shuffle_f32x4(v1, w1, 0xdd);
  }
}

// dst[q * ld + i] = src[i * stride + q] for i < count (zero for count <= i < width),
// q < 16: 16 consecutive elements of `count` lines, written across.
inline void pack_across16(float* dst, int64_t ld, int width, const float* src, int64_t stride, int64_t count) {
  __m512 r[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = i < count ? _mm512_loadu_ps(src + i * stride) : _mm512_setzero_ps();
  transpose16x16(r);
  const __mmask16 keep = first_lanes(width);
#pragma GCC unroll 16
  for (int q = 0; q < 16; ++q) _mm512_mask_storeu_ps(dst + q * ld, keep, r[q]);
}
#endif

// A block (mc x kc) into MR-row micro-panels: panel r holds rows r*MR.., k-major,
// zero-padded past m so the microkernel needs no row mask.
template <int MR>
void pack_a(float* dst, const GemmArgs& g, int64_t i0, int64_t mc, int64_t p0, int64_t kc) {
  for (int64_t ir = 0; ir < mc; ir += MR) {
    const int64_t rows = min_i64(MR, mc - ir);
    int64_t p = 0;
#if defined(__AVX512F__)
    static_assert(MR <= 16, "a micro-panel's rows fit one vector");
    const float* row0 = g.a + (i0 + ir) * g.a_rs + p0 * g.a_cs;
    if (g.a_cs == 1) {
      for (; p + 16 <= kc; p += 16) pack_across16(dst + p * MR, MR, MR, row0 + p, g.a_rs, rows);
    } else if (g.a_rs == 1) {
      const __mmask16 valid = first_lanes(rows), keep = first_lanes(MR);
      for (; p < kc; ++p) _mm512_mask_storeu_ps(dst + p * MR, keep, _mm512_maskz_loadu_ps(valid, row0 + p * g.a_cs));
    }
#endif
    for (; p < kc; ++p) {
      const float* src = g.a + (i0 + ir) * g.a_rs + (p0 + p) * g.a_cs;
      int64_t i = 0;
      for (; i < rows; ++i) dst[p * MR + i] = src[i * g.a_rs];
      for (; i < MR; ++i) dst[p * MR + i] = 0.0f;
    }
    dst += MR * kc;
  }
}

// B panel (kc x nc) into NR-column micro-panels, k-major, zero-padded past n.
template <int NR>
void pack_b(float* dst, const GemmArgs& g, int64_t p0, int64_t kc, int64_t j0, int64_t nc) {
  if (g.b_cs == 1) {
    // Row by row across every panel: B is read as the contiguous rows it is stored in (a
    // layer's weights, usually cold after the previous step's optimizer pass), which the
    // hardware prefetcher streams; panel by panel it would read NR columns of each row.
    for (int64_t p = 0; p < kc; ++p) {
      const float* src = g.b + (p0 + p) * g.b_rs + j0;
      for (int64_t jr = 0; jr < nc; jr += NR) {
        const int64_t cols = min_i64(NR, nc - jr);
        float* d = dst + jr * kc + p * NR;
        int64_t j = 0;
        for (; j < cols; ++j) d[j] = src[jr + j];
        for (; j < NR; ++j) d[j] = 0.0f;
      }
    }
    return;
  }
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int64_t cols = min_i64(NR, nc - jr);
    int64_t p = 0;
#if defined(__AVX512F__)
    if (g.b_rs == 1 && NR % 16 == 0) {
      const float* col0 = g.b + p0 + (j0 + jr) * g.b_cs;
      for (; p + 16 <= kc; p += 16)
        for (int h = 0; h < NR; h += 16)
          pack_across16(dst + p * NR + h, NR, 16, col0 + p + h * g.b_cs, g.b_cs, cols - h);
    }
#endif
    for (; p < kc; ++p) {
      const float* src = g.b + (p0 + p) * g.b_rs + (j0 + jr) * g.b_cs;
      int64_t j = 0;
      for (; j < cols; ++j) dst[p * NR + j] = src[j * g.b_cs];
      for (; j < NR; ++j) dst[p * NR + j] = 0.0f;
    }
    dst += NR * kc;
  }
}

// Bias and activation over a finished rows x cols tile of C, while it is in cache.
inline void epilogue(const GemmArgs& g, int64_t i0, int64_t j0, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    float* c = g.c + (i0 + i) * g.ldc + j0;
    if (g.bias) {
      const float* b = g.bias + j0;
      for (int64_t j = 0; j < cols; ++j) c[j] += b[j];
    }
    if (g.preact) std::memcpy(g.preact + (i0 + i) * g.ldc + j0, c, sizeof(float) * cols);
    switch (g.act) {
      case Activation::identity: break;
      case Activation::relu:
        for (int64_t j = 0; j < cols; ++j) c[j] = act::relu(c[j]);
        break;
      case Activation::sigmoid: vmath_map<vsigmoid>(c, c, cols); break;
      case Activation::tanh: vmath_map<vtanh>(c, c, cols); break;
      case Activation::gelu: vmath_map<vgelu>(c, c, cols); break;
    }
  }
}

// B as the small-m path reads it: element (p, j) of the panel holding columns j0 ..
// j0 + NR - 1 at base + (j0 / NR) panel_stride + p row_stride + (j - j0). Pre-packed
// panels (zero past n) are {packed_b, NR k, NR}; a row-major B is {b, NR, b_rs}, whose
// last panel must be read under a mask.
struct BPanels {
  const float* base;
  int64_t panel_stride, row_stride;
};

// The small-m path's walk over C's columns: whole blocks of P panels of NR columns
// (whole(j0)), then the last columns one panel at a time (edge(j0, cols), cols <= NR). With
// g.reverse_columns the walk runs backwards, so that a call reads first the blocks the
// previous call read last, which are still in L2.
template <int P, int NR, class Whole, class Edge>
void small_m_columns(const GemmArgs& g, Whole whole, Edge edge) {
  const int64_t full = g.n / (P * NR) * (P * NR);
  auto rest = [&] {
    for (int64_t j = full; j < g.n; j += NR) edge(j, min_i64(NR, g.n - j));
  };
  if (g.reverse_columns) {
    rest();
    for (int64_t j = full; j > 0; j -= P * NR) whole(j - P * NR);
  } else {
    for (int64_t j = 0; j < full; j += P * NR) whole(j);
    rest();
  }
}

// Micro: void(int64_t kc, const float* a_panel, const float* b_panel, float* c,
//             int64_t ldc, bool accumulate) computing a full MR x NR tile.
// SmallM: void(const GemmArgs& g, const BPanels& b) computing all of C and its epilogue
//         for 1 <= g.m < MR, k >= 1, summing over k in increasing order with the same
//         multiply-add as Micro, so a row's result does not depend on how many rows
//         share the call (predict is batch-invariant).
//
// Below MR rows a microkernel tile would be mostly padding, and packing B costs as much
// as the product itself (batch-1 inference): SmallM reads B in place, pre-packed or
// row-major, once per call, with all rows sharing each load of B.
// Rows i0 .. i0 + m - 1 of g's product (A, C and the pre-activation output; B is shared).
inline GemmArgs row_slice(const GemmArgs& g, int64_t i0, int64_t m) {
  GemmArgs rows = g;
  rows.m = m;
  rows.a = g.a + i0 * g.a_rs;
  rows.c = g.c + i0 * g.ldc;
  if (g.preact) rows.preact = g.preact + i0 * g.ldc;
  return rows;
}

template <int MR, int NR, class Micro, class SmallM>
void gemm_blocked(const GemmArgs& g, const GemmWorkspace& ws, Micro micro, SmallM small_m) {
  if (g.m == 0 || g.n == 0) return;
  const bool prepacked = g.packed_b != nullptr && g.packed_nr == NR;
  const BPanels in_place = prepacked ? BPanels{g.packed_b, NR * g.k, NR} : BPanels{g.b, NR, g.b_rs};
  if (g.k > 0 && g.m < MR && (prepacked || g.b_cs == 1)) {
    small_m(g, in_place);
    return;
  }
  // At most NR / 2 columns (a 10-class output layer and its weight gradient): a tile would
  // be mostly padding and each packed element of A would serve one tile, so SmallM takes
  // the rows MR - 1 at a time, reading A and B in place (the same sums).
  if (g.k > 0 && 2 * g.n <= NR && (prepacked || g.b_cs == 1)) {
    for (int64_t i0 = 0; i0 < g.m; i0 += MR - 1) small_m(row_slice(g, i0, min_i64(MR - 1, g.m - i0)), in_place);
    return;
  }
  if (g.k == 0) {
    // No products: C is the bias alone (then the activation).
    for (int64_t i = 0; i < g.m; ++i)
      for (int64_t j = 0; j < g.n; ++j) g.c[i * g.ldc + j] = 0.0f;
    epilogue(g, 0, 0, g.m, g.n);
    return;
  }
  // The rows past the last whole MR block (m mod MR of them) take the small-m path too:
  // the tiled path would pad them to a full MR-row microkernel tile, and the bits are the
  // same either way.
  const int64_t rem = (prepacked || g.b_cs == 1) ? g.m % MR : 0;
  auto tiled = [&](const GemmArgs& t) {
    alignas(64) float tile[MR * NR];
    for (int64_t jc = 0; jc < t.n; jc += kNc) {
      const int64_t nc = min_i64(kNc, t.n - jc);
      for (int64_t pc = 0; pc < t.k; pc += kKc) {
        const int64_t kc = min_i64(kKc, t.k - pc);
        const bool accumulate = pc > 0;
        const bool last = pc + kc == t.k;
        if (!prepacked) pack_b<NR>(ws.packed_b, t, pc, kc, jc, nc);
        for (int64_t ic = 0; ic < t.m; ic += kMc) {
          const int64_t mc = min_i64(kMc, t.m - ic);
          pack_a<MR>(ws.packed_a, t, ic, mc, pc, kc);
          for (int64_t jr = 0; jr < nc; jr += NR) {
            const int64_t cols = min_i64(NR, nc - jr);
            const float* bp = prepacked ? t.packed_b + (jc + jr) * t.k + pc * NR : ws.packed_b + (jr / NR) * NR * kc;
            for (int64_t ir = 0; ir < mc; ir += MR) {
              const int64_t rows = min_i64(MR, mc - ir);
              const float* ap = ws.packed_a + (ir / MR) * MR * kc;
              float* c = t.c + (ic + ir) * t.ldc + jc + jr;
              if (rows == MR && cols == NR) {
                micro(kc, ap, bp, c, t.ldc, accumulate);
              } else {
                // Edge tile: run the full microkernel on a local tile, copy the valid part.
                if (accumulate)
                  for (int64_t i = 0; i < rows; ++i) std::memcpy(tile + i * NR, c + i * t.ldc, sizeof(float) * cols);
                micro(kc, ap, bp, tile, NR, accumulate);
                for (int64_t i = 0; i < rows; ++i) std::memcpy(c + i * t.ldc, tile + i * NR, sizeof(float) * cols);
              }
              if (last) epilogue(t, ic + ir, jc + jr, rows, cols);
            }
          }
        }
      }
    }
  };
  if (rem == 0) {
    tiled(g);
    return;
  }
  tiled(row_slice(g, 0, g.m - rem));
  small_m(row_slice(g, g.m - rem, rem), in_place);
}

}  // namespace
}  // namespace customml::cpu
