// The "cuda-emulated" device: the CUDA launchers and kernels of cuda/*.cu and *.cuh,
// compiled by the host compiler against the SIMT emulator (cuda/simt/), over host
// memory. It runs the exact kernel code the GPU runs, so the NumPy-referenced tests
// cover the kernels on machines without a GPU.

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "backend.h"
#include "cuda/device_backend.h"

// One translation unit for every launcher (a unity build): each .cu file is compiled
// here by the host compiler, into namespace cuda_emulated, and separately by nvcc for the
// real device.
#include "cuda/adam.cu"
#include "cuda/binary_cross_entropy.cu"
#include "cuda/clip.cu"
#include "cuda/dense.cu"
#include "cuda/distillation.cu"
#include "cuda/dropout.cu"
#include "cuda/feature_affine.cu"
#include "cuda/gemm_s8.cu"
#include "cuda/loss_weights.cu"
#include "cuda/mask.cu"
#include "cuda/metrics.cu"
#include "cuda/mse.cu"
#include "cuda/partials.cu"
#include "cuda/quantize.cu"
#include "cuda/regularizer.cu"
#include "cuda/scale.cu"
#include "cuda/sgd.cu"
#include "cuda/softmax.cu"
#include "cuda/softmax_cross_entropy.cu"
#include "cuda/sparse.cu"

namespace customml {
namespace {

namespace dev = cuda_emulated;

class EmulatedCudaBackend final : public dev::DeviceBackend {
 public:
  Device device() const override { return {DeviceKind::cuda_emulated, 0}; }
  std::string name() const override { return "cuda-emulated"; }

  void* allocate(size_t bytes) override {
    void* p = std::aligned_alloc(256, ((bytes + 255) / 256) * 256 + (bytes == 0 ? 256 : 0));
    if (!p) throw std::bad_alloc();
    allocations_.fetch_add(1, std::memory_order_relaxed);
    return p;
  }
  int64_t allocations() const { return allocations_.load(std::memory_order_relaxed); }
  void deallocate(void* p) override { std::free(p); }
  void copy_to_device(void* dst, const void* host_src, size_t bytes) override {
    if (bytes) std::memcpy(dst, host_src, bytes);
  }
  void copy_to_host(void* host_dst, const void* src, size_t bytes) override {
    host_waits_.fetch_add(1, std::memory_order_relaxed);
    if (bytes) std::memcpy(host_dst, src, bytes);
  }
  void synchronize() override { host_waits_.fetch_add(1, std::memory_order_relaxed); }
  int64_t host_waits() const { return host_waits_.load(std::memory_order_relaxed); }
  void copy_on_device(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void fill_zero(void* dst, size_t bytes) override {
    if (bytes) std::memset(dst, 0, bytes);
  }

 private:
  dev::DeviceContext& ctx() override { return ctx_; }
  std::atomic<int64_t> allocations_{0};
  std::atomic<int64_t> host_waits_{0};
  dev::DeviceContext ctx_{this};
};

EmulatedCudaBackend& instance() {
  static EmulatedCudaBackend backend;
  return backend;
}

}  // namespace

Backend& emulated_cuda_backend() { return instance(); }

int64_t emulated_cuda_allocations() { return instance().allocations(); }

int64_t emulated_cuda_host_waits() { return instance().host_waits(); }

}  // namespace customml
