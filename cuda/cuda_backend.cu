// The "cuda" device: CudaBackend runs the launchers of cuda/*.cu on one stream, over
// device memory from a caching allocator (a training step allocates nothing from the
// driver once its buffers exist). Availability is detected at run time: on a machine
// without a driver or a GPU the library imports and says why.

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend.h"
#include "cuda/cuda_check.h"
#include "cuda/device_backend.h"

namespace customml {
namespace {

namespace dev = cuda;

// The first CUDA runtime error of cudaGetDeviceCount, or "" when a device is usable.
const std::string& availability_error() {
  static const std::string error = [] {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) return std::string("no usable CUDA driver or device (") + cudaGetErrorString(err) + ")";
    if (count == 0) return std::string("no CUDA device found");
    return std::string();
  }();
  return error;
}

class CudaBackend final : public dev::DeviceBackend {
 public:
  explicit CudaBackend(int index) : index_(index) {
    CUDA_CHECK(cudaSetDevice(index_));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    ctx_.stream = stream_;
    int major = 0, minor = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index_));
    CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, index_));
    ctx_.sm90 = major == 9 && minor == 0;
  }
  ~CudaBackend() override {
    // Process exit may have torn the driver down already; nothing to report then.
    release_cache();
    cudaStreamDestroy(stream_);
  }

  Device device() const override { return {DeviceKind::cuda, index_}; }
  std::string name() const override { return device().name(); }

  // Sizes round up to 512 bytes and freed blocks wait in a cache keyed by size.
  void* allocate(size_t bytes) override {
    refuse_in_capture("a device allocation");
    const size_t size = ((bytes == 0 ? 1 : bytes) + 511) / 512 * 512;
    std::lock_guard<std::mutex> lock(alloc_mutex_);
    auto hit = cached_.find(size);
    if (hit != cached_.end()) {
      void* p = hit->second;
      cached_.erase(hit);
      live_[p] = size;
      return p;
    }
    CUDA_CHECK(cudaSetDevice(index_));
    void* p = nullptr;
    if (cudaMalloc(&p, size) != cudaSuccess) {
      (void)cudaGetLastError();  // clear the out-of-memory error, give the cache back, retry once
      release_cache_locked();
      CUDA_CHECK(cudaMalloc(&p, size));
    }
    live_[p] = size;
    return p;
  }
  void deallocate(void* p) override {
    if (!p) return;
    memory_epoch_.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(alloc_mutex_);
    auto it = live_.find(p);
    if (it == live_.end()) return;
    cached_.emplace(it->second, p);
    live_.erase(it);
  }
  uint64_t memory_epoch() const override { return memory_epoch_.load(std::memory_order_relaxed); }
  // Copies and fills go to ctx_.stream, the capture stream while this thread records a
  // graph. Without a synchronization: from pageable memory the copy returns once the
  // source has been staged, so the caller may reuse it at once, and the stream orders the
  // copy before the kernels that read it; a training step stages its batch this way
  // without waiting for the device. Inside a capture only pinned memory may be the source
  // (the copy runs at each replay): anything else is refused, loudly.
  void copy_to_device(void* dst, const void* host_src, size_t bytes) override {
    if (!bytes) return;
    if (capturing()) {
      cudaPointerAttributes a{};
      if (cudaPointerGetAttributes(&a, host_src) != cudaSuccess || a.type != cudaMemoryTypeHost) {
        (void)cudaGetLastError();
        throw std::runtime_error(
            "[cuda graph] a copy from pageable host memory (stage it in allocate_host's) cannot be captured in a "
            "graph");
      }
    }
    CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, ctx_.stream));
  }
  void copy_to_host(void* host_dst, const void* src, size_t bytes) override {
    if (!bytes) return;
    refuse_in_capture("a copy to the host (the host would wait for the device)");
    CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void copy_on_device(void* dst, const void* src, size_t bytes) override {
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx_.stream));
  }
  void fill_zero(void* dst, size_t bytes) override {
    if (bytes) CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, ctx_.stream));
  }

  void* allocate_host(size_t bytes) override {
    refuse_in_capture("a pinned host allocation");
    CUDA_CHECK(cudaSetDevice(index_));
    void* p = nullptr;
    CUDA_CHECK(cudaHostAlloc(&p, bytes == 0 ? 1 : bytes, cudaHostAllocDefault));
    return p;
  }
  void deallocate_host(void* p) override {
    if (p) cudaFreeHost(p);
  }
  void* create_event() override {
    CUDA_CHECK(cudaSetDevice(index_));
    cudaEvent_t e = nullptr;
    CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }
  void destroy_event(void* event) override {
    if (event) cudaEventDestroy(static_cast<cudaEvent_t>(event));
  }
  void record_event(void* event) override { CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event), ctx_.stream)); }
  void wait_event(void* event) override {
    refuse_in_capture("waiting for an event on the host");
    CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event)));
  }

  uintptr_t stream_handle() override { return reinterpret_cast<uintptr_t>(stream_); }
  void wait_for_stream(uintptr_t stream) override { order(stream_, external(stream)); }
  void make_stream_wait(uintptr_t stream) override { order(external(stream), stream_); }
  void synchronize() override {
    refuse_in_capture("synchronize");
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  // The body's launches are recorded on a capture stream of this thread's own (its
  // launches are redirected there), so concurrent work of other threads on the main
  // stream neither lands in the graph nor waits; replays go to the main stream, in order
  // with everything else. Thread-local mode also makes the CUDA calls that cannot be
  // captured (a synchronization, cudaMalloc) fail; the methods above refuse theirs first,
  // with the reason. record_graph throws it; capture_graph (inference) abandons the
  // capture and runs the body directly, so callers see no difference but speed.
  bool records_graphs() const override { return true; }
  void* record_graph(const std::function<void()>& body) override {
    if (capturing()) throw std::runtime_error("[cuda graph] a capture inside a capture cannot be captured in a graph");
    cudaStream_t capture = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&capture, cudaStreamNonBlocking));
    cudaGraph_t graph = nullptr;
    std::string failure;
    cudaError_t err = cudaStreamBeginCapture(capture, cudaStreamCaptureModeThreadLocal);
    if (err == cudaSuccess) {
      try {
        dev::StreamRedirect redirect(capture);
        body();
      } catch (const std::exception& e) {
        failure = e.what();
      }
      err = cudaStreamEndCapture(capture, &graph);
    }
    if (failure.empty() && err != cudaSuccess)
      failure = std::string("[cuda graph] the capture failed: ") + cudaGetErrorString(err);
    cudaGraphExec_t exec = nullptr;
    if (failure.empty()) {
      err = cudaGraphInstantiate(&exec, graph, 0);
      if (err != cudaSuccess) failure = std::string("[cuda graph] instantiation failed: ") + cudaGetErrorString(err);
    }
    if (graph) cudaGraphDestroy(graph);
    cudaStreamDestroy(capture);
    (void)cudaGetLastError();  // a failed capture's error must not surface in a later call
    if (!failure.empty()) throw std::runtime_error(failure);
    return exec;
  }
  void replay_graph(void* graph) override {
    refuse_in_capture("a graph replay");
    CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph), stream_));
  }
  void destroy_graph(void* graph) override {
    if (graph) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph));
  }

 private:
  dev::DeviceContext& ctx() override { return ctx_; }
  // Whether this thread is recording a graph (its launches go to its capture stream).
  static bool capturing() { return dev::DeviceContext::StreamSlot::redirect != nullptr; }
  static void refuse_in_capture(const char* what) {
    if (capturing()) throw std::runtime_error(std::string("[cuda graph] ") + what + " cannot be captured in a graph");
  }
  // A stream number of DLPack / __cuda_array_interface__ as a stream handle.
  static cudaStream_t external(uintptr_t stream) {
    if (stream == 1) return cudaStreamLegacy;
    if (stream == 2) return cudaStreamPerThread;
    return reinterpret_cast<cudaStream_t>(stream);
  }
  // `waiter` waits for the work queued on `signaller` so far, without blocking the host.
  void order(cudaStream_t waiter, cudaStream_t signaller) {
    if (waiter == signaller) return;
    CUDA_CHECK(cudaSetDevice(index_));
    cudaEvent_t done = nullptr;
    CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    const cudaError_t recorded = cudaEventRecord(done, signaller);
    const cudaError_t waited = recorded == cudaSuccess ? cudaStreamWaitEvent(waiter, done, 0) : recorded;
    cudaEventDestroy(done);  // safe while the wait is pending: it is released once the wait is satisfied
    CUDA_CHECK(waited);
  }
  void release_cache() {
    std::lock_guard<std::mutex> lock(alloc_mutex_);
    release_cache_locked();
  }
  void release_cache_locked() {
    for (auto& [size, p] : cached_) cudaFree(p);
    cached_.clear();
  }

  int index_;
  cudaStream_t stream_ = nullptr;
  std::mutex alloc_mutex_;
  std::multimap<size_t, void*> cached_;
  std::unordered_map<void*, size_t> live_;
  std::atomic<uint64_t> memory_epoch_{0};
  // Last: destroyed first, while the allocator it returns its buffers to still exists.
  dev::DeviceContext ctx_{this};
};

}  // namespace

bool cuda_compiled() { return true; }
bool cuda_available() { return availability_error().empty(); }
std::string cuda_unavailable_reason() { return availability_error(); }

Backend& cuda_backend(int index) {
  if (!cuda_available()) throw std::invalid_argument("device 'cuda' is not available: " + availability_error());
  int count = 0;
  CUDA_CHECK(cudaGetDeviceCount(&count));
  if (index < 0 || index >= count)
    throw std::invalid_argument("device 'cuda:" + std::to_string(index) + "' does not exist (" + std::to_string(count) +
                                " CUDA device(s))");
  static std::mutex mutex;
  static std::vector<std::unique_ptr<CudaBackend>> backends;
  std::lock_guard<std::mutex> lock(mutex);
  if (backends.size() < static_cast<size_t>(count)) backends.resize(static_cast<size_t>(count));
  if (!backends[index]) backends[index] = std::make_unique<CudaBackend>(index);
  return *backends[index];
}

}  // namespace customml
