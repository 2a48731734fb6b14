#pragma once
// Defines: import_dlpack and check_memory, the DLPack import Views and customml.Array share.

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "array.h"
#include "dlpack.h"
#include "tensor.h"

namespace customml {

// Throws, naming `what` ("[dense_forward] x"), unless memory on DLPack device `memory`
// can be used by an op on `device`: host memory (kDLCPU, pinned) on "cpu" and
// "cuda-emulated", GPU memory on "cuda:N" of the same index, managed memory on both.
// Host memory on "cuda" is a TypeError (as a NumPy array there), the rest ValueErrors.
void check_memory(const std::string& what, const std::string& type_name, const dlpack::DLDevice& memory,
                  const Device& device);

// A DLPack tensor taken from `obj` for an op on `device`: checked with check_memory
// before the capsule is asked for, requested with the device's stream (so the producer
// orders its pending work before ours) and max_version (1, 0) (older producers: without
// it), then renamed "used_dltensor[_versioned]"; `owner` calls the producer's deleter
// when the last holder lets go.
struct ImportedTensor {
  std::shared_ptr<void> owner;
  void* data = nullptr;
  DType dtype = DType::other;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in bytes, as Tensor's
  dlpack::DLDevice memory{};
  bool readonly = false;
};
ImportedTensor import_dlpack(const pybind11::object& obj, const std::string& what, const Device& device);

}  // namespace customml
