#pragma once
// Defines: the argument checks the Tensor-level ops share (ops.cpp, ops_sparse.cpp,
// ops_int8.cpp): each names the op and the argument in its message and throws
// std::invalid_argument (ValueError), TypeError or std::out_of_range (IndexError).

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend.h"
#include "tensor.h"

namespace customml::ops::detail {

[[noreturn]] inline void fail(const char* op, const std::string& msg) {
  throw std::invalid_argument(std::string("[") + op + "] " + msg);
}

inline void check_dtype(const char* op, const char* name, const Tensor& t, DType want) {
  if (t.dtype() != want)
    throw TypeError(std::string("[") + op + "] " + name + " must be " + dtype_name(want) + ", got " +
                    dtype_name(t.dtype()));
}

// dtype, rank and layout of one argument.
inline void check(const char* op, const char* name, const Tensor& t, DType want, int ndim) {
  check_dtype(op, name, t, want);
  if (ndim >= 0 && t.ndim() != ndim)
    fail(op, std::string(name) + " must be " + std::to_string(ndim) + "-D, got shape " + t.shape_str());
  if (!t.is_contiguous())
    fail(op, std::string(name) + " must be C-contiguous (pass numpy.ascontiguousarray(" + name + "))");
}

inline void check_shape(const char* op, const char* name, const Tensor& t, const std::vector<int64_t>& want) {
  if (t.shape() != want) {
    Tensor expected(nullptr, t.dtype(), want, std::vector<int64_t>(want.size(), 0));
    fail(op, std::string(name) + " has shape " + t.shape_str() + ", expected " + expected.shape_str());
  }
}

inline void check_same_shape(const char* op, const char* name, const Tensor& t, const char* ref_name,
                             const Tensor& ref) {
  if (t.shape() != ref.shape())
    fail(op, std::string(name) + " has shape " + t.shape_str() + " but " + ref_name + " has shape " + ref.shape_str());
}

inline void check_device(const char* op, const char* name, const Tensor& t, const Tensor& ref) {
  if (!(t.device() == ref.device()))
    fail(op,
         std::string(name) + " is on " + t.device().name() + " but the other arguments are on " + ref.device().name());
}

// An output must not share memory with an input it is computed from.
inline void check_no_overlap(const char* op, const char* out_name, const Tensor& out, const char* in_name,
                             const Tensor& in) {
  const char* o = static_cast<const char*>(out.data());
  const char* i = static_cast<const char*>(in.data());
  const size_t ob = static_cast<size_t>(out.numel()) * dtype_size(out.dtype());
  const size_t ib = static_cast<size_t>(in.numel()) * dtype_size(in.dtype());
  if (ob && ib && o < i + ib && i < o + ob)
    fail(op, std::string(out_name) + " shares memory with " + in_name + "; pass a separate array");
}

inline void check_finite_param(const char* op, const char* name, float v) {
  if (!std::isfinite(v)) fail(op, std::string(name) + " must be finite, got " + std::to_string(v));
}

// x: (batch, in) against weight: (in, out), both sizes of weight >= 1.
inline void check_x_against_weight(const char* op, const Tensor& x, const Tensor& w) {
  if (x.dim(1) != w.dim(0))
    fail(op, "x has " + std::to_string(x.dim(1)) + " columns but weight has " + std::to_string(w.dim(0)) + " rows");
  if (w.dim(0) == 0 || w.dim(1) == 0) fail(op, "weight has shape " + w.shape_str() + "; both sizes must be >= 1");
}

// The elements of a small tensor (labels, class weights) on the host, for the checks
// that read values: device memory is not host-addressable on every backend.
template <class T>
inline std::vector<T> host_values(const Tensor& t) {
  std::vector<T> v(static_cast<size_t>(t.numel()));
  backend_for(t.device()).copy_to_host(v.data(), t.data(), sizeof(T) * v.size());
  return v;
}

// One scalar result of an op (a loss, a norm, a count): in the device's memory while the
// op runs, zero first (ops that add to it), read back by value(). Device memory only where
// the host cannot address it; host memory otherwise, with no allocation.
template <class T>
class DeviceScalar {
 public:
  explicit DeviceScalar(Backend& backend) : backend_(backend), device_(&backend) {
    ptr_ = backend.host_addressable() ? &host_ : device_.reserve(1);
    backend.fill_zero(ptr_, sizeof(T));
  }
  T* ptr() { return ptr_; }
  T value() {
    if (ptr_ != &host_) backend_.copy_to_host(&host_, ptr_, sizeof(T));
    return host_;
  }

 private:
  Backend& backend_;
  Buffer<T> device_;
  T host_{};
  T* ptr_;
};

inline float* f32(const Tensor& t) { return t.ptr<float>(); }
inline float* f32(const Tensor* t) { return t ? t->ptr<float>() : nullptr; }

}  // namespace customml::ops::detail
