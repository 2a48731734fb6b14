// The SIMT emulator's scheduler: one fiber per thread of a block, resumed in the chosen
// order until each stops at a barrier, a warp collective or its end; barriers release
// when every thread they concern has arrived.

#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "simt/async_copy.h"
#include "simt/async_proxy.h"
#include "simt/fiber.h"
#include "simt/runtime.h"

namespace customml::simt {
namespace {

// Kernels keep little on the stack (a register tile at most); 64 KiB leaves headroom
// for unoptimized builds. Pages nobody touches are never committed.
constexpr size_t kStackBytes = 64 * 1024;

enum class Wait { none, block_barrier, warp, condition, done };

// A cp.async issued and not yet performed (simt/async_copy.h).
struct AsyncCopy {
  void* dst;
  const void* src;
  unsigned bytes, src_bytes;
};

struct ThreadState {
  Fiber fiber;
  uint3 idx;
  unsigned linear = 0;
  Wait wait = Wait::none;
  unsigned warp_mask = 0;
  unsigned warp_ops = 0;  // warp collectives completed: their parity picks the exchange buffer
  // cp.async: the copies not yet performed, in issue order, and where each committed
  // group among them ends (the copies past the last end are not committed yet).
  std::vector<AsyncCopy> copies;
  std::vector<size_t> group_ends;
  // Wait::condition: the thread goes on once this holds (an mbarrier phase, block_until).
  std::function<bool()> ready;
};

// Two buffers, used alternately: no lane can start collective k + 2 before every lane
// has left collective k + 1, hence has read the values of collective k.
struct WarpSlots {
  uint64_t values[2][kWarpSize];
  unsigned participants[2];  // the lanes that took part in the collective of each buffer
};

struct Runner {
  Fiber scheduler;
  std::vector<std::unique_ptr<ThreadState>> threads;
  std::vector<WarpSlots> warps;
  std::vector<unsigned> order;
  ThreadState* current = nullptr;
  dim3 grid, block;
  uint3 block_idx;
  const std::function<void()>* body = nullptr;
  // Dynamic shared memory, 1024-byte aligned as the GPU's (the swizzle patterns of TMA
  // and wgmma repeat every 1024 bytes of the shared-memory address).
  struct AlignedFree {
    void operator()(unsigned char* p) const { ::operator delete[](p, std::align_val_t(1024)); }
  };
  std::unique_ptr<unsigned char[], AlignedFree> shared;
  size_t shared_bytes = 0;
  std::vector<void*> poisoned;  // the static __shared__ variables poisoned in this block
  std::string error;
};

thread_local Runner* tl_runner = nullptr;
thread_local Recording* tl_recording = nullptr;

std::atomic<int> g_order{static_cast<int>(ThreadOrder::forward)};
std::atomic<uint64_t> g_seed{0};
std::atomic<int64_t> g_launches{0};
std::atomic<int64_t> g_recordings{0};

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

Runner& runner() {
  // Only reachable from inside a launch: kernels call these accessors.
  return *tl_runner;
}

void fiber_main() {
  Fiber::enter();
  Runner& r = runner();
  try {
    (*r.body)();
    if (!r.current->copies.empty())
      throw std::runtime_error("thread " + std::to_string(r.current->linear) + " exited with " +
                               std::to_string(r.current->copies.size()) +
                               " cp.async copies not waited for (cp.async.wait_group missing)");
    async_proxy::thread_exit(r.current->linear);
  } catch (const std::exception& e) {
    if (r.error.empty()) r.error = e.what();
  }
  r.current->wait = Wait::done;
  Fiber::leave(r.current->fiber, r.scheduler);
}

void fail_in_kernel(Runner& r, const std::string& msg) {
  if (r.error.empty()) r.error = msg;
}

// Releases the lanes of each warp whose collective every lane of its mask has joined.
bool release_warps(Runner& r, unsigned n) {
  bool released = false;
  for (unsigned w = 0; w * kWarpSize < n; ++w) {
    const unsigned first = w * kWarpSize, last = first + kWarpSize < n ? first + kWarpSize : n;
    unsigned mask = 0;
    bool any = false, ready = true;
    for (unsigned t = first; t < last; ++t) {
      const ThreadState& s = *r.threads[t];
      if (s.wait != Wait::warp) continue;
      if (any && s.warp_mask != mask) {
        fail_in_kernel(r, "warp collective called with different masks in one warp");
        return false;
      }
      mask = s.warp_mask;
      any = true;
    }
    if (!any) continue;
    for (unsigned t = first; t < last; ++t) {
      const ThreadState& s = *r.threads[t];
      // A lane named in the mask that has exited cannot take part; CUDA leaves that
      // undefined, so the emulator lets the others go on without it.
      if (((mask >> (t - first)) & 1u) && s.wait != Wait::warp && s.wait != Wait::done) ready = false;
    }
    if (!ready) continue;
    // Lanes that take no part (outside the mask, exited, or past the end of a partial
    // warp) read as 0, as inactive lanes do in a vote.
    unsigned buffer = 0;
    for (unsigned t = first; t < last; ++t)
      if (r.threads[t]->wait == Wait::warp) buffer = r.threads[t]->warp_ops & 1u;
    unsigned participants = 0;
    for (unsigned l = 0; l < static_cast<unsigned>(kWarpSize); ++l) {
      if (first + l < last && r.threads[first + l]->wait == Wait::warp)
        participants |= 1u << l;
      else
        r.warps[w].values[buffer][l] = 0;
    }
    r.warps[w].participants[buffer] = participants;
    for (unsigned t = first; t < last; ++t)
      if (r.threads[t]->wait == Wait::warp) r.threads[t]->wait = Wait::none;
    released = true;
  }
  return released;
}

// Lets the threads whose condition now holds go on; a condition that throws fails the launch.
bool release_conditions(Runner& r, unsigned n) {
  bool released = false;
  for (unsigned i = 0; i < n; ++i) {
    ThreadState& t = *r.threads[i];
    if (t.wait != Wait::condition) continue;
    try {
      if (!t.ready()) continue;
    } catch (const std::exception& e) {
      fail_in_kernel(r, e.what());
      return false;
    }
    t.wait = Wait::none;
    t.ready = nullptr;
    released = true;
  }
  return released;
}

void run_block(Runner& r, unsigned n) {
  for (unsigned i = 0; i < n; ++i) {
    ThreadState& t = *r.threads[i];
    t.fiber.reset(fiber_main, kStackBytes);
    t.linear = i;
    t.idx = {i % r.block.x, (i / r.block.x) % r.block.y, i / (r.block.x * r.block.y)};
    t.wait = Wait::none;
    t.warp_ops = 0;
    t.copies.clear();
    t.group_ends.clear();
    t.ready = nullptr;
  }
  async_proxy::block_start(n);
  // Uninitialized shared memory, as on the GPU: all bits set reads as NaN in floats,
  // so a kernel that reads before writing shows it.
  if (r.shared_bytes) std::memset(r.shared.get(), 0xFF, r.shared_bytes);
  r.poisoned.clear();
  for (;;) {
    for (unsigned k : r.order) {
      ThreadState& t = *r.threads[k];
      if (t.wait != Wait::none) continue;
      r.current = &t;
      Fiber::switch_to(r.scheduler, t.fiber);
    }
    r.current = nullptr;
    if (!r.error.empty()) throw std::runtime_error("[simt] " + r.error);
    unsigned done = 0, at_barrier = 0, at_warp = 0, at_condition = 0;
    for (unsigned i = 0; i < n; ++i) {
      const Wait w = r.threads[i]->wait;
      done += w == Wait::done;
      at_barrier += w == Wait::block_barrier;
      at_warp += w == Wait::warp;
      at_condition += w == Wait::condition;
    }
    if (done == n) {
      async_proxy::block_end();
      return;
    }
    if (at_warp && release_warps(r, n)) continue;
    if (at_condition && release_conditions(r, n)) continue;
    if (!r.error.empty()) throw std::runtime_error("[simt] " + r.error);
    if (at_barrier + done == n) {
      // Threads that have exited count as arrived (what current GPUs do).
      std::vector<unsigned> released;
      for (unsigned i = 0; i < n; ++i)
        if (r.threads[i]->wait == Wait::block_barrier) {
          r.threads[i]->wait = Wait::none;
          released.push_back(i);
        }
      async_proxy::block_barrier(released.data(), released.size());
      continue;
    }
    throw std::runtime_error("[simt] deadlock in block (" + std::to_string(r.block_idx.x) + ", " +
                             std::to_string(r.block_idx.y) + ", " + std::to_string(r.block_idx.z) +
                             "): " + std::to_string(at_barrier) + " threads wait at __syncthreads, " +
                             std::to_string(at_warp) + " at a warp collective, " + std::to_string(at_condition) +
                             " at an mbarrier wait or setmaxnreg.inc, " + std::to_string(done) + " have exited");
  }
}

}  // namespace

void set_thread_order(ThreadOrder order, uint64_t seed) {
  g_order.store(static_cast<int>(order));
  g_seed.store(seed);
}

ThreadOrder thread_order() { return static_cast<ThreadOrder>(g_order.load()); }

const char* thread_order_name(ThreadOrder order) {
  switch (order) {
    case ThreadOrder::forward: return "forward";
    case ThreadOrder::reverse: return "reverse";
    case ThreadOrder::shuffled: return "shuffled";
  }
  return "?";
}

ThreadOrder parse_thread_order(const std::string& name) {
  for (ThreadOrder o : {ThreadOrder::forward, ThreadOrder::reverse, ThreadOrder::shuffled})
    if (name == thread_order_name(o)) return o;
  throw std::invalid_argument("thread order must be forward, reverse or shuffled, got '" + name + "'");
}

void run_grid(dim3 grid, dim3 block, size_t dynamic_shared_bytes, const std::function<void()>& body) {
  const uint64_t n64 = static_cast<uint64_t>(block.x) * block.y * block.z;
  if (n64 == 0 || n64 > kMaxThreadsPerBlock)
    throw std::invalid_argument("[simt] a block needs 1 to 1024 threads, got " + std::to_string(n64));
  if (static_cast<uint64_t>(grid.x) * grid.y * grid.z == 0) return;
  if (tl_runner) throw std::logic_error("[simt] a kernel launched another kernel");
  if (tl_recording) {
    tl_recording->push_back(
        [grid, block, dynamic_shared_bytes, body] { run_grid(grid, block, dynamic_shared_bytes, body); });
    return;
  }
  g_launches.fetch_add(1, std::memory_order_relaxed);
  const unsigned n = static_cast<unsigned>(n64);

  thread_local Runner r;
  r.grid = grid;
  r.block = block;
  r.body = &body;
  r.error.clear();
  while (r.threads.size() < n) r.threads.push_back(std::make_unique<ThreadState>());
  r.warps.resize((n + kWarpSize - 1) / kWarpSize);
  if (r.shared_bytes < dynamic_shared_bytes) {
    r.shared.reset(new (std::align_val_t(1024)) unsigned char[dynamic_shared_bytes]);
  }
  r.shared_bytes = dynamic_shared_bytes;
  r.order.resize(n);
  const ThreadOrder order = thread_order();
  for (unsigned i = 0; i < n; ++i) r.order[i] = order == ThreadOrder::reverse ? n - 1 - i : i;
  if (order == ThreadOrder::shuffled) {
    uint64_t state = g_seed.load();
    for (unsigned i = n - 1; i > 0; --i) {
      const unsigned j = static_cast<unsigned>(splitmix64(state) % (i + 1));
      const unsigned t = r.order[i];
      r.order[i] = r.order[j];
      r.order[j] = t;
    }
  }

  struct Active {
    explicit Active(Runner* p) { tl_runner = p; }
    ~Active() { tl_runner = nullptr; }
  } active(&r);
  // Blocks run one after another, last first under the reverse order: a kernel whose
  // result depends on which block runs (or finishes) first, as split-K's last-arriving
  // block, then meets both orders.
  const uint64_t blocks = static_cast<uint64_t>(grid.x) * grid.y * grid.z;
  for (uint64_t i = 0; i < blocks; ++i) {
    const uint64_t b = order == ThreadOrder::reverse ? blocks - 1 - i : i;
    r.block_idx = {static_cast<unsigned>(b % grid.x), static_cast<unsigned>(b / grid.x % grid.y),
                   static_cast<unsigned>(b / (static_cast<uint64_t>(grid.x) * grid.y))};
    run_block(r, n);
  }
}

int64_t launches() { return g_launches.load(std::memory_order_relaxed); }

void set_recording(Recording* recording) {
  if (recording) g_recordings.fetch_add(1, std::memory_order_relaxed);
  tl_recording = recording;
}
int64_t recordings() { return g_recordings.load(std::memory_order_relaxed); }
Recording* recording() { return tl_recording; }

const uint3& thread_idx() { return runner().current->idx; }
const uint3& block_idx() { return runner().block_idx; }
const dim3& block_dim() { return runner().block; }
const dim3& grid_dim() { return runner().grid; }
void* dynamic_shared() { return runner().shared.get(); }
size_t dynamic_shared_bytes() { return runner().shared_bytes; }
unsigned lane_id() { return runner().current->linear % kWarpSize; }
unsigned thread_linear() { return runner().current->linear; }

uint32_t shared_offset(const void* p, size_t bytes, const char* what) {
  const Runner& r = runner();
  const auto base = reinterpret_cast<uintptr_t>(r.shared.get()), at = reinterpret_cast<uintptr_t>(p);
  if (at < base || at - base + bytes > r.shared_bytes)
    throw std::runtime_error(std::string(what) + ": " + std::to_string(bytes) +
                             " bytes that are not all in the block's dynamic shared memory (" +
                             std::to_string(r.shared_bytes) + " bytes)");
  return static_cast<uint32_t>(at - base);
}
unsigned char* shared_at(uint32_t offset, size_t bytes, const char* what) {
  const Runner& r = runner();
  if (static_cast<size_t>(offset) + bytes > r.shared_bytes)
    throw std::runtime_error(std::string(what) + ": shared-memory bytes " + std::to_string(offset) + " to " +
                             std::to_string(offset + bytes) + " are past the block's dynamic shared memory (" +
                             std::to_string(r.shared_bytes) + " bytes)");
  return r.shared.get() + offset;
}

void block_until(const std::function<bool()>& ready) {
  if (ready()) return;
  Runner& r = runner();
  ThreadState& t = *r.current;
  t.ready = ready;
  t.wait = Wait::condition;
  Fiber::switch_to(t.fiber, r.scheduler);
}

void poison_shared(void* p, size_t bytes) {
  Runner& r = runner();
  for (void* q : r.poisoned)
    if (q == p) return;
  r.poisoned.push_back(p);
  std::memset(p, 0xFF, bytes);
}

void async_copy(void* dst, const void* src, unsigned bytes, unsigned src_bytes) {
  auto address = [](const void* p) { return reinterpret_cast<uintptr_t>(p); };
  std::string error;
  if (bytes != 4 && bytes != 8 && bytes != 16)
    error = "copies " + std::to_string(bytes) + " bytes (4, 8 or 16)";
  else if (src_bytes > bytes)
    error = "reads " + std::to_string(src_bytes) + " source bytes, more than its " + std::to_string(bytes);
  else if (address(dst) % bytes != 0 || address(src) % bytes != 0)
    error = "of " + std::to_string(bytes) + " bytes is not " + std::to_string(bytes) + "-byte aligned (destination " +
            std::to_string(address(dst) % bytes) + ", source " + std::to_string(address(src) % bytes) +
            " bytes past a boundary)";
  if (!error.empty())
    throw std::runtime_error("cp.async of thread " + std::to_string(runner().current->linear) + " " + error);
  runner().current->copies.push_back({dst, src, bytes, src_bytes});
  std::memset(dst, 0xFF, bytes);  // until the wait: NaN, as a read before the copy lands may see
}

void async_commit() {
  ThreadState& t = *runner().current;
  t.group_ends.push_back(t.copies.size());
}

void async_wait(int pending) {
  ThreadState& t = *runner().current;
  if (t.copies.size() > (t.group_ends.empty() ? 0 : t.group_ends.back()))
    throw std::runtime_error("thread " + std::to_string(t.linear) +
                             " waits with cp.async copies issued but not committed: cp.async.wait_group does not "
                             "wait for them (cp.async.commit_group missing)");
  const size_t groups = t.group_ends.size(), keep = static_cast<size_t>(pending);
  if (groups <= keep) return;
  const size_t done_groups = groups - keep, done = t.group_ends[done_groups - 1];
  for (size_t i = 0; i < done; ++i) {
    const AsyncCopy& c = t.copies[i];
    if (c.src_bytes) std::memcpy(c.dst, c.src, c.src_bytes);
    std::memset(static_cast<unsigned char*>(c.dst) + c.src_bytes, 0, c.bytes - c.src_bytes);
  }
  t.copies.erase(t.copies.begin(), t.copies.begin() + static_cast<std::ptrdiff_t>(done));
  t.group_ends.erase(t.group_ends.begin(), t.group_ends.begin() + static_cast<std::ptrdiff_t>(done_groups));
  for (size_t& end : t.group_ends) end -= done;
}

void syncthreads() {
  Runner& r = runner();
  ThreadState& t = *r.current;
  t.wait = Wait::block_barrier;
  Fiber::switch_to(t.fiber, r.scheduler);
}

const uint64_t* warp_exchange(unsigned mask, uint64_t value) {
  Runner& r = runner();
  ThreadState& t = *r.current;
  const unsigned lane = t.linear % kWarpSize;
  if (!((mask >> lane) & 1u)) fail_in_kernel(r, "a lane called a warp collective with a mask that excludes it");
  WarpSlots& slots = r.warps[t.linear / kWarpSize];
  const unsigned buffer = t.warp_ops & 1u;
  slots.values[buffer][lane] = value;
  t.wait = Wait::warp;
  t.warp_mask = mask;
  Fiber::switch_to(t.fiber, r.scheduler);
  ++t.warp_ops;
  return slots.values[buffer];
}

bool elect_one(unsigned mask) {
  warp_exchange(mask, 0);
  const Runner& r = runner();
  const unsigned me = r.current->linear, warp = me / kWarpSize, participants = warp_participants();
  for (unsigned k : r.order)
    if (k / kWarpSize == warp && ((participants >> (k % kWarpSize)) & 1u)) return k == me;
  return false;  // unreachable: the caller took part
}

unsigned warp_participants() {
  const Runner& r = runner();
  const ThreadState& t = *r.current;
  return r.warps[t.linear / kWarpSize].participants[(t.warp_ops - 1) & 1u];
}

void check_shuffle_source(unsigned src_lane) {
  Runner& r = runner();
  const ThreadState& t = *r.current;
  const unsigned participants = r.warps[t.linear / kWarpSize].participants[(t.warp_ops - 1) & 1u];
  if (!((participants >> src_lane) & 1u))
    throw std::runtime_error("lane " + std::to_string(t.linear % kWarpSize) + " of warp " +
                             std::to_string(t.linear / kWarpSize) + " shuffled from lane " + std::to_string(src_lane) +
                             ", which took no part (outside the mask, exited, or past the end of a partial warp): "
                             "undefined on the GPU");
}

}  // namespace customml::simt
