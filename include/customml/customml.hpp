// customml's C++ wrapper: header-only, over the C API of customml.h (C++17). A Model owns a
// cml_model (RAII, movable, not copyable); calls take pointer + size and throw
// customml::Error, which carries the status and the library's message. A Model is
// immutable: share one (e.g. by reference or shared_ptr) across threads and call predict
// from all of them at once. See docs/embedding.md.
#ifndef CUSTOMML_CUSTOMML_HPP
#define CUSTOMML_CUSTOMML_HPP

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "customml/customml.h"

namespace customml {

class Error : public std::runtime_error {
 public:
  Error(cml_status status, const char* message) : std::runtime_error(message), status_(status) {}
  cml_status status() const noexcept { return status_; }

 private:
  cml_status status_;
};

inline void check(cml_status status) {
  if (status != CML_OK) throw Error(status, cml_last_error());
}

inline const char* version() { return cml_version(); }
inline void set_num_threads(int threads) { check(cml_set_num_threads(threads)); }

class Model {
 public:
  explicit Model(const std::string& path) { check(cml_model_load(path.c_str(), &model_)); }
  static Model from_memory(const void* data, std::size_t size) {
    cml_model* m = nullptr;
    check(cml_model_load_from_memory(data, size, &m));
    return Model(m);
  }
  Model(Model&& other) noexcept : model_(std::exchange(other.model_, nullptr)) {}
  Model& operator=(Model&& other) noexcept {
    if (this != &other) {
      cml_model_free(model_);
      model_ = std::exchange(other.model_, nullptr);
    }
    return *this;
  }
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
  ~Model() { cml_model_free(model_); }

  int64_t input_dim() const { return cml_model_input_dim(model_); }
  int64_t output_dim() const { return cml_model_output_dim(model_); }

  // x: rows x input_dim() floats, row-major -> y: y_len >= rows x output_dim() floats.
  void predict(const float* x, int64_t rows, float* y, int64_t y_len) const {
    check(cml_predict(model_, x, rows, input_dim(), y, y_len));
  }
  void predict_proba(const float* x, int64_t rows, float* y, int64_t y_len) const {
    check(cml_predict_proba(model_, x, rows, input_dim(), y, y_len));
  }
  // Allocating conveniences: x holds whole rows.
  std::vector<float> predict(const std::vector<float>& x) const {
    const int64_t rows = rows_of(x);
    std::vector<float> y(static_cast<std::size_t>(rows * output_dim()));
    predict(x.data(), rows, y.data(), static_cast<int64_t>(y.size()));
    return y;
  }

  const cml_model* get() const noexcept { return model_; }

 private:
  explicit Model(cml_model* m) : model_(m) {}
  int64_t rows_of(const std::vector<float>& x) const {
    const int64_t in = input_dim();
    if (static_cast<int64_t>(x.size()) % in != 0)
      throw Error(CML_INVALID_ARGUMENT, "x does not hold whole rows of the model's input dimension");
    return static_cast<int64_t>(x.size()) / in;
  }
  cml_model* model_ = nullptr;
};

}  // namespace customml

#endif  // CUSTOMML_CUSTOMML_HPP
