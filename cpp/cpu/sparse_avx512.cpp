// The pruning kernels of cpu/sparse_kernels.h compiled for AVX-512 (16 lanes). Names: the CSR
// product's transposed tile is 4x16 (vectors x lanes of batch rows), the N:M product's
// block 4x64 (outputs x batch lanes).

#include "cpu/sparse.h"
#include "cpu/sparse_kernels.h"

namespace customml::cpu {

const SparseKernels kSparseAvx512{"avx512", "f32_spmm__avx512_4x16", "f32_nmmm__avx512_4x64", "f32_apply_mask__avx512",
                                apply_mask_kernel, spmm_simd, nmmm_simd};

}  // namespace customml::cpu
