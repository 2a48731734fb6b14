#pragma once
// Defines: GemmArgs and gemm_f32, the float32 GEMM with a fused bias + activation
// epilogue that every dense kernel uses, dispatched at run time by ISA level.

#include <cstdint>

#include "activation.h"
#include "cpu/isa.h"
#include "private_api.h"

namespace customml::cpu {

// C (m, n) = act(op(A) (m, k) . op(B) (k, n) + bias (n)). A and B are addressed
// through element strides (row stride, column stride), so the three GEMMs of
// training read transposed operands in place, with no materialized transpose.
// C is row-major with leading dimension ldc. If preact is non-null it receives the
// value before the activation (leading dimension ldc as well).
struct GemmArgs {
  int64_t m = 0, n = 0, k = 0;
  const float* a = nullptr;
  int64_t a_rs = 0, a_cs = 0;
  const float* b = nullptr;
  int64_t b_rs = 0, b_cs = 0;
  float* c = nullptr;
  int64_t ldc = 0;
  const float* bias = nullptr;
  Activation act = Activation::identity;
  float* preact = nullptr;
  // B pre-packed by gemm_f32_pack_b for inference (each NR-column panel holding all k
  // rows), used when packed_nr is the running variant's NR; B is read otherwise.
  const float* packed_b = nullptr;
  int packed_nr = 0;
  // Small-m path only: visit the column blocks last to first. Each column's sum is the
  // same either way; alternating the order between calls keeps in L2 the weights the
  // next call reads first when they do not all fit (dense_forward_packed).
  bool reverse_columns = false;
};

// Packing buffers for one call, provided by the dispatcher (thread-local, reused).
struct GemmWorkspace {
  float* packed_a = nullptr;  // kMc x kKc
  float* packed_b = nullptr;  // kKc x kNc
};

// Cache blocking shared by every variant: a KC x NR panel of B (32 KiB at NR = 32)
// stays in L1 while MC rows of A stream from L2; NC columns of B fit in L2.
constexpr int64_t kKc = 256;
constexpr int64_t kMc = 120;   // a multiple of every MR (4, 6, 12)
constexpr int64_t kNc = 1024;  // a multiple of every NR (16, 32)

using GemmKernel = void (*)(const GemmArgs&, const GemmWorkspace&);

void gemm_f32(const GemmArgs& args);
// Pre-packing of a row-major B (k, n) for the running variant: the floats it takes, and
// the packing itself (returns the NR it packed for, to store as GemmArgs::packed_nr).
int64_t gemm_f32_packed_floats(int64_t k, int64_t n);
int gemm_f32_pack_b(float* dst, const float* b, int64_t k, int64_t n);
CUSTOMML_PRIVATE_API const char* gemm_f32_variant();
void select_gemm_f32(IsaLevel level);

// The variants, named what then how: portable always; the others only on x86-64.
void f32_gemm__portable_4x16(const GemmArgs& args, const GemmWorkspace& ws);
#ifdef CUSTOMML_X86_KERNELS
void f32_gemm__avx2_6x16(const GemmArgs& args, const GemmWorkspace& ws);
void f32_gemm__avx512_12x32(const GemmArgs& args, const GemmWorkspace& ws);
#endif

}  // namespace customml::cpu
