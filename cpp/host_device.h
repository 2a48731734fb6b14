#pragma once
// Defines: CUSTOMML_HD, which marks a function callable from both host code and CUDA
// kernels (__host__ __device__ under nvcc, nothing elsewhere), so that the CPU kernels,
// the CUDA kernels and their host emulation share one definition of each formula.

#if defined(__CUDACC__)
#define CUSTOMML_HD __host__ __device__
#else
#define CUSTOMML_HD
#endif
