#include "array.h"

#include <atomic>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "backend.h"

namespace customml {
namespace {

std::atomic<int64_t> exports_alive{0};

// What an exported managed tensor holds: the memory's owner and the shape and strides
// its DLTensor points into.
struct ExportContext {
  std::shared_ptr<void> owner;
  std::vector<int64_t> shape, strides;
};

ExportContext* context_of(const Array& a) {
  auto* ctx = new ExportContext{a.owner(), a.shape(), std::vector<int64_t>(a.shape().size())};
  int64_t stride = 1;  // in elements; DLPack 1.0 wants them even for a C-contiguous tensor
  for (size_t i = a.shape().size(); i-- > 0;) {
    ctx->strides[i] = stride;
    stride *= a.shape()[i];
  }
  return ctx;
}

dlpack::DLTensor tensor_of(const Array& a, ExportContext* ctx) {
  return dlpack::DLTensor{a.numel() ? a.data() : nullptr,
                          dlpack_device(a.device()),
                          static_cast<int32_t>(a.shape().size()),
                          dlpack_dtype(a.dtype()),
                          ctx->shape.data(),
                          ctx->strides.data(),
                          0};
}

template <class Managed>
void delete_export(Managed* self) {
  delete static_cast<ExportContext*>(self->manager_ctx);
  delete self;
  exports_alive.fetch_sub(1, std::memory_order_relaxed);
}

// Copies bytes between two devices' memory.
void copy_between(void* dst, const Device& to, const void* src, const Device& from, size_t bytes) {
  if (bytes == 0) return;
  if (from.kind == DeviceKind::cpu) {
    backend_for(to).copy_to_device(dst, src, bytes);
  } else if (to.kind == DeviceKind::cpu) {
    backend_for(from).copy_to_host(dst, src, bytes);
  } else {
    std::vector<unsigned char> host(bytes);
    backend_for(from).copy_to_host(host.data(), src, bytes);
    backend_for(to).copy_to_device(dst, host.data(), bytes);
  }
}

}  // namespace

Array Array::empty(DType dtype, std::vector<int64_t> shape, const Device& device) {
  Backend& backend = backend_for(device);
  Array a(nullptr, nullptr, dtype, std::move(shape), device, false);
  void* p = backend.allocate(a.nbytes());
  a.owner_ = std::shared_ptr<void>(p, [&backend](void* q) { backend.deallocate(q); });
  a.data_ = p;
  return a;
}

Array::Array(std::shared_ptr<void> owner, void* data, DType dtype, std::vector<int64_t> shape, Device device,
             bool readonly)
    : owner_(std::move(owner)),
      data_(data),
      dtype_(dtype),
      shape_(std::move(shape)),
      device_(device),
      readonly_(readonly) {}

int64_t Array::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

Tensor Array::view() const {
  std::vector<int64_t> strides(shape_.size());
  int64_t stride = static_cast<int64_t>(dtype_size(dtype_));
  for (size_t i = shape_.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= shape_[i];
  }
  return Tensor(data_, dtype_, shape_, std::move(strides), device_);
}

Array Array::copy_to(const Device& device) const {
  Array out = empty(dtype_, shape_, device);
  backend_for(device_).synchronize();
  copy_between(out.data_, device, data_, device_, nbytes());
  return out;
}

void Array::copy_from_host(const void* src) const { copy_between(data_, device_, src, Device{}, nbytes()); }

void Array::copy_to_host(void* dst) const {
  backend_for(device_).synchronize();
  copy_between(dst, Device{}, data_, device_, nbytes());
}

dlpack::DLManagedTensor* Array::to_dlpack() const {
  ExportContext* ctx = context_of(*this);
  auto* m = new dlpack::DLManagedTensor{tensor_of(*this, ctx), ctx, &delete_export<dlpack::DLManagedTensor>};
  exports_alive.fetch_add(1, std::memory_order_relaxed);
  return m;
}

dlpack::DLManagedTensorVersioned* Array::to_dlpack_versioned(uint64_t flags) const {
  ExportContext* ctx = context_of(*this);
  auto* m = new dlpack::DLManagedTensorVersioned{{dlpack::kMajorVersion, dlpack::kMinorVersion},
                                                 ctx,
                                                 &delete_export<dlpack::DLManagedTensorVersioned>,
                                                 flags,
                                                 tensor_of(*this, ctx)};
  exports_alive.fetch_add(1, std::memory_order_relaxed);
  return m;
}

int64_t Array::dlpack_exports_alive() { return exports_alive.load(std::memory_order_relaxed); }

dlpack::DLDevice dlpack_device(const Device& device) {
  if (device.kind == DeviceKind::cuda) return {dlpack::kDLCUDA, device.index};
  return {dlpack::kDLCPU, 0};
}

dlpack::DLDataType dlpack_dtype(DType dtype) {
  switch (dtype) {
    case DType::f32: return {dlpack::kDLFloat, 32, 1};
    case DType::f16: return {dlpack::kDLFloat, 16, 1};
    case DType::f64: return {dlpack::kDLFloat, 64, 1};
    case DType::bf16: return {dlpack::kDLBfloat, 16, 1};
    case DType::i8: return {dlpack::kDLInt, 8, 1};
    case DType::i32: return {dlpack::kDLInt, 32, 1};
    case DType::i64: return {dlpack::kDLInt, 64, 1};
    case DType::u8: return {dlpack::kDLUInt, 8, 1};
    case DType::other: break;
  }
  throw std::invalid_argument("an array of an unsupported dtype has no DLPack type");
}

DType dtype_from_dlpack(const dlpack::DLDataType& t) {
  if (t.lanes != 1) return DType::other;
  for (DType d : {DType::f32, DType::f16, DType::f64, DType::bf16, DType::i8, DType::i32, DType::i64, DType::u8}) {
    const dlpack::DLDataType e = dlpack_dtype(d);
    if (e.code == t.code && e.bits == t.bits) return d;
  }
  return DType::other;
}

std::shared_ptr<void> dlpack_owner(dlpack::DLManagedTensor* m) {
  return std::shared_ptr<void>(m, [](void* p) {
    auto* t = static_cast<dlpack::DLManagedTensor*>(p);
    if (t->deleter) t->deleter(t);
  });
}

std::shared_ptr<void> dlpack_owner(dlpack::DLManagedTensorVersioned* m) {
  return std::shared_ptr<void>(m, [](void* p) {
    auto* t = static_cast<dlpack::DLManagedTensorVersioned*>(p);
    if (t->deleter) t->deleter(t);
  });
}

}  // namespace customml
