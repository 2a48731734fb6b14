#include "packed_weights.h"

namespace customml::ops {

PackedS8::PackedS8(Backend& backend, int64_t k, int64_t n)
    : backend_(&backend), k_(k), n_(n), nbytes_(backend.gemm_s8_packed_bytes(k, n)) {
  data_ = backend_->allocate(nbytes_);
}

PackedS8::~PackedS8() {
  if (data_) backend_->deallocate(data_);
}

PackedCsr::PackedCsr(Backend& backend)
    : backend_(&backend), offsets_(&backend), index_(&backend), values_(&backend), packed_(&backend) {}

CsrMatrix PackedCsr::matrix() const { return {offsets_.data(), index_.data(), values_.data(), in_, out_, nnz_}; }

size_t PackedCsr::bytes() const {
  return (offsets_.size() + index_.size()) * sizeof(int32_t) + values_.size() * sizeof(float) + packed_.size();
}

void PackedCsr::fill(const CsrMatrix& host) {
  in_ = host.in;
  out_ = host.out;
  nnz_ = host.nnz;
  // At least one element each, so that an empty index is still a pointer.
  offsets_.reserve(static_cast<size_t>(out_ + 1));
  index_.reserve(static_cast<size_t>(nnz_ > 0 ? nnz_ : 1));
  values_.reserve(static_cast<size_t>(nnz_ > 0 ? nnz_ : 1));
  backend_->copy_to_device(offsets_.data(), host.offsets, sizeof(int32_t) * static_cast<size_t>(out_ + 1));
  if (nnz_ > 0) {
    backend_->copy_to_device(index_.data(), host.index, sizeof(int32_t) * static_cast<size_t>(nnz_));
    backend_->copy_to_device(values_.data(), host.values, sizeof(float) * static_cast<size_t>(nnz_));
  }
  packed_bytes_ = 0;
  const size_t bytes = backend_->sparse_packed_bytes(host);
  if (bytes == 0) return;
  backend_->sparse_pack(packed_.reserve(bytes), host);
  packed_bytes_ = bytes;
}

}  // namespace customml::ops
