#pragma once
// Defines: SparseKernels, the table of the sparse dense-layer products (CSR, packed CSR
// and N:M) for one ISA level, and the run-time choice of table.

#include <cstdint>

#include "backend.h"
#include "cpu/isa.h"
#include "cpu/sparse_packed.h"
#include "private_api.h"

namespace customml::cpu {

// Rows of x one call of a product kernel handles: the batch is cut into tiles of this
// many rows (4 AVX-512 vectors of batch lanes), the unit of work the thread pool shares.
constexpr int64_t kSparseTileRows = 64;

// This thread's scratch of at least `floats` floats, 64-byte aligned, reused by later
// calls: asked for only by the kernel paths that transpose a tile.
using ScratchFn = float* (*)(int64_t floats);

// x: (rows, w.in) row-major, rows <= kSparseTileRows; b: (w.out) or null -> y (rows,
// w.out) row-major, columns [j0, j1) only: y = act(x w + b).
using CsrKernel = void (*)(float* y, const float* x, const CsrMatrix& w, const float* b, int64_t rows, int64_t j0,
                           int64_t j1, Activation act, ScratchFn scratch);
using NmKernel = void (*)(float* y, const float* x, const NmMatrix& w, const float* b, int64_t rows, int64_t j0,
                          int64_t j1, Activation act, ScratchFn scratch);

// x: (rows, w.in) row-major, rows <= packed_max_rows; w packed (cpu/sparse_packed.h); b:
// (w.out) or null -> y (rows, w.out) row-major, the outputs of groups [g0, g1) only.
using CsrPackedKernel = void (*)(float* y, const float* x, const CsrPacked& w, const float* b, int64_t rows, int64_t g0,
                                 int64_t g1, Activation act);

struct SparseKernels {
  const char* isa;  // "portable", "avx2", "avx512"
  const char* csr;  // the variant names, what then how: f32_sparse_dense__avx512_4x16
  const char* nm;
  CsrKernel csr_forward;
  NmKernel nm_forward;
  // The gather-free product over the packed layout, for batches of at most
  // packed_max_rows rows (of any size where the layout is at least half full); null (and
  // 0) where the level has none: the format's own kernel runs.
  const char* csr_packed = nullptr;
  CsrPackedKernel csr_packed_forward = nullptr;
  int64_t packed_max_rows = 0;
};

extern const SparseKernels kSparsePortable;
#ifdef CUSTOMML_X86_KERNELS
extern const SparseKernels kSparseAvx2;
extern const SparseKernels kSparseAvx512;
#endif

// The table for the active ISA level (selected with every other family by isa.cpp).
CUSTOMML_PRIVATE_API const SparseKernels& sparse_kernels();
void select_sparse(IsaLevel level);

}  // namespace customml::cpu
