#pragma once
// Defines: ThreadPool, the CPU kernels' worker threads: parallel_for over a fixed number
// of tasks, the caller taking part. After a job a worker watches for the next one for at
// most kSpinAfterJobNs, yielding its core to any other runnable thread, then sleeps: the
// jobs of one training step or large predict (a GEMM every few microseconds) find it
// awake, and NumPy's and PyTorch's pools lose at most that long of a core to it.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "private_api.h"

namespace customml::cpu {

class ThreadPool {
 public:
  CUSTOMML_PRIVATE_API static ThreadPool& instance();

  // Threads a parallel_for may use, the caller included (>= 1). Starts as
  // CUSTOMML_NUM_THREADS, else the hardware's thread count.
  int num_threads() const { return num_threads_.load(); }
  CUSTOMML_PRIVATE_API void set_num_threads(int n);

  // Runs fn(task) for every task in [0, tasks), spread over up to num_threads() threads,
  // and returns when all are done. Inline on the caller when there is one task, one
  // thread, or the pool is busy with another caller's job (so concurrent callers never
  // wait on each other or oversubscribe the cores), and in a forked child.
  void parallel_for(int tasks, const std::function<void(int)>& fn);

  // As parallel_for for work too small to pay a sleeping worker's wake-up (tens of us):
  // over the pool when a worker is awake (polling after a job) or the previous such call
  // began under kSpinAfterJobNs ago (a burst, e.g. back-to-back batch-1 predicts, which
  // wakes the workers once and then finds them polling); inline otherwise.
  void parallel_for_if_awake(int tasks, const std::function<void(int)>& fn);

 private:
  ThreadPool();
  ~ThreadPool();
  void worker_loop();
  void start_workers(int n);
  void stop_workers();

  std::atomic<int> num_threads_{1};
  std::mutex busy_;  // held by the caller whose job the workers run
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* job_ = nullptr;
  int tasks_ = 0;
  std::atomic<int> next_{0};
  // Written under mutex_; atomic so that a spinning thread may watch them without it.
  std::atomic<int> remaining_{0};  // tasks not yet finished
  std::atomic<int> active_{0};     // workers inside the current job
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<int> polling_{0};               // workers awake between jobs
  std::atomic<int64_t> last_if_awake_ns_{0};  // when parallel_for_if_awake last began
};

// How long a worker watches for the next job, and a caller for its job's last task, before
// sleeping on a condition variable: a sleeping thread takes 30-60 us to wake on a KVM
// guest (measured, decisions.md), longer than half of a training step's GEMMs.
constexpr int64_t kSpinAfterJobNs = 50'000;

// Large flat arrays are cut into chunks of this many elements (256 KiB of float32), one
// task each; below kParallelMinElements a kernel runs as one piece on the caller.
constexpr int64_t kParallelChunk = int64_t{1} << 16;
constexpr int64_t kParallelMinElements = int64_t{1} << 18;

inline int64_t parallel_chunk_count(int64_t n) {
  return n < kParallelMinElements ? 1 : (n + kParallelChunk - 1) / kParallelChunk;
}

// Calls f(chunk, begin, end) for each chunk of [0, n) (parallel_chunk_count of them),
// spread over the pool. The chunks depend on n alone, never on the thread count, so a
// reduction that combines per-chunk results in chunk order is reproducible.
template <class F>
void for_each_chunk(int64_t n, F&& f) {
  const int64_t chunks = parallel_chunk_count(n);
  if (chunks == 1) {
    f(0, 0, n);
    return;
  }
  ThreadPool::instance().parallel_for(static_cast<int>(chunks), [&](int c) {
    const int64_t begin = c * kParallelChunk, end = begin + kParallelChunk < n ? begin + kParallelChunk : n;
    f(c, begin, end);
  });
}

// True in a child process forked while the pool had threads: they did not survive the
// fork, so the child runs every job inline.
bool forked_child();

}  // namespace customml::cpu
