// _core.read_model_file: the C++ model-file reader (cpp/model_file.h) for customml.io, with
// the metadata as Python objects and each Dense layer's weights as NumPy arrays.

#include "model_file.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cerrno>
#include <cstring>

#include "bindings.h"

namespace py = pybind11;

namespace customml {
namespace {

py::object to_python(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null: return py::none();
    case Json::value_t::boolean: return py::bool_(v.get<bool>());
    case Json::value_t::number_integer: return py::int_(v.get<int64_t>());
    case Json::value_t::number_unsigned: return py::int_(v.get<uint64_t>());
    case Json::value_t::number_float: return py::float_(v.get<double>());
    case Json::value_t::string: return py::str(v.get<std::string>());
    case Json::value_t::array: {
      py::list out;
      for (const Json& x : v) out.append(to_python(x));
      return std::move(out);
    }
    default: {
      py::dict out;
      for (auto it = v.begin(); it != v.end(); ++it) out[py::str(it.key())] = to_python(it.value());
      return std::move(out);
    }
  }
}

template <class T>
py::array_t<T> array(const std::vector<T>& v, std::vector<py::ssize_t> shape) {
  py::array_t<T> a(shape);
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
  return a;
}

py::dict describe(const ModelFile& f) {
  py::dict d;
  d["format_version"] = f.format_version;
  d["architecture"] = to_python(f.architecture);
  d["training"] = to_python(f.training);
  d["optimizer_state"] = to_python(f.optimizer_state);
  d["callbacks_state"] = to_python(f.callbacks_state);
  py::dict layers;
  for (const auto& [i, w] : f.dense) {
    py::dict l;
    l["bias"] = array(w.bias, {w.out});
    if (w.int8) {
      l["w_q"] = array(w.w_q, {w.in, w.out});
      l["w_scale"] = array(w.w_scale, {static_cast<py::ssize_t>(w.w_scale.size())});
      l["in_scale"] = w.in_scale;
      l["in_zero"] = w.in_zero;
    } else {
      l["kernel"] = array(w.kernel, {w.in, w.out});
      if (!w.keep.empty()) l["keep"] = array(w.keep, {w.in, w.out}).attr("astype")("bool");
    }
    l["bf16"] = w.bf16;
    l["format"] = w.format;
    l["min_batch"] = w.min_batch;
    l["max_batch"] = w.max_batch;
    if (w.has_nm) l["n_m"] = py::make_tuple(w.nm_n, w.nm_m);
    layers[py::int_(i)] = l;
  }
  d["layers"] = layers;
  py::dict slots;
  if (!f.optimizer_state.is_null()) {
    for (const Json& slot : f.optimizer_state["slots"]) {
      const std::string s = slot.get<std::string>();
      py::dict arrays;
      for (const auto& [i, w] : f.dense) {
        const std::string p = "optimizer." + s + ".layers." + std::to_string(i);
        arrays[py::make_tuple(i, "kernel")] = array(f.f32(p + ".kernel"), {w.in, w.out});
        arrays[py::make_tuple(i, "bias")] = array(f.f32(p + ".bias"), {w.out});
      }
      slots[py::str(s)] = arrays;
    }
  }
  d["slots"] = slots;
  return d;
}

}  // namespace

void bind_model_file(py::module_& m) {
  m.def(
      "read_model_file",
      [](const std::string& where, std::optional<py::bytes> data) {
        ModelFile f;
        const std::string raw = data ? std::string(*data) : std::string();
        try {
          // Reading and checking hold no Python object: the GIL is released.
          py::gil_scoped_release release;
          f = data ? parse_model_file(std::vector<uint8_t>(raw.begin(), raw.end()), where) : read_model_file(where);
        } catch (const ModelFileIoError& e) {
          errno = e.error_code;  // FileNotFoundError, PermissionError, ... as open() raises them
          PyErr_SetFromErrnoWithFilename(PyExc_OSError, where.c_str());
          throw py::error_already_set();
        }
        return describe(f);
      },
      py::arg("where"), py::arg("data") = py::none(),
      "Reads and validates a customml model file (at the path `where`, or `data`, its bytes, which `where` then "
      "names in messages): the metadata as Python objects and each Dense layer's weights. ValueError names any "
      "problem.");
  m.def(
      "_sha256_hex",
      [](const py::bytes& data) {
        const std::string s = data;
        return sha256_hex(reinterpret_cast<const uint8_t*>(s.data()), s.size());
      },
      py::arg("data"), "The hex SHA-256 of data by the vendored implementation the reader uses (for tests).");
  m.attr("MODEL_FILE_FORMAT_VERSION") = kFormatVersion;
  m.attr("MODEL_FILE_MAX_HEADER_BYTES") = kMaxHeaderBytes;
}

}  // namespace customml
