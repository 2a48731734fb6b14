#pragma once
// Defines: Published<T>, one immutable object that any number of threads read without a
// lock while one writer at a time replaces it (or takes it out of publication, to rebuild
// it and publish it again). The replaced object goes back to the writer once no reader can
// still hold it: readers count themselves in one of two counters, chosen by an epoch that
// each replacement advances, and the writer waits for the old epoch's counter to drain
// (the two-counter grace period of userspace RCU, in its simplest form).

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

namespace customml {

template <class T>
class Published {
 public:
  Published() = default;
  ~Published() { delete current_.load(); }
  Published(const Published&) = delete;
  Published& operator=(const Published&) = delete;

  // The object a read() returned, held until the Reader is destroyed.
  class Reader {
   public:
    Reader(Reader&& o) noexcept : count_(o.count_), object_(o.object_) { o.count_ = nullptr; }
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;
    Reader& operator=(Reader&&) = delete;
    ~Reader() {
      if (count_) count_->fetch_sub(1, std::memory_order_release);
    }
    const T* get() const { return object_; }
    const T* operator->() const { return object_; }
    const T& operator*() const { return *object_; }

   private:
    friend class Published;
    Reader(std::atomic<int64_t>* count, const T* object) : count_(count), object_(object) {}
    std::atomic<int64_t>* count_;
    const T* object_;
  };

  // The current object (null before the first publish and while out of publication).
  // Lock-free: a few atomic operations.
  Reader read() const {
    for (;;) {
      const uint64_t epoch = epoch_.load(std::memory_order_seq_cst);
      std::atomic<int64_t>& count = readers_[epoch & 1].count;
      count.fetch_add(1, std::memory_order_seq_cst);
      // Counted in the epoch still current, so a writer that advances it from here on
      // waits for this reader; otherwise a writer may have checked this counter already.
      if (epoch_.load(std::memory_order_seq_cst) == epoch)
        return Reader(&count, current_.load(std::memory_order_seq_cst));
      count.fetch_sub(1, std::memory_order_release);
    }
  }

  // Replaces the object and returns the old one (null the first time) once no reader can
  // hold it; callers serialize, and must not hold a Reader themselves (it would never drain).
  std::unique_ptr<T> publish(std::unique_ptr<T> next) {
    std::unique_ptr<T> old(current_.exchange(next.release(), std::memory_order_seq_cst));
    const uint64_t epoch = epoch_.fetch_add(1, std::memory_order_seq_cst);
    // Readers of the old epoch may hold `old`; those counted since hold the new object.
    while (readers_[epoch & 1].count.load(std::memory_order_acquire) != 0) std::this_thread::yield();
    return old;
  }

  // The current object, for the thread that alone may publish (no Reader needed).
  const T* current() const { return current_.load(std::memory_order_acquire); }

 private:
  std::atomic<T*> current_{nullptr};
  std::atomic<uint64_t> epoch_{0};
  // Every read writes a counter: on cache lines of their own, away from what readers only read.
  struct alignas(64) Counter {
    std::atomic<int64_t> count{0};
  };
  mutable Counter readers_[2];
};

}  // namespace customml
