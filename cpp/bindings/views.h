#pragma once
// Defines: Views, the zero-copy Tensor views of the arrays one _core call receives.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tensor.h"

namespace customml {

// Borrowed views of the arrays one call receives, zero-copy: NumPy arrays on the host
// devices; customml.Array and any object with __dlpack__ (PyTorch, CuPy, JAX, ...) whose
// memory the device can use (host memory on "cpu" / "cuda-emulated", GPU memory of the
// same index on "cuda"); objects exposing only __cuda_array_interface__ on "cuda". Inputs
// that are not arrays yet (lists) are converted, and kept alive for the call; outputs must
// be arrays already, or results would land in a temporary. Byte order: arrays of a
// non-native byte order get DType::other, so no kernel reads them.
//
// Other libraries' GPU arrays are ordered before the call by their producer (the DLPack
// stream handshake, or the __cuda_array_interface__ stream); since they may be reused on
// the producer's stream as soon as the call returns, a call that took any waits for the
// device at its end.
class Views {
 public:
  Views(const char* op, const std::string& device) : Views(op, Device::parse(device)) {}
  // A device that cannot run says so before anything else is checked.
  Views(const char* op, const Device& device);
  Views(const Views&) = delete;
  Views& operator=(const Views&) = delete;
  ~Views();

  Tensor in(const pybind11::object& obj, const char* name) { return view(obj, name, false); }
  Tensor out(const pybind11::object& obj, const char* name) { return view(obj, name, true); }
  std::optional<Tensor> in(const std::optional<pybind11::object>& obj, const char* name) {
    if (!obj || obj->is_none()) return std::nullopt;
    return view(*obj, name, false);
  }
  std::optional<Tensor> out(const std::optional<pybind11::object>& obj, const char* name) {
    if (!obj || obj->is_none()) return std::nullopt;
    return view(*obj, name, true);
  }

 private:
  std::string prefix(const char* name) const { return std::string("[") + op_ + "] " + name; }
  Tensor view(const pybind11::object& obj, const char* name, bool output);
  pybind11::array host_array(const pybind11::object& obj, const char* name, bool output);
  Tensor array_view(const pybind11::object& obj, const char* name, bool output);
  Tensor dlpack_view(const pybind11::object& obj, const char* name, bool output);
  Tensor gpu_view(const pybind11::object& obj, const char* name, bool output);

  const char* op_;
  Device device_;
  std::vector<pybind11::object> keep_;
  std::vector<std::shared_ptr<void>> owned_;  // consumed DLPack tensors, released after the call
  bool foreign_gpu_ = false;                  // another library's GPU memory is in use
};

}  // namespace customml
