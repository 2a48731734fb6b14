#pragma once
// Defines: SparseKernels, the table of the pruning kernels (apply_mask, the CSR and N:M
// sparse dense-layer products) for one ISA level, and the run-time choice of table.

#include <cstdint>

#include "backend.h"
#include "cpu/isa.h"

namespace customml::cpu {

// Rows of x one call of a product kernel handles: the batch is cut into tiles of this
// many rows (4 AVX-512 vectors of batch lanes), the unit of work the thread pool shares.
constexpr int64_t kSparseTileRows = 64;

// Floats of thread-local scratch a product kernel needs for a tile of x against the
// outputs [j0, j1): x transposed (in, kSparseTileRows) and y transposed (j1 - j0,
// kSparseTileRows), so that each weight is one broadcast times contiguous batch lanes.
inline int64_t sparse_scratch_floats(int64_t in, int64_t outputs) {
  return (in + outputs) * kSparseTileRows;
}

// x: (rows, w.in) row-major, rows <= kSparseTileRows; b: (w.out) or null -> y (rows,
// w.out) row-major, columns [j0, j1) only: y = act(x w + b). scratch: 64-byte aligned,
// sparse_scratch_floats(w.in, j1 - j0) floats (the portable kernels use none).
using CsrKernel = void (*)(float* y, const float* x, const CsrMatrix& w, const float* b, int64_t rows, int64_t j0,
                           int64_t j1, Activation act, float* scratch);
using NmKernel = void (*)(float* y, const float* x, const NmMatrix& w, const float* b, int64_t rows, int64_t j0,
                          int64_t j1, Activation act, float* scratch);

struct SparseKernels {
  const char* isa;   // "portable", "avx2", "avx512"
  const char* csr;   // the variant names, what then how: f32_spmm__avx512_4x16
  const char* nm;
  const char* mask;
  void (*apply_mask)(float* param, const uint8_t* keep, int64_t n);
  CsrKernel csr_forward;
  NmKernel nm_forward;
};

extern const SparseKernels kSparsePortable;
#ifdef CUSTOMML_X86_KERNELS
extern const SparseKernels kSparseAvx2;
extern const SparseKernels kSparseAvx512;
#endif

// The table for the active ISA level (selected with every other family by isa.cpp).
const SparseKernels& sparse_kernels();
void select_sparse(IsaLevel level);

}  // namespace customml::cpu
