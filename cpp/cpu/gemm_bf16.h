#pragma once
// Defines: the bfloat16 conversions the bf16 instructions make, the packed bf16 weight layout
// every CPU gemm_bf16 variant reads, GemmBf16Args, gemm_bf16 (dispatched at run time by ISA
// level) and its variants.
//
// The arithmetic is that of VDPBF16PS (Intel SDM, "FP32 FMA with DAZ in, FTZ out and RNE
// rounding, MXCSR neither consulted nor updated"), and the portable variant is its
// specification: activations rounded to bf16 as VCVTNE2PS2BF16 rounds them (nearest even,
// denormals to signed zero, NaN quieted), weights stored bf16 (denormals read as zero), and
// per output y = sum over k pairs p, in increasing order, of acc = ftz(fma(x[2p+1], w[2p+1],
// acc)) then acc = ftz(fma(x[2p], w[2p], acc)) from acc = +0: the odd element first, as the
// manual's pseudo-code adds it. Each product of two bf16 values is exact in float32, so an
// fma is one rounding per pair element, and every variant that keeps this order gives the same
// bits (docs/decisions.md, "bf16").

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "activation.h"
#include "cpu/isa.h"
#include "private_api.h"

namespace customml::cpu {

// float32 -> bf16 bits as VCVTNEPS2BF16: zero and denormals to a zero of the same sign,
// NaN to the NaN of its upper half with the quiet bit set, inf kept, the rest rounded to
// nearest even (which may round up to inf). Branch-free so that loops over it vectorize.
inline uint16_t bf16_from_float(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t mag = u & 0x7FFFFFFFu;
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x40u;
  const uint32_t zero = (u >> 16) & 0x8000u;
  const uint32_t r = mag > 0x7F800000u ? nan : mag < 0x00800000u ? zero : rounded;
  return static_cast<uint16_t>(r);
}

// bf16 bits -> float32, exactly.
inline float bf16_to_float(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// bf16 bits as the instructions read them: a denormal (exponent 0) is a zero of its sign.
inline uint16_t bf16_daz(uint16_t b) { return (b & 0x7F80u) == 0 ? static_cast<uint16_t>(b & 0x8000u) : b; }

// Packed W (k, n): panels of kBf16PanelCols columns; in a panel, row p (a pair of k) is 16
// dwords, dword j = w[2p, 16 q + j] (low half) | w[2p + 1, 16 q + j] (high half): the
// operand of one vdpbf16ps, and a row of the B tile tdpbf16ps reads. Pairs are padded to a
// multiple of kBf16PairBlock with zeros (a whole B tile), columns to 16, weights read as
// zero where denormal. Every variant reads this one layout: the ISA ceiling may change
// between pack and call.
constexpr int64_t kBf16PanelCols = 16;
constexpr int64_t kBf16PairBlock = 16;
inline int64_t bf16_pairs(int64_t k) { return (k + 1) / 2; }
inline int64_t bf16_padded_pairs(int64_t k) {
  return (bf16_pairs(k) + kBf16PairBlock - 1) / kBf16PairBlock * kBf16PairBlock;
}
inline int64_t bf16_panels(int64_t n) { return (n + kBf16PanelCols - 1) / kBf16PanelCols; }
// In dwords (one dword a pair of one column).
inline int64_t bf16_panel_dwords(int64_t k) { return bf16_padded_pairs(k) * kBf16PanelCols; }

size_t gemm_bf16_packed_bytes(int64_t k, int64_t n);
// w: (k, n) bf16 bits -> packed (gemm_bf16_packed_bytes(k, n) bytes, 4-byte aligned)
void gemm_bf16_pack(void* packed, const uint16_t* w, int64_t k, int64_t n);

// One call, or one thread's columns of it: y (m, n) with leading dimension ldy.
struct GemmBf16Args {
  int64_t m = 0, k = 0, n = 0, ldy = 0;
  const float* x = nullptr;          // (m, k), float32, rounded to bf16 as it is read
  const uint32_t* panels = nullptr;  // this slice's first panel
  const float* bias = nullptr;       // (n) of this slice, or null
  Activation act = Activation::identity;
  float* y = nullptr;
  void* a_work = nullptr;  // this thread's bf16_a_work_bytes(k) bytes
};

// Rows of x converted at once (a multiple of every variant's tile rows, 4 and 6), fewer
// for deep k so that the converted chunk stays near 128 KiB.
inline int64_t bf16_row_chunk(int64_t k) {
  const int64_t rows = (int64_t{128} * 1024 / (bf16_padded_pairs(k) * 8)) / 12 * 12;
  return rows < 12 ? 12 : rows > 240 ? 240 : rows;
}
// A chunk of rows converted: up to 8 bytes a pair (two float32), 64-byte aligned rows.
inline size_t bf16_a_work_bytes(int64_t k) { return static_cast<size_t>(bf16_row_chunk(k) * bf16_padded_pairs(k) * 8); }

using GemmBf16Kernel = void (*)(const GemmBf16Args&);

// x: (m, k) f32  packed: w (k, n) bf16 -> y (m, n) = act(bf16(x) . w + bias)
void gemm_bf16(float* y, const float* x, const void* packed, const float* bias, int64_t m, int64_t k, int64_t n,
               Activation act);
CUSTOMML_PRIVATE_API const char* gemm_bf16_variant();
void select_gemm_bf16(IsaLevel level);

// The variants, named what then how: portable always; the others only on x86-64.
void bf16_gemm__portable_4x16(const GemmBf16Args& args);
// The AMX-BF16 tile kernel on the host model of the tile instructions (any CPU, for tests).
void bf16_gemm__amxemu_16x64(const GemmBf16Args& args);
#ifdef CUSTOMML_X86_KERNELS
void bf16_gemm__amx_16x64(const GemmBf16Args& args);
void bf16_gemm__avx2_4x16(const GemmBf16Args& args);
void bf16_gemm__avx512_4x64(const GemmBf16Args& args);
void bf16_gemm__avx512bf16_6x64(const GemmBf16Args& args);
#endif

}  // namespace customml::cpu
