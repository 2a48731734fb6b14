#pragma once
// Defines: AmxS8, the AMX-INT8 tile kernel of gemm_s8, written once against cpu/amx_tiles.h and
// compiled twice: gemm_s8_amx.cpp (the hardware, -mamx-tile -mamx-int8) and
// gemm_s8_amx_emulated.cpp (the tile model), so its tiling and edge handling are tested on
// any CPU, bit for bit against the other levels (integer sums are exact in every order).
//
// A tile is 16 rows x 4 panels of 16 columns: tiles 0-3 accumulate C (16 x 16 int32 each),
// tile 4 holds 16 rows x 16 groups of A (64 bytes a row), tile 5 a panel's 16 groups of B, which
// the packed layout stores as tdpbusd reads it (row g: 16 columns x 4 bytes, 64 bytes a group,
// cpu/gemm_s8.h); tiles 6 and 7 are A and B for the last groups when their count is not a
// multiple of 16 (K of the product is 4 x that count). Rows past the chunk's end (a tile of
// fewer than 16 rows) are staged into a zeroed block, so no tile reads past A.

#include <cstdint>
#include <cstring>

#include "cpu/amx_tiles.h"
#include "cpu/gemm_s8_driver.h"

namespace customml::cpu {
namespace {

struct AmxS8 {
  static constexpr int kMr = 16;
  static constexpr int kMaxPanels = 4;
  static constexpr bool kPacksA = false;
  using AType = uint8_t;
  static constexpr int kGroupBlock = 16;  // groups a tile spans: 64 bytes of a row of A

  // Tiles 0-3 C, 4 A, 5 B, then for `tail` (1-15) last groups 6 A and 7 B.
  static void configure(int tail) {
    amx::TileConfig c;
    for (int t = 0; t < 6; ++t) {
      c.rows[t] = 16;
      c.colsb[t] = 64;
    }
    if (tail) {
      c.rows[6] = 16;
      c.colsb[6] = static_cast<uint16_t>(4 * tail);
      c.rows[7] = static_cast<uint8_t>(tail);
      c.colsb[7] = 64;
    }
    amx::ldtilecfg(c);
  }

  // C tile Q += A (tile At) x panel Q's B (tile Bt, loaded here from b).
  template <int Q, int At, int Bt>
  static void panel_step(int np, const int8_t* b, int64_t stride, int64_t g0) {
    if (Q >= np) return;
    amx::tileloadd<Bt>(b + Q * stride + g0 * 64, 64);
    amx::tdpbusd<Q, At, Bt>();
  }

  // R rows (1-16) x NP panels over every group: tile (R, NP * 16) int32.
  template <int R, int NP>
  static void micro(int64_t groups, const uint8_t* a, int64_t lda, const int8_t* b, int64_t stride, int32_t* tile) {
    const int64_t full = groups / kGroupBlock * kGroupBlock;
    const int tail = static_cast<int>(groups - full);
    configure(tail);  // zeroes the accumulators too
    alignas(64) uint8_t staged[16 * 64];
    // A's block of groups g0 .. g0 + width / 4 for the R rows, as a tile reads it.
    const auto a_block = [&](int64_t g0, int64_t width, int64_t* ld) -> const uint8_t* {
      if (R == 16) {
        *ld = lda;
        return a + g0 * 4;
      }
      std::memset(staged, 0, sizeof staged);
      for (int r = 0; r < R; ++r) std::memcpy(staged + r * 64, a + r * lda + g0 * 4, static_cast<size_t>(width));
      *ld = 64;
      return staged;
    };
    for (int64_t g0 = 0; g0 < full; g0 += kGroupBlock) {
      int64_t ld;
      const uint8_t* ap = a_block(g0, 64, &ld);
      amx::tileloadd<4>(ap, ld);
      panel_step<0, 4, 5>(NP, b, stride, g0);
      panel_step<1, 4, 5>(NP, b, stride, g0);
      panel_step<2, 4, 5>(NP, b, stride, g0);
      panel_step<3, 4, 5>(NP, b, stride, g0);
    }
    if (tail) {
      int64_t ld;
      const uint8_t* ap = a_block(full, 4 * tail, &ld);
      amx::tileloadd<6>(ap, ld);
      panel_step<0, 6, 7>(NP, b, stride, full);
      panel_step<1, 6, 7>(NP, b, stride, full);
      panel_step<2, 6, 7>(NP, b, stride, full);
      panel_step<3, 6, 7>(NP, b, stride, full);
    }
    // 16 rows each (the tile buffer holds kMr rows); the driver reads the first R.
    const int64_t ldt = NP * kS8PanelCols * int64_t{sizeof(int32_t)};
    amx::tilestored<0>(tile, ldt);
    if (NP > 1) amx::tilestored<1>(tile + 16, ldt);
    if (NP > 2) amx::tilestored<2>(tile + 32, ldt);
    if (NP > 3) amx::tilestored<3>(tile + 48, ldt);
  }
};

}  // namespace
}  // namespace customml::cpu
