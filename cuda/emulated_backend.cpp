// The "cuda-emulated" device: the CUDA launchers and kernels of cuda/*.cu and *.cuh,
// compiled by the host compiler against the SIMT emulator (cuda/simt/), over host
// memory. It runs the exact kernel code the GPU runs, so the NumPy-referenced tests
// cover the kernels on machines without a GPU.

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "backend.h"
#include "cuda/launchers.h"

// One translation unit for every launcher (a unity build): each .cu file is compiled
// here by the host compiler, into namespace cuda_emulated, and separately by nvcc for the
// real device.
#include "cuda/adam.cu"
#include "cuda/binary_cross_entropy.cu"
#include "cuda/clip.cu"
#include "cuda/dense.cu"
#include "cuda/dropout.cu"
#include "cuda/metrics.cu"
#include "cuda/mse.cu"
#include "cuda/regularizer.cu"
#include "cuda/sgd.cu"
#include "cuda/softmax_cross_entropy.cu"

namespace customml {
namespace {

namespace dev = cuda_emulated;

class EmulatedCudaBackend final : public Backend {
 public:
  EmulatedCudaBackend() : ctx_(this) {}
  Device device() const override { return {DeviceKind::cuda_emulated, 0}; }
  std::string name() const override { return "cuda-emulated"; }
  // Its memory is host memory, but the executor treats it as a GPU's (staging batches
  // through copies), so the emulated runs also cover the path the real device takes.
  bool host_addressable() const override { return false; }
  bool supports(Precision) const override { return true; }  // tensor cores: sm_80 and later

  void* allocate(size_t bytes) override {
    void* p = std::aligned_alloc(256, ((bytes + 255) / 256) * 256 + (bytes == 0 ? 256 : 0));
    if (!p) throw std::bad_alloc();
    return p;
  }
  void deallocate(void* p) override { std::free(p); }
  void copy_to_device(void* dst, const void* host_src, size_t bytes) override {
    if (bytes) std::memcpy(dst, host_src, bytes);
  }
  void copy_to_host(void* host_dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(host_dst, src, bytes);
  }
  void fill_zero(void* dst, size_t bytes) override {
    if (bytes) std::memset(dst, 0, bytes);
  }

  void dense_forward(float* y, float* z, const float* x, const float* w, const float* b, DenseShape s,
                     Activation act) override {
    dev::dense_forward(ctx_, y, z, x, w, b, s, act);
  }
  void dense_backward(float* dx, float* dw, float* db, float* dz, const float* dy, const float* x, const float* w,
                      const float* y, const float* z, DenseShape s, Activation act) override {
    dev::dense_backward(ctx_, dx, dw, db, dz, dy, x, w, y, z, s, act);
  }
  double softmax_cross_entropy(float* grad, const float* logits, const int32_t* labels, const float* class_weights,
                               int64_t batch, int64_t classes, float label_smoothing) override {
    return dev::softmax_cross_entropy(ctx_, grad, logits, labels, class_weights, batch, classes, label_smoothing);
  }
  double binary_cross_entropy_with_logits(float* grad, const float* logits, const float* targets,
                                          int64_t n) override {
    return dev::binary_cross_entropy_with_logits(ctx_, grad, logits, targets, n);
  }
  double mse(float* grad, const float* pred, const float* target, int64_t n) override {
    return dev::mse(ctx_, grad, pred, target, n);
  }
  void confusion_matrix_update(int64_t* counts, const float* logits, const int32_t* labels, int64_t batch,
                               int64_t k) override {
    dev::confusion_matrix_update(ctx_, counts, logits, labels, batch, k);
  }
  void regression_stats_update(double* stats, const float* pred, const float* target, const double* shift,
                               int64_t batch, int64_t outputs) override {
    dev::regression_stats_update(ctx_, stats, pred, target, shift, batch, outputs);
  }
  int64_t count_correct(const float* logits, const int32_t* labels, int64_t batch, int64_t classes) override {
    return dev::count_correct(ctx_, logits, labels, batch, classes);
  }
  void dropout(float* y, const float* x, int64_t n, float rate, uint64_t seed, uint64_t stream) override {
    dev::dropout(ctx_, y, x, n, rate, seed, stream);
  }
  void sgd_update(float* param, float* velocity, const float* grad, int64_t n, const Segment* no_decay,
                  int64_t n_no_decay, const SgdConfig& c) override {
    dev::sgd_update(ctx_, param, velocity, grad, n, no_decay, n_no_decay, c);
  }
  void adam_update(float* param, float* m, float* v, float* vmax, const float* grad, int64_t n,
                   const Segment* no_decay, int64_t n_no_decay, const AdamConfig& c) override {
    dev::adam_update(ctx_, param, m, v, vmax, grad, n, no_decay, n_no_decay, c);
  }
  double clip_by_global_norm(float* grad, int64_t n, float max_norm) override {
    return dev::clip_by_global_norm(ctx_, grad, n, max_norm);
  }
  void scale(float* x, int64_t n, double coef) override { dev::scale(ctx_, x, n, coef); }
  double l1_l2_penalty(float* grad, const float* param, int64_t n, float l1, float l2) override {
    return dev::l1_l2_penalty(ctx_, grad, param, n, l1, l2);
  }

 private:
  dev::DeviceContext ctx_;
};

}  // namespace

Backend& emulated_cuda_backend() {
  static EmulatedCudaBackend backend;
  return backend;
}

}  // namespace customml
