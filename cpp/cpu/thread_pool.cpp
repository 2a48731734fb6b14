#include "cpu/thread_pool.h"

#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace customml::cpu {
namespace {

std::atomic<bool> g_forked{false};

int initial_threads() {
  if (const char* s = std::getenv("CUSTOMML_NUM_THREADS"); s && *s) {
    char* end = nullptr;
    const long n = std::strtol(s, &end, 10);
    if (*end != '\0' || n < 1 || n > 1024)
      throw std::invalid_argument(std::string("CUSTOMML_NUM_THREADS must be an integer in [1, 1024], got '") + s + "'");
    return static_cast<int>(n);
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

// Polls ready() for up to kSpinAfterJobNs without sleeping; the callers then take the
// lock and check (or sleep on) the same condition. pause between polls (the sibling
// hyperthread, if any, gets the core's resources), and every 64 polls a check of the
// clock and a sched_yield, so a runnable thread of another pool on this core runs
// instead of us.
template <class Ready>
void spin_until(Ready&& ready) {
  using clock = std::chrono::steady_clock;
  const auto end = clock::now() + std::chrono::nanoseconds(kSpinAfterJobNs);
  for (unsigned i = 1;; ++i) {
    if (ready()) return;
#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
    _mm_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
    if (i % 64 == 0) {
      if (clock::now() >= end) return;
#if defined(__unix__) || defined(__APPLE__)
      sched_yield();
#endif
    }
  }
}

}  // namespace

bool forked_child() { return g_forked.load(); }

ThreadPool& ThreadPool::instance() {
  // Never destroyed: workers must not be joined during static destruction at exit.
  static ThreadPool* pool = [] {
#if defined(__unix__) || defined(__APPLE__)
    pthread_atfork(nullptr, nullptr, [] { g_forked.store(true); });
#endif
    return new ThreadPool();
  }();
  return *pool;
}

ThreadPool::ThreadPool() { num_threads_.store(initial_threads()); }

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::set_num_threads(int n) {
  if (n < 1 || n > 1024) throw std::invalid_argument("num_threads must be in [1, 1024], got " + std::to_string(n));
  std::lock_guard<std::mutex> busy(busy_);
  num_threads_.store(n);
  if (static_cast<int>(workers_.size()) > n - 1 && !forked_child()) stop_workers();
}

void ThreadPool::start_workers(int n) {
  std::lock_guard<std::mutex> lock(mutex_);
  stopping_ = false;
  while (static_cast<int>(workers_.size()) < n) workers_.emplace_back([this] { worker_loop(); });
}

void ThreadPool::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int)>* job;
    int tasks;
    polling_.fetch_add(1, std::memory_order_relaxed);
    spin_until([&] {
      return stopping_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen;
    });
    polling_.fetch_sub(1, std::memory_order_relaxed);
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      job = job_;
      tasks = tasks_;
      // Woken only after that job was finished and withdrawn: nothing to take part in.
      if (!job) continue;
      // While any worker is active no new job starts (parallel_for waits), so job and
      // next_ stay this job's until we leave.
      ++active_;
    }
    int done = 0;
    for (int t = next_.fetch_add(1); t < tasks; t = next_.fetch_add(1)) {
      (*job)(t);
      ++done;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    remaining_ -= done;
    if (--active_ == 0) done_.notify_all();
  }
}

void ThreadPool::parallel_for(int tasks, const std::function<void(int)>& fn) {
  const int threads = num_threads();
  std::unique_lock<std::mutex> busy(busy_, std::defer_lock);
  if (tasks <= 1 || threads <= 1 || forked_child() || !busy.try_lock()) {
    for (int t = 0; t < tasks; ++t) fn(t);
    return;
  }
  const int helpers = (tasks < threads ? tasks : threads) - 1;
  if (static_cast<int>(workers_.size()) < helpers) start_workers(helpers);
  {
    std::unique_lock<std::mutex> lock(mutex_);
    // A worker still inside the previous job (it woke late and found no task left) must
    // leave it before next_ is reset for this one.
    done_.wait(lock, [&] { return active_ == 0; });
    job_ = &fn;
    tasks_ = tasks;
    remaining_ = tasks;
    next_.store(0);
    ++generation_;
  }
  wake_.notify_all();
  int done = 0;
  for (int t = next_.fetch_add(1); t < tasks; t = next_.fetch_add(1)) {
    fn(t);
    ++done;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    remaining_ -= done;
  }
  // Workers still running tasks usually finish within microseconds: watch for that rather
  // than sleep through a wake-up.
  spin_until(
      [&] { return remaining_.load(std::memory_order_acquire) == 0 && active_.load(std::memory_order_acquire) == 0; });
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [&] { return remaining_ == 0 && active_ == 0; });
  job_ = nullptr;
}

void ThreadPool::parallel_for_if_awake(int tasks, const std::function<void(int)>& fn) {
  if (tasks > 1 && num_threads() > 1) {
    const int64_t now =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
            .count();
    const int64_t last = last_if_awake_ns_.exchange(now, std::memory_order_relaxed);
    if (polling_.load(std::memory_order_relaxed) > 0 || now - last < kSpinAfterJobNs) {
      parallel_for(tasks, fn);
      return;
    }
  }
  for (int t = 0; t < tasks; ++t) fn(t);
}

}  // namespace customml::cpu
