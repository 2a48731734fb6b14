#pragma once
// Defines: the packed int8 weight layout every CPU gemm_s8 variant reads, GemmS8Args,
// gemm_s8 (dispatched at run time by ISA level) and its variants.

#include <cstddef>
#include <cstdint>

#include "backend.h"
#include "cpu/isa.h"
#include "private_api.h"

namespace customml::cpu {

// Packed W (k, n): panels of kS8PanelCols columns, each k-major in groups of 4
// consecutive k; a group is 16 columns x 4 bytes, byte 4 j + t = w[4 g + t, 16 p + j]:
// the s8 operand of one vpdpbusd (AVX2 sign-extends the same bytes). k is padded to a
// multiple of 4 and n to a multiple of 16 with zeros, so no variant needs a k or column
// mask. The int32 column sums (the zero-point correction) follow the panels. Every
// variant reads this one layout: the ISA ceiling may change between pack and call.
constexpr int64_t kS8PanelCols = 16;
inline int64_t s8_groups(int64_t k) { return (k + 3) / 4; }
inline int64_t s8_panels(int64_t n) { return (n + kS8PanelCols - 1) / kS8PanelCols; }
inline int64_t s8_panel_bytes(int64_t k) { return s8_groups(k) * 4 * kS8PanelCols; }

size_t gemm_s8_packed_bytes(int64_t k, int64_t n);
// w: (k, n) i8 -> packed (gemm_s8_packed_bytes(k, n) bytes)
void gemm_s8_pack(void* packed, const int8_t* w, int64_t k, int64_t n);

// One call, or one thread's columns of it: y (m, n) with leading dimension ldy; the
// epilogue's per-channel pointers (w_scale, bias) start at this slice's first column.
struct GemmS8Args {
  int64_t m = 0, k = 0, n = 0, ldy = 0;
  const uint8_t* a = nullptr;       // (m, k)
  const int8_t* panels = nullptr;   // this slice's first panel
  const int32_t* colsum = nullptr;  // (n) of this slice
  float* y_f32 = nullptr;
  uint8_t* y_u8 = nullptr;
  int32_t* y_i32 = nullptr;
  GemmS8Epilogue e;
  void* a_work = nullptr;  // this thread's s8_a_work_bytes(k) bytes
};

// Rows of A taken at once (a multiple of every variant's tile rows, 4 and 6): up to
// 240, fewer for deep k so that the chunk stays near 256 KiB. The chunk is staged or
// packed once (when a variant needs it) and then read by every column block.
inline int64_t s8_row_chunk(int64_t k) {
  const int64_t rows = (int64_t{256} * 1024 / (s8_groups(k) * 4)) / 12 * 12;
  return rows < 12 ? 12 : rows > 240 ? 240 : rows;
}
// A chunk of A rows as a variant's tiles read them when not in place: codes with rows
// padded to whole groups (k not a multiple of 4), or packed, of up to 2 bytes an element.
inline size_t s8_a_work_bytes(int64_t k) { return static_cast<size_t>(s8_row_chunk(k) * s8_groups(k) * 4 * 2); }

using GemmS8Kernel = void (*)(const GemmS8Args&);

// a: (m, k) u8  packed: w (k, n) -> one of y_f32 / y_u8 / y_i32 (m, n), per the epilogue.
void gemm_s8(float* y_f32, uint8_t* y_u8, int32_t* y_i32, const uint8_t* a, const void* packed, GemmS8Shape s,
             const GemmS8Epilogue& e);
CUSTOMML_PRIVATE_API const char* gemm_s8_variant();
void select_gemm_s8(IsaLevel level);

// The variants, named what then how: portable always; the others only on x86-64.
void s8_gemm__portable_4x16(const GemmS8Args& args);
// The AMX tile kernel on the host model of the tile instructions (any CPU, for tests).
void s8_gemm__amxemu_16x64(const GemmS8Args& args);
#ifdef CUSTOMML_X86_KERNELS
void s8_gemm__amx_16x64(const GemmS8Args& args);
void s8_gemm__avx2_6x16(const GemmS8Args& args);
void s8_gemm__avx512vnni_6x64(const GemmS8Args& args);
#endif

}  // namespace customml::cpu
