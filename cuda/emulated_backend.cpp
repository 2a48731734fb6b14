// The "cuda-emulated" device: the CUDA launchers and kernels of cuda/*.cu and *.cuh,
// compiled by the host compiler against the SIMT emulator (cuda/simt/), over host
// memory. It runs the exact kernel code the GPU runs, so the NumPy-referenced tests
// cover the kernels on machines without a GPU.

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

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

// CUDA's stream capture, emulated: while this thread records (simt::recording()), kernel
// launches, copies and fills are appended to the graph instead of running, and whatever
// a graph cannot hold (a host wait, an allocation, a copy from pageable host memory,
// which CUDA refuses during capture too) throws, naming it.
[[noreturn]] void refuse_in_capture(const char* what) {
  throw std::runtime_error(std::string("[cuda graph] ") + what + " cannot be captured in a graph");
}

class EmulatedCudaBackend final : public dev::DeviceBackend {
 public:
  Device device() const override { return {DeviceKind::cuda_emulated, 0}; }
  std::string name() const override { return "cuda-emulated"; }

  void* allocate(size_t bytes) override {
    if (simt::recording()) refuse_in_capture("a device allocation");
    void* p = std::aligned_alloc(256, ((bytes + 255) / 256) * 256 + (bytes == 0 ? 256 : 0));
    if (!p) throw std::bad_alloc();
    allocations_.fetch_add(1, std::memory_order_relaxed);
    return p;
  }
  int64_t allocations() const { return allocations_.load(std::memory_order_relaxed); }
  void deallocate(void* p) override {
    memory_epoch_.fetch_add(1, std::memory_order_relaxed);
    std::free(p);
  }
  uint64_t memory_epoch() const override { return memory_epoch_.load(std::memory_order_relaxed); }
  void copy_to_device(void* dst, const void* host_src, size_t bytes) override {
    if (simt::Recording* r = simt::recording()) {
      if (!pinned(host_src, bytes)) refuse_in_capture("a copy from pageable host memory (stage it in allocate_host's)");
      r->push_back([this, dst, host_src, bytes] {
        bytes_to_device_.fetch_add(static_cast<int64_t>(bytes), std::memory_order_relaxed);
        std::memcpy(dst, host_src, bytes);
      });
      return;
    }
    bytes_to_device_.fetch_add(static_cast<int64_t>(bytes), std::memory_order_relaxed);
    if (bytes) std::memcpy(dst, host_src, bytes);
  }
  int64_t bytes_to_device() const { return bytes_to_device_.load(std::memory_order_relaxed); }
  void copy_to_host(void* host_dst, const void* src, size_t bytes) override {
    if (simt::recording()) refuse_in_capture("a copy to the host (the host would wait for the device)");
    host_waits_.fetch_add(1, std::memory_order_relaxed);
    if (bytes) std::memcpy(host_dst, src, bytes);
  }
  void synchronize() override {
    if (simt::recording()) refuse_in_capture("synchronize");
    host_waits_.fetch_add(1, std::memory_order_relaxed);
  }
  int64_t host_waits() const { return host_waits_.load(std::memory_order_relaxed); }
  void copy_on_device(void* dst, const void* src, size_t bytes) override {
    if (simt::Recording* r = simt::recording()) {
      r->push_back([dst, src, bytes] { std::memcpy(dst, src, bytes); });
      return;
    }
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void fill_zero(void* dst, size_t bytes) override {
    if (simt::Recording* r = simt::recording()) {
      r->push_back([dst, bytes] { std::memset(dst, 0, bytes); });
      return;
    }
    if (bytes) std::memset(dst, 0, bytes);
  }

  // Pinned memory is host memory here; its ranges are kept so that a capture can tell it
  // from pageable memory, as the CUDA driver does.
  void* allocate_host(size_t bytes) override {
    if (simt::recording()) refuse_in_capture("a pinned host allocation");
    void* p = ::operator new(bytes == 0 ? 1 : bytes);
    std::lock_guard<std::mutex> lock(pinned_mutex_);
    pinned_[reinterpret_cast<uintptr_t>(p)] = bytes;
    return p;
  }
  void deallocate_host(void* p) override {
    {
      std::lock_guard<std::mutex> lock(pinned_mutex_);
      pinned_.erase(reinterpret_cast<uintptr_t>(p));
    }
    ::operator delete(p);
  }
  // Every op has finished when it returns, so an event is complete once recorded and
  // waiting for it never blocks; waiting inside a capture is refused as CUDA refuses it.
  void* create_event() override { return new int(0); }
  void destroy_event(void* event) override { delete static_cast<int*>(event); }
  void record_event(void* event) override {
    if (simt::Recording* r = simt::recording()) {
      r->push_back([event] { *static_cast<int*>(event) = 1; });
      return;
    }
    *static_cast<int*>(event) = 1;
  }
  void wait_event(void*) override {
    if (simt::recording()) refuse_in_capture("waiting for an event on the host");
  }

  bool records_graphs() const override { return true; }
  void* record_graph(const std::function<void()>& body) override {
    if (simt::recording()) refuse_in_capture("a capture inside a capture");
    auto graph = std::make_unique<simt::Recording>();
    simt::set_recording(graph.get());
    try {
      body();
    } catch (...) {
      simt::set_recording(nullptr);
      throw;
    }
    simt::set_recording(nullptr);
    return graph.release();
  }
  void replay_graph(void* graph) override {
    if (simt::recording()) refuse_in_capture("a graph replay");
    replays_.fetch_add(1, std::memory_order_relaxed);
    // On a GPU a replay runs in the main stream's order, after the split GEMMs and loss
    // reductions queued before it and before those queued after; here it runs on the calling
    // thread, so it holds the lock those direct launches hold while they run (the recorded
    // nodes themselves never take it), or two threads' replays would share the scratch buffers.
    std::lock_guard<std::mutex> lock(ctx_.scratch_mutex);
    for (const std::function<void()>& node : *static_cast<simt::Recording*>(graph)) node();
  }
  void destroy_graph(void* graph) override { delete static_cast<simt::Recording*>(graph); }
  int64_t replays() const { return replays_.load(std::memory_order_relaxed); }
  // emulated_cuda_set_sm90: under the lock gemm()'s split path holds, so that no launch
  // queued meanwhile sees half of the change.
  std::pair<bool, int64_t> set_sm90(bool on, int64_t wgmma_min_tiles) {
    std::lock_guard<std::mutex> lock(ctx_.scratch_mutex);
    const std::pair<bool, int64_t> before{ctx_.sm90, ctx_.wgmma_min_tiles};
    ctx_.sm90 = on;
    ctx_.wgmma_min_tiles = wgmma_min_tiles;
    return before;
  }

 private:
  dev::DeviceContext& ctx() override { return ctx_; }
  bool pinned(const void* p, size_t bytes) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    std::lock_guard<std::mutex> lock(pinned_mutex_);
    auto it = pinned_.upper_bound(a);
    if (it == pinned_.begin()) return false;
    --it;
    return a + bytes <= it->first + it->second;
  }
  std::atomic<int64_t> allocations_{0};
  std::atomic<int64_t> host_waits_{0};
  std::atomic<int64_t> bytes_to_device_{0};  // copy_to_device's, replayed copies included
  std::atomic<uint64_t> memory_epoch_{0};
  std::atomic<int64_t> replays_{0};
  std::mutex pinned_mutex_;
  std::map<uintptr_t, size_t> pinned_;  // start -> bytes
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

int64_t emulated_cuda_bytes_to_device() { return instance().bytes_to_device(); }

int64_t emulated_cuda_graph_replays() { return instance().replays(); }

std::pair<bool, int64_t> emulated_cuda_set_sm90(bool on, int64_t wgmma_min_tiles) {
  if (wgmma_min_tiles < 1) throw std::invalid_argument("wgmma_min_tiles must be at least 1");
  return instance().set_sm90(on, wgmma_min_tiles);
}

}  // namespace customml
