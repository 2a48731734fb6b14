#pragma once
// Defines: CUDA_CHECK, which turns a failed CUDA runtime call into std::runtime_error
// naming the call and the error (Python sees RuntimeError); never exit().

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#define CUDA_CHECK(call)                                                                                          \
  do {                                                                                                            \
    const cudaError_t customml_err_ = (call);                                                                     \
    if (customml_err_ != cudaSuccess)                                                                             \
      throw std::runtime_error(std::string("[cuda] ") + #call + " failed: " + cudaGetErrorString(customml_err_)); \
  } while (0)
