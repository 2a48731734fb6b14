#pragma once
// Defines: PackedS8 and PackedCsr, weights prepared once in one device's own layout, which
// both routes into the backend hold: the Tensor-level ops (gemm_s8_pack, sparse_pack) and
// the network's inference plan. Immutable once filled, so concurrent calls may share them.

#include <cstddef>
#include <cstdint>

#include "backend.h"
#include "private_api.h"

namespace customml::ops {

// Int8 weights (k, n) in one device's gemm_s8 layout, packed once and read by every call;
// owns its device memory. Immutable once packed, so concurrent calls may share it.
class CUSTOMML_PRIVATE_API PackedS8 {
 public:
  PackedS8(Backend& backend, int64_t k, int64_t n);
  ~PackedS8();
  PackedS8(const PackedS8&) = delete;
  PackedS8& operator=(const PackedS8&) = delete;
  const void* data() const { return data_; }
  void* data() { return data_; }
  int64_t k() const { return k_; }
  int64_t n() const { return n_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return backend_->device(); }

 private:
  Backend* backend_;
  int64_t k_, n_;
  size_t nbytes_;
  void* data_ = nullptr;
};

// A CSR weight prepared once for sparse_dense_forward on one device (what a model's plan
// does per layer): its structure checked once, the CSR copied to the device and, where
// the device has one, built into its packed layout (Backend::sparse_pack).
class PackedCsr {
 public:
  explicit PackedCsr(Backend& backend);
  CsrMatrix matrix() const;                                                        // the device's copy of the CSR
  const void* packed() const { return packed_bytes_ ? packed_.data() : nullptr; }  // null: no packed layout
  // Copies a host CSR in, then packs it; the device memory grows as needed and is reused
  // when a plan refills it.
  void fill(const CsrMatrix& host);
  int64_t in() const { return in_; }
  int64_t out() const { return out_; }
  int64_t nnz() const { return nnz_; }
  size_t packed_bytes() const { return packed_bytes_; }
  // The memory it holds: the CSR's copy and the packed layout, at their capacities.
  size_t bytes() const;
  Device device() const { return backend_->device(); }

 private:
  Backend* backend_;
  int64_t in_ = 0, out_ = 0, nnz_ = 0;
  Buffer<int32_t> offsets_, index_;
  Buffer<float> values_;
  Buffer<uint8_t> packed_;
  size_t packed_bytes_ = 0;
};

}  // namespace customml::ops
