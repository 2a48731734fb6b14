// The pruning kernels of cpu/sparse_kernels.h compiled for AVX2 + FMA (8 lanes). Names: the CSR
// product's transposed tile is 8x8 (vectors x lanes of batch rows), the N:M product's
// block 4x32 (outputs x batch lanes).

#include "cpu/sparse.h"
#include "cpu/sparse_kernels.h"

namespace customml::cpu {

const SparseKernels kSparseAvx2{"avx2", "f32_sparse_dense__avx2_8x8", "f32_nm_dense__avx2_4x32", sparse_dense_simd,
                                nm_dense_simd};

}  // namespace customml::cpu
