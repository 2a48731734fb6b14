#pragma once
// Defines: the bind_* function of each of _core's files, and the helpers several of them share.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "tensor.h"

namespace customml {

class Network;

void bind_arrays(pybind11::module_& m);      // arrays.cpp: customml.Array, DLPack in both directions
void bind_test_hooks(pybind11::module_& m);  // test_hooks.cpp: the private functions tests and probes call
void bind_ops(pybind11::module_& m);         // ops.cpp: one function per op
void bind_configs(pybind11::module_& m);     // configs.cpp: the structs Network takes (LayerSpec, LossConfig, ...)
void bind_network(pybind11::module_& m);     // network.cpp: Network, the executor
void bind_model_file(pybind11::module_& m);  // model_file.cpp: read_model_file, the C++ model-file reader
void bind_predict(pybind11::class_<Network>& network);  // predict.cpp: Network.predict and its fast path

// NumPy's kind character and item size, as NumPy dtypes and __cuda_array_interface__
// typestrs ("<f4", "|i1") give them; DType::other for any other.
inline DType dtype_from(char kind, int64_t size) {
  if (kind == 'f' && size == 4) return DType::f32;
  if (kind == 'f' && size == 8) return DType::f64;
  if (kind == 'f' && size == 2) return DType::f16;
  if (kind == 'i' && size == 4) return DType::i32;
  if (kind == 'i' && size == 8) return DType::i64;
  if (kind == 'i' && size == 1) return DType::i8;
  if (kind == 'u' && size == 1) return DType::u8;
  return DType::other;
}

inline DType dtype_of(const pybind11::dtype& d) { return dtype_from(d.kind(), d.itemsize()); }

// The name of obj's type, for messages ("got list").
inline std::string type_name(const pybind11::handle& obj) {
  return pybind11::str(pybind11::type::of(obj).attr("__name__"));
}

// Runs a parser of a configuration string, naming the op in its error.
template <class Parse>
auto parse_for(const char* op, Parse&& parse) {
  try {
    return parse();
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("[") + op + "] " + e.what());
  }
}

inline const Tensor* ptr(const std::optional<Tensor>& t) { return t ? &*t : nullptr; }

}  // namespace customml
