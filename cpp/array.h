#pragma once
// Defines: Array (an n-d, C-contiguous buffer on one device, allocated by customml or
// borrowed from another library through DLPack: the type behind customml.Array), its
// DLPack export, and the DLPack conversions of devices, dtypes and borrowed tensors.

#include <cstdint>
#include <memory>
#include <vector>

#include "dlpack.h"
#include "private_api.h"
#include "tensor.h"

namespace customml {

class CUSTOMML_PRIVATE_API Array {
 public:
  // Uninitialized memory from the device's backend (its caching allocator on "cuda").
  static Array empty(DType dtype, std::vector<int64_t> shape, const Device& device);
  // A view of memory that `owner` keeps alive (a DLPack producer's managed tensor).
  Array(std::shared_ptr<void> owner, void* data, DType dtype, std::vector<int64_t> shape, Device device, bool readonly);

  void* data() const { return data_; }
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  const Device& device() const { return device_; }
  bool readonly() const { return readonly_; }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  const std::shared_ptr<void>& owner() const { return owner_; }

  // A borrowed Tensor of the whole array for an op (the caller keeps the Array alive).
  Tensor view() const;
  // A new Array on `device` with the same contents (staged through the host between two
  // GPUs); the source's pending work is complete first.
  Array copy_to(const Device& device) const;
  void copy_from_host(const void* src) const;
  void copy_to_host(void* dst) const;

  // Managed tensors for a DLPack consumer, legacy (capsule "dltensor") or versioned with
  // `flags` (read-only / copied): each holds the owner until the consumer calls its
  // deleter, so the memory outlives this Array if the consumer needs it longer.
  dlpack::DLManagedTensor* to_dlpack() const;
  dlpack::DLManagedTensorVersioned* to_dlpack_versioned(uint64_t flags) const;
  // Managed tensors exported and not yet deleted (tests check that consumers release them).
  static int64_t dlpack_exports_alive();

 private:
  std::shared_ptr<void> owner_;
  void* data_ = nullptr;
  DType dtype_ = DType::f32;
  std::vector<int64_t> shape_;
  Device device_;
  bool readonly_ = false;
};

// The DLPack device of customml memory: kDLCPU for "cpu" and "cuda-emulated" (whose
// buffers are host memory, readable by any CPU consumer), kDLCUDA with the index for "cuda:N".
CUSTOMML_PRIVATE_API dlpack::DLDevice dlpack_device(const Device& device);
// The DLPack type of a dtype, and back (DType::other for types customml has no name for,
// vectors of lanes included).
dlpack::DLDataType dlpack_dtype(DType dtype);
CUSTOMML_PRIVATE_API DType dtype_from_dlpack(const dlpack::DLDataType& t);

// Owners that call a consumed managed tensor's deleter when the last holder lets go.
CUSTOMML_PRIVATE_API std::shared_ptr<void> dlpack_owner(dlpack::DLManagedTensor* m);
CUSTOMML_PRIVATE_API std::shared_ptr<void> dlpack_owner(dlpack::DLManagedTensorVersioned* m);

}  // namespace customml
