#pragma once
// Defines: AmxBf16, the AMX-BF16 tile kernel of gemm_bf16, written once against
// cpu/amx_tiles.h and compiled twice (gemm_bf16_amx.cpp on the hardware, -mamx-bf16;
// gemm_bf16_amx_emulated.cpp on the tile model), as gemm_s8_amx_kernel.h.
//
// 16 rows x 4 panels: tiles 0-3 accumulate C (16 x 16 float32), tile 4 holds 16 rows x 16 pairs
// of x (its bf16 pairs, 64 bytes a row) and tile 5 a panel's 16 pairs, which the packed layout
// stores as tdpbf16ps reads B (cpu/gemm_bf16.h; pairs are padded to a multiple of 16, and the
// converted rows of x likewise, so every tile is whole in k). Rows of a partial tile are staged
// into a zeroed block. tdpbf16ps adds each pair's even product before its odd one, the reverse
// of vdpbf16ps: the sums differ from the other levels by rounding only (tests/test_dense_bf16.py).

#include <cstdint>
#include <cstring>

#include "cpu/amx_tiles.h"
#include "cpu/gemm_bf16_driver.h"

namespace customml::cpu {
namespace {

struct AmxBf16 {
  static constexpr int kMr = 16;
  static constexpr int kMaxPanels = 4;
  static constexpr int kAPerPair = 1;
  using AType = uint32_t;

  template <int Q>
  static void panel_step(int np, const uint32_t* b, int64_t stride, int64_t p0) {
    if (Q >= np) return;
    amx::tileloadd<5>(b + Q * stride + p0 * kBf16PanelCols, 64);
    amx::tdpbf16ps<Q, 4, 5>();
  }

  // R rows (1-16) x NP panels over every pair: tile (R, NP * 16) float32.
  template <int R, int NP>
  static void micro(int64_t pairs, const uint32_t* a, int64_t lda, const uint32_t* b, int64_t stride, float* tile) {
    amx::TileConfig c;
    for (int t = 0; t < 6; ++t) {
      c.rows[t] = 16;
      c.colsb[t] = 64;
    }
    amx::ldtilecfg(c);  // zeroes the accumulators too
    alignas(64) uint32_t staged[16 * 16];
    const int64_t padded = (pairs + kBf16PairBlock - 1) / kBf16PairBlock * kBf16PairBlock;
    for (int64_t p0 = 0; p0 < padded; p0 += kBf16PairBlock) {
      if (R == 16) {
        amx::tileloadd<4>(a + p0, lda * 4);
      } else {
        std::memset(staged, 0, sizeof staged);
        for (int r = 0; r < R; ++r) std::memcpy(staged + r * 16, a + r * lda + p0, 64);
        amx::tileloadd<4>(staged, 64);
      }
      panel_step<0>(NP, b, stride, p0);
      panel_step<1>(NP, b, stride, p0);
      panel_step<2>(NP, b, stride, p0);
      panel_step<3>(NP, b, stride, p0);
    }
    const int64_t ldt = NP * kBf16PanelCols * int64_t{sizeof(float)};
    amx::tilestored<0>(tile, ldt);
    if (NP > 1) amx::tilestored<1>(tile + 16, ldt);
    if (NP > 2) amx::tilestored<2>(tile + 32, ldt);
    if (NP > 3) amx::tilestored<3>(tile + 48, ldt);
  }
};

}  // namespace
}  // namespace customml::cpu
