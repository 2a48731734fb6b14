#pragma once
// Defines: the DLPack ABI (dmlc/dlpack, include/dlpack/dlpack.h, version 1.x) that
// customml produces and consumes: DLTensor, the legacy DLManagedTensor (capsule
// "dltensor") and DLManagedTensorVersioned (capsule "dltensor_versioned"), with the
// device types and type codes customml uses. Only the C layout matters; the field order
// and types below are the specification's.

#include <cstdint>

namespace customml::dlpack {

constexpr uint32_t kMajorVersion = 1;  // a tensor of another major version must not be read
constexpr uint32_t kMinorVersion = 0;  // what customml exports: nothing of 1.1 is needed

// DLDeviceType values (int32 in the ABI).
enum DeviceType : int32_t {
  kDLCPU = 1,
  kDLCUDA = 2,
  kDLCUDAHost = 3,     // pinned host memory (cudaMallocHost)
  kDLCUDAManaged = 13  // managed memory (cudaMallocManaged)
};

// DLDataTypeCode values (uint8 in DLDataType).
enum TypeCode : uint8_t { kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBfloat = 4, kDLBool = 6 };

// DLPACK_FLAG_BITMASK_* of DLManagedTensorVersioned::flags.
constexpr uint64_t kFlagReadOnly = 1u << 0;
constexpr uint64_t kFlagIsCopied = 1u << 1;

struct DLPackVersion {
  uint32_t major;
  uint32_t minor;
};

struct DLDevice {
  int32_t device_type;
  int32_t device_id;
};

struct DLDataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};

struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;  // in elements; null means C-contiguous
  uint64_t byte_offset;
};

struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);
};

struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(DLManagedTensorVersioned* self);
  uint64_t flags;
  DLTensor dl_tensor;
};

// The capsule names: a producer's, and the one a consumer renames it to when it takes
// ownership (from then on the consumer calls the deleter, the capsule's destructor does not).
constexpr const char* kCapsule = "dltensor";
constexpr const char* kUsedCapsule = "used_dltensor";
constexpr const char* kVersionedCapsule = "dltensor_versioned";
constexpr const char* kUsedVersionedCapsule = "used_dltensor_versioned";

}  // namespace customml::dlpack
