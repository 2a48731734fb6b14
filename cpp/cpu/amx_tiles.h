#pragma once
// Defines: the AMX tile operations the AMX kernels use (amx::ldtilecfg, tileloadd, tilestored,
// tilezero, tilerelease, tdpbusd, tdpbf16ps) and TileConfig. Compiled with
// CUSTOMML_AMX_EMULATED they run on a C++ model of the 8 tile registers and the tile
// configuration with the semantics of Intel's pseudo-code (SDM vol. 2, "TDPBUSD", "TDPBF16PS",
// "LDTILECFG", "TILELOADD"): a configuration a real CPU would fault on (#GP / #UD) throws
// std::invalid_argument instead. Otherwise each is the hardware intrinsic (a translation unit
// built with -mamx-tile -mamx-int8 -mamx-bf16). A kernel is written once against this header
// and compiled both ways, so its tiling, packing and edge handling run in CI on any CPU.
// Tile numbers are template arguments: the intrinsics take them as immediates.

#include <cstdint>
#include <cstring>

#ifndef CUSTOMML_AMX_EMULATED
#include <immintrin.h>
#else
#include <cmath>
#include <stdexcept>
#include <string>
#endif

namespace customml::cpu::amx {

// The 64-byte memory operand of LDTILECFG (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64, "LDTILECFG reads 64 bytes");

constexpr int kTiles = 8, kMaxRows = 16, kMaxColsb = 64;

#ifdef CUSTOMML_AMX_EMULATED

// The architectural state: 8 tiles of 16 rows x 64 bytes and the configuration in force.
struct TileState {
  alignas(64) uint8_t data[kTiles][kMaxRows][kMaxColsb] = {};
  uint8_t rows[kTiles] = {};
  uint16_t colsb[kTiles] = {};
  bool configured = false;
};

// One state per thread, as each thread has its own tile registers.
inline TileState& state() {
  thread_local TileState s;
  return s;
}

[[noreturn]] inline void fault(const std::string& what) { throw std::invalid_argument("[amx emulation] " + what); }

// LDTILECFG: palette 0 releases; palette 1 takes rows <= 16 and colsb <= 64 for tiles 0-7,
// both zero or both non-zero, tiles 8-15 and the reserved bytes zero, start_row 0. Every tile
// is zeroed (as the instruction does).
inline void ldtilecfg(const TileConfig& c) {
  TileState& s = state();
  if (c.palette == 0) {
    s = TileState{};
    return;
  }
  if (c.palette != 1) fault("palette " + std::to_string(c.palette) + " is not supported (only 0 and 1 exist)");
  if (c.start_row != 0) fault("start_row must be 0");
  for (uint8_t r : c.reserved)
    if (r != 0) fault("reserved configuration bytes must be zero");
  for (int t = 0; t < 16; ++t) {
    const bool used = c.rows[t] != 0 || c.colsb[t] != 0;
    if (t >= kTiles && used) fault("tile " + std::to_string(t) + " does not exist in palette 1");
    if (t < kTiles && used && (c.rows[t] == 0 || c.colsb[t] == 0))
      fault("tile " + std::to_string(t) + " has rows and colsb of which only one is zero");
    if (t < kTiles && (c.rows[t] > kMaxRows || c.colsb[t] > kMaxColsb))
      fault("tile " + std::to_string(t) + " has " + std::to_string(c.rows[t]) + " rows of " +
            std::to_string(c.colsb[t]) + " bytes; at most 16 rows of 64 bytes");
  }
  s = TileState{};
  for (int t = 0; t < kTiles; ++t) {
    s.rows[t] = c.rows[t];
    s.colsb[t] = c.colsb[t];
  }
  s.configured = true;
}

inline void check_tile(const TileState& s, int t, const char* op) {
  if (!s.configured) fault(std::string(op) + " without a tile configuration");
  if (s.rows[t] == 0)
    fault(std::string(op) + " of tile " + std::to_string(t) + ", which the configuration leaves unused");
}

// TILELOADD: rows x colsb bytes from base, rows stride bytes apart; the rest of the tile zero.
template <int T>
void tileloadd(const void* base, int64_t stride) {
  TileState& s = state();
  check_tile(s, T, "tileloadd");
  std::memset(s.data[T], 0, sizeof s.data[T]);
  for (int r = 0; r < s.rows[T]; ++r)
    std::memcpy(s.data[T][r], static_cast<const uint8_t*>(base) + r * stride, s.colsb[T]);
}

// TILESTORED: rows x colsb bytes to base, rows stride bytes apart.
template <int T>
void tilestored(void* base, int64_t stride) {
  TileState& s = state();
  check_tile(s, T, "tilestored");
  for (int r = 0; r < s.rows[T]; ++r) std::memcpy(static_cast<uint8_t*>(base) + r * stride, s.data[T][r], s.colsb[T]);
}

template <int T>
void tilezero() {
  TileState& s = state();
  check_tile(s, T, "tilezero");
  std::memset(s.data[T], 0, sizeof s.data[T]);
}

inline void tilerelease() { state() = TileState{}; }

// The shape checks of TDPBUSD / TDPBF16PS: all colsb multiples of 4, dst rows = a rows,
// a's colsb / 4 = b's rows (K, in dwords), dst colsb = b colsb (N dwords).
inline void check_dp(const TileState& s, int c, int a, int b, const char* op) {
  check_tile(s, c, op);
  check_tile(s, a, op);
  check_tile(s, b, op);
  if (s.colsb[c] % 4 || s.colsb[a] % 4 || s.colsb[b] % 4)
    fault(std::string(op) + ": every tile's colsb must be a multiple of 4");
  if (s.rows[c] != s.rows[a]) fault(std::string(op) + ": dst and a have different rows");
  if (s.colsb[a] / 4 != s.rows[b]) fault(std::string(op) + ": a's colsb / 4 is not b's rows");
  if (s.colsb[c] != s.colsb[b]) fault(std::string(op) + ": dst and b have different colsb");
}

// TDPBUSD: dst.i32[m][n] += sum over k of the 4 products u8 a[m][4k + i] * s8 b[k][4n + i],
// wrapping around in 32 bits.
template <int C, int A, int B>
void tdpbusd() {
  TileState& s = state();
  check_dp(s, C, A, B, "tdpbusd");
  for (int m = 0; m < s.rows[C]; ++m)
    for (int n = 0; n < s.colsb[C] / 4; ++n) {
      uint32_t acc;
      std::memcpy(&acc, &s.data[C][m][4 * n], 4);
      for (int k = 0; k < s.colsb[A] / 4; ++k)
        for (int i = 0; i < 4; ++i)
          acc += static_cast<uint32_t>(static_cast<int32_t>(s.data[A][m][4 * k + i]) *
                                       static_cast<int32_t>(static_cast<int8_t>(s.data[B][k][4 * n + i])));
      std::memcpy(&s.data[C][m][4 * n], &acc, 4);
    }
}

// TDPBF16PS: dst.fp32[m][n] += a.bf16[m][2k] b.bf16[k][2n], then += a.bf16[m][2k + 1]
// b.bf16[k][2n + 1], over k in order: each an FMA of an exact product, rounded to nearest even,
// denormal inputs read as zero and denormal results flushed to zero.
template <int C, int A, int B>
void tdpbf16ps() {
  TileState& s = state();
  check_dp(s, C, A, B, "tdpbf16ps");
  const auto bf16 = [](const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    if ((h & 0x7F80u) == 0) h &= 0x8000u;
    const uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  const auto ftz = [](float v) { return std::fabs(v) < 1.17549435e-38f ? std::copysign(0.0f, v) : v; };
  for (int m = 0; m < s.rows[C]; ++m)
    for (int n = 0; n < s.colsb[C] / 4; ++n) {
      float acc;
      std::memcpy(&acc, &s.data[C][m][4 * n], 4);
      acc = ftz(acc);
      for (int k = 0; k < s.colsb[A] / 4; ++k) {
        acc = ftz(std::fma(bf16(&s.data[A][m][4 * k]), bf16(&s.data[B][k][4 * n]), acc));
        acc = ftz(std::fma(bf16(&s.data[A][m][4 * k + 2]), bf16(&s.data[B][k][4 * n + 2]), acc));
      }
      std::memcpy(&s.data[C][m][4 * n], &acc, 4);
    }
}

#else  // the hardware

// GCC's tile intrinsics paste their tile numbers into the instruction's text, so each number
// is spelled out: T (and C, A, B) select among literal calls at compile time.
#define CUSTOMML_AMX_EACH_TILE(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

inline void ldtilecfg(const TileConfig& c) { _tile_loadconfig(&c); }
template <int T>
void tileloadd(const void* base, int64_t stride) {
  static_assert(T >= 0 && T < kTiles, "tiles 0-7");
#define CUSTOMML_AMX_LOAD(t) \
  if constexpr (T == t) _tile_loadd(t, base, stride);
  CUSTOMML_AMX_EACH_TILE(CUSTOMML_AMX_LOAD)
#undef CUSTOMML_AMX_LOAD
}
template <int T>
void tilestored(void* base, int64_t stride) {
  static_assert(T >= 0 && T < kTiles, "tiles 0-7");
#define CUSTOMML_AMX_STORE(t) \
  if constexpr (T == t) _tile_stored(t, base, stride);
  CUSTOMML_AMX_EACH_TILE(CUSTOMML_AMX_STORE)
#undef CUSTOMML_AMX_STORE
}
template <int T>
void tilezero() {
  static_assert(T >= 0 && T < kTiles, "tiles 0-7");
#define CUSTOMML_AMX_ZERO(t) \
  if constexpr (T == t) _tile_zero(t);
  CUSTOMML_AMX_EACH_TILE(CUSTOMML_AMX_ZERO)
#undef CUSTOMML_AMX_ZERO
}
inline void tilerelease() { _tile_release(); }
// The products the kernels issue: C in 0-3 with A, B in tiles 4, 5 or 6, 7.
#define CUSTOMML_AMX_EACH_PRODUCT(X, insn) \
  X(insn, 0, 4, 5)                         \
  X(insn, 1, 4, 5) X(insn, 2, 4, 5) X(insn, 3, 4, 5) X(insn, 0, 6, 7) X(insn, 1, 6, 7) X(insn, 2, 6, 7) X(insn, 3, 6, 7)
#define CUSTOMML_AMX_PRODUCT(insn, c, a, b) \
  if constexpr (C == c && A == a && B == b) insn(c, a, b);
template <int C, int A, int B>
void tdpbusd() {
  static_assert(C < 4 && ((A == 4 && B == 5) || (A == 6 && B == 7)), "a product the kernels use");
  CUSTOMML_AMX_EACH_PRODUCT(CUSTOMML_AMX_PRODUCT, _tile_dpbusd)
}
template <int C, int A, int B>
void tdpbf16ps() {
  static_assert(C < 4 && ((A == 4 && B == 5) || (A == 6 && B == 7)), "a product the kernels use");
  CUSTOMML_AMX_EACH_PRODUCT(CUSTOMML_AMX_PRODUCT, _tile_dpbf16ps)
}
#undef CUSTOMML_AMX_PRODUCT
#undef CUSTOMML_AMX_EACH_PRODUCT
#undef CUSTOMML_AMX_EACH_TILE

#endif

}  // namespace customml::cpu::amx
