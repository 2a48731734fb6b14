#pragma once
// Defines: CpuBackend, the Backend for "cpu": every op of backend_ops.def, each defined in
// its family's file (dense.cpp, softmax_cross_entropy.cpp, ...), memory in cpu_backend.cpp.

#include "backend.h"

namespace customml::cpu {

class CpuBackend final : public Backend {
 public:
  static CpuBackend& instance();

  Device device() const override { return {DeviceKind::cpu, 0}; }
  std::string name() const override { return "cpu"; }

  void* allocate(size_t bytes) override;
  void deallocate(void* p) override;
  void copy_to_device(void* dst, const void* host_src, size_t bytes) override;
  void copy_to_host(void* host_dst, const void* src, size_t bytes) override;
  void copy_on_device(void* dst, const void* src, size_t bytes) override;
  void fill_zero(void* dst, size_t bytes) override;

#define CUSTOMML_OP(ret, name, params) ret name params override;
#include "backend_ops.def"
#undef CUSTOMML_OP
  size_t dense_packed_bytes(int64_t in, int64_t out) override;
  void dense_pack(void* packed, const float* w, int64_t in, int64_t out) override;
  void dense_forward_packed(float* y, const float* x, const float* w, const void* packed, const float* b, DenseShape s,
                            Activation act, bool reverse_columns) override;
  size_t sparse_packed_bytes(const CsrMatrix& w) override;
  void sparse_pack(void* packed, const CsrMatrix& w) override;
  bool sparse_dense_forward_packed(float* y, const float* x, const void* packed, const float* b, int64_t batch,
                                   Activation act) override;
  size_t dense_bf16_packed_bytes(int64_t in, int64_t out) override;
  void dense_bf16_pack(void* packed, const uint16_t* w, int64_t in, int64_t out) override;
  void dense_forward_bf16(float* y, const float* x, const void* packed, const float* b, DenseShape s,
                          Activation act) override;

 private:
  CpuBackend();
};

// Calls f(begin, end, decay) over [0, n) in order, splitting at the no-decay
// segments: decay is false inside a segment. The optimizers use it to stay one pass.
template <class F>
void for_each_decay_range(int64_t n, const Segment* no_decay, int64_t n_no_decay, F&& f) {
  int64_t pos = 0;
  for (int64_t s = 0; s < n_no_decay; ++s) {
    if (no_decay[s].begin > pos) f(pos, no_decay[s].begin, true);
    f(no_decay[s].begin, no_decay[s].end, false);
    pos = no_decay[s].end;
  }
  if (pos < n) f(pos, n, true);
}

}  // namespace customml::cpu
