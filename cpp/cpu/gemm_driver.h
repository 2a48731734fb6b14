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

namespace customml::cpu {
namespace {

inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

// A block (mc x kc) into MR-row micro-panels: panel r holds rows r*MR.., k-major,
// zero-padded past m so the microkernel needs no row mask.
template <int MR>
void pack_a(float* dst, const GemmArgs& g, int64_t i0, int64_t mc, int64_t p0, int64_t kc) {
  for (int64_t ir = 0; ir < mc; ir += MR) {
    const int64_t rows = min_i64(MR, mc - ir);
    for (int64_t p = 0; p < kc; ++p) {
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
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int64_t cols = min_i64(NR, nc - jr);
    for (int64_t p = 0; p < kc; ++p) {
      const float* src = g.b + (p0 + p) * g.b_rs + (j0 + jr) * g.b_cs;
      int64_t j = 0;
      if (g.b_cs == 1) {
        for (; j < cols; ++j) dst[p * NR + j] = src[j];
      } else {
        for (; j < cols; ++j) dst[p * NR + j] = src[j * g.b_cs];
      }
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
        for (int64_t j = 0; j < cols; ++j) c[j] = c[j] > 0.0f ? c[j] : 0.0f;
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
template <int MR, int NR, class Micro, class SmallM>
void gemm_blocked(const GemmArgs& g, const GemmWorkspace& ws, Micro micro, SmallM small_m) {
  if (g.m == 0 || g.n == 0) return;
  const bool prepacked = g.packed_b != nullptr && g.packed_nr == NR;
  if (g.k > 0 && g.m < MR && (prepacked || g.b_cs == 1)) {
    small_m(g, prepacked ? BPanels{g.packed_b, NR * g.k, NR} : BPanels{g.b, NR, g.b_rs});
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
                  for (int64_t i = 0; i < rows; ++i)
                    std::memcpy(tile + i * NR, c + i * t.ldc, sizeof(float) * cols);
                micro(kc, ap, bp, tile, NR, accumulate);
                for (int64_t i = 0; i < rows; ++i)
                  std::memcpy(c + i * t.ldc, tile + i * NR, sizeof(float) * cols);
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
  GemmArgs head = g, tail = g;
  head.m = g.m - rem;
  tail.m = rem;
  tail.a = g.a + head.m * g.a_rs;
  tail.c = g.c + head.m * g.ldc;
  if (g.preact) tail.preact = g.preact + head.m * g.ldc;
  tiled(head);
  small_m(tail, prepacked ? BPanels{g.packed_b, NR * g.k, NR} : BPanels{g.b, NR, g.b_rs});
}

}  // namespace
}  // namespace customml::cpu
