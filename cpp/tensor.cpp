#include "tensor.h"

#include <cstdlib>
#include <new>
#include <sstream>

namespace customml {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
    case DType::i8: return "int8";
    case DType::u8: return "uint8";
    case DType::i32: return "int32";
    case DType::i64: return "int64";
    case DType::f64: return "float64";
    case DType::other: return "an unsupported dtype";
  }
  return "?";
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32:
    case DType::i32: return 4;
    case DType::f16:
    case DType::bf16: return 2;
    case DType::i8:
    case DType::u8: return 1;
    case DType::i64:
    case DType::f64: return 8;
    case DType::other: return 0;
  }
  return 0;
}

std::string Device::name() const {
  switch (kind) {
    case DeviceKind::cpu: return "cpu";
    case DeviceKind::cuda: return index == 0 ? "cuda" : "cuda:" + std::to_string(index);
    case DeviceKind::cuda_emulated: return "cuda-emulated";
  }
  return "?";
}

Device Device::parse(const std::string& s) {
  if (s == "cpu") return {DeviceKind::cpu, 0};
  if (s == "cuda-emulated") return {DeviceKind::cuda_emulated, 0};
  if (s == "cuda") return {DeviceKind::cuda, 0};
  if (s.rfind("cuda:", 0) == 0) {
    const std::string idx = s.substr(5);
    if (!idx.empty() && idx.size() < 4 && idx.find_first_not_of("0123456789") == std::string::npos)
      return {DeviceKind::cuda, std::stoi(idx)};
  }
  throw std::invalid_argument("device must be 'cpu', 'cuda', 'cuda:N' or 'cuda-emulated', got '" + s + "'");
}

Tensor::Tensor(void* data, DType dtype, std::vector<int64_t> shape, std::vector<int64_t> strides, Device device)
    : data_(data), dtype_(dtype), shape_(std::move(shape)), strides_(std::move(strides)), device_(device) {}

Tensor Tensor::empty(DType dtype, std::vector<int64_t> shape, Device device) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.device_ = device;
  const int64_t n = t.numel();
  t.strides_.assign(t.shape_.size(), 0);
  int64_t stride = static_cast<int64_t>(dtype_size(dtype));
  for (int i = t.ndim() - 1; i >= 0; --i) {
    t.strides_[i] = stride;
    stride *= t.shape_[i];
  }
  // 64-byte alignment: a full cache line and one AVX-512 vector.
  const size_t bytes = ((static_cast<size_t>(n) * dtype_size(dtype) + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, bytes == 0 ? 64 : bytes);
  if (!p) throw std::bad_alloc();
  t.owner_ = std::shared_ptr<void>(p, std::free);
  t.data_ = p;
  return t;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;  // no element to misplace (NumPy gives them any strides)
  int64_t expected = static_cast<int64_t>(dtype_size(dtype_));
  for (int i = ndim() - 1; i >= 0; --i) {
    // Dimensions of extent 1 carry no stride information (NumPy gives them any stride).
    if (shape_[i] != 1 && strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

std::string Tensor::shape_str() const {
  std::ostringstream os;
  os << "(";
  for (int i = 0; i < ndim(); ++i) os << (i ? ", " : "") << shape_[i];
  if (ndim() == 1) os << ",";
  os << ")";
  return os.str();
}

}  // namespace customml
