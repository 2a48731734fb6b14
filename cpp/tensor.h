#pragma once
// Defines: DType, Device, Tensor (a shaped view of memory, owned or borrowed) and TypeError.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "private_api.h"

namespace customml {

// A wrong dtype is a TypeError in Python; std::invalid_argument (ValueError) is for
// wrong shapes and values. cpp/bindings/module.cpp registers the translation.
class CUSTOMML_PRIVATE_API TypeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// i64 and f64 are taken only by the metric statistics (confusion counts, regression
// sums); elsewhere they are listed so that errors can name what a caller passed.
enum class DType { f32, f16, bf16, i8, u8, i32, i64, f64, other };

CUSTOMML_PRIVATE_API const char* dtype_name(DType t);
CUSTOMML_PRIVATE_API size_t dtype_size(DType t);

enum class DeviceKind { cpu, cuda, cuda_emulated };

struct CUSTOMML_PRIVATE_API Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;
  std::string name() const;
  static Device parse(const std::string& s);  // "cpu", "cuda", "cuda:1", "cuda-emulated"
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
};

// A dense n-d array. Strides are in bytes (as NumPy's) so that ops can reject
// non-contiguous views with a clear message instead of reading the wrong elements.
class CUSTOMML_PRIVATE_API Tensor {
 public:
  Tensor() = default;
  // Borrowed view: the caller keeps the memory alive.
  Tensor(void* data, DType dtype, std::vector<int64_t> shape, std::vector<int64_t> strides, Device device = {});
  // Owned, C-contiguous, uninitialized.
  static Tensor empty(DType dtype, std::vector<int64_t> shape, Device device = {});

  void* data() const { return data_; }
  template <class T>
  T* ptr() const {
    return static_cast<T*>(data_);
  }
  DType dtype() const { return dtype_; }
  const Device& device() const { return device_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + ndim() : i]; }
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  int64_t numel() const;
  bool is_contiguous() const;
  std::string shape_str() const;  // "(3, 4)"

 private:
  void* data_ = nullptr;
  DType dtype_ = DType::f32;
  std::vector<int64_t> shape_;
  std::vector<int64_t> strides_;
  Device device_;
  std::shared_ptr<void> owner_;
};

}  // namespace customml
