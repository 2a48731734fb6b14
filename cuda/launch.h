#pragma once
// Defines: Stream and launch(), the one way a kernel is started: <<<...>>> under nvcc,
// the host SIMT emulator (cuda/simt/) otherwise, so that the same launcher code drives
// the real device and its emulation.

#include <cstddef>

// Kernels and launchers are compiled twice, by nvcc for the device and by the host
// compiler for the emulation, and both land in one library: each build gets its own
// namespace so their symbols never collide.
#if defined(__CUDACC__)
#define CUSTOMML_CUDA_NS cuda
#else
#define CUSTOMML_CUDA_NS cuda_emulated
#endif

#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include "cuda/cuda_check.h"

namespace customml::CUSTOMML_CUDA_NS {
using Stream = cudaStream_t;

template <class... KernelArgs, class... Args>
void launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t shared_bytes, Stream stream, Args... args) {
  kernel<<<grid, block, shared_bytes, stream>>>(args...);
  CUDA_CHECK(cudaGetLastError());
}
}  // namespace customml::CUSTOMML_CUDA_NS
#else
#include "simt/simt.h"

namespace customml::CUSTOMML_CUDA_NS {
using Stream = void*;

template <class... KernelArgs, class... Args>
void launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t shared_bytes, Stream, Args... args) {
  // The arguments by value: a launch recorded into a graph runs after this returns.
  simt::run_grid(grid, block, shared_bytes, [=] { kernel(static_cast<KernelArgs>(args)...); });
}
}  // namespace customml::CUSTOMML_CUDA_NS
#endif
