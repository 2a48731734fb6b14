// The host emulation of sm_90's asynchronous proxy (simt/async_proxy.h): mbarriers, the
// TMA's tiled 2-D tensor load, and wgmma. What is emulated and what is refused is stated
// in simt/tma.h and simt/wgmma.h, beside the spellings kernels use.

#include "simt/async_proxy.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "simt/runtime.h"
#include "simt/wmma.h"

namespace customml::simt::async_proxy {
namespace {

// Written into an mbarrier's 8 bytes by mbarrier_init; its state lives in Block::barriers.
// Anything else there (poisoned shared memory, a kernel's store) is an uninitialized or
// overwritten barrier.
constexpr uint64_t kBarrierMark = 0x6d62617272696572ull;  // "mbarrier"
constexpr unsigned kMaxArrivals = (1u << 20) - 1;         // the PTX ISA's count range
constexpr int kWarpgroup = 128;

struct BulkCopy {
  uint32_t dst;  // shared-memory address
  TensorMap map;
  int column, row;
};

// What a thread knows of the block's completed wgmmas: entry t is how many of thread t's
// wgmma.mma_async (in issue order) are known complete. A thread knows its own from its
// wgmma.wait_group; an mbarrier arrive releases what the thread knows to the phase, a wait
// that sees the phase complete acquires it, and a __syncthreads joins the threads'.
using Knowledge = std::vector<size_t>;

void join(Knowledge& into, const Knowledge& from) {
  if (into.size() < from.size()) into.resize(from.size(), 0);
  for (size_t t = 0; t < from.size(); ++t)
    if (from[t] > into[t]) into[t] = from[t];
}

struct Barrier {
  unsigned count = 0, pending = 0, phase = 0;
  int64_t transactions = 0;  // bytes announced by expect_tx and not yet delivered
  std::vector<BulkCopy> in_flight;
  Knowledge arrived;   // joined from every arrival so far
  Knowledge released;  // as arrived was when the last phase completed: what a wait acquires
};

struct Wgmma {
  float* d;
  int n;
  uint64_t desc_a, desc_b;
  bool accumulate, trans_a, trans_b;
  WgmmaType type;
  bool chained;              // its accumulator input is the result of an earlier operation still in flight
  std::vector<float> input;  // otherwise, the accumulator registers as they were at issue
  // The bits of the operand elements this thread's registers need (its two rows of A, then
  // its columns of B, each k in order), read at issue: the GPU may read them any time until
  // the wait, so the wait checks that shared memory still holds them.
  std::vector<uint32_t> operands;
};

// Accumulator registers a thread named (wgmma_fence_operands, or a wgmma on them), with
// their bits as the last wgmma.fence (or a wgmma issued on them since) left them.
struct Accumulators {
  float* d;
  int registers;
  bool captured;
  std::vector<uint32_t> bits;
};

struct ThreadWgmma {
  std::vector<Wgmma> ops;  // issued, not yet complete, in issue order
  std::vector<size_t> group_ends;
  std::vector<Accumulators> named;
  bool fenced = false;
  size_t issued = 0;
};

// One wgmma.mma_async as the first thread of its warpgroup issued it: the others must
// issue the same.
struct Issued {
  uint64_t desc_a, desc_b;
  int n;
  unsigned flags;
};

struct Block {
  unsigned threads = 0;
  // The ordering of wgmma reads before tensor copies into the same bytes, kept from the
  // block's first wgmma on (nothing to order before): known[u] is thread u's Knowledge;
  // reads, by the [first, last) bytes an operand's descriptor spans, entry t 1 + the issue
  // index of thread t's latest wgmma reading them; spans caches the descriptors' bytes.
  bool ordering = false;
  std::vector<Knowledge> known;
  std::map<std::pair<uint32_t, uint32_t>, std::vector<size_t>> reads;
  std::map<std::pair<uint64_t, unsigned>, std::pair<uint32_t, uint32_t>> spans;
  // setmaxnreg: each thread's register count (from the first setmaxnreg: the most the
  // block size allows), the CTA's pool, and each warpgroup's setmaxnreg in order
  // (action << 16 | count) with how many each thread has executed.
  std::vector<unsigned> registers, reallocations;
  std::vector<std::vector<unsigned>> reallocated;
  int64_t pool = 0;
  // Dynamic shared memory as the asynchronous proxy sees it: the block's poison, then what
  // tensor copies wrote and what fence.proxy.async published (grown on first use).
  std::vector<unsigned char> async_view;
  std::map<uint32_t, Barrier> barriers;  // by shared-memory address
  std::vector<ThreadWgmma> wgmma;
  std::vector<std::vector<Issued>> warpgroups;
};

thread_local Block tl_block;
std::atomic<int64_t> g_wgmma_issued{0};  // by warpgroups, on any OS thread

unsigned char* async_view_at(uint32_t at, size_t bytes) {
  std::vector<unsigned char>& v = tl_block.async_view;
  if (v.size() < at + bytes) v.resize(dynamic_shared_bytes(), 0xFF);  // poisoned at the block's start
  return v.data() + at;
}

std::string thread_name() { return "thread " + std::to_string(thread_linear()); }

Barrier& barrier_at(uint64_t* bar, const char* what) {
  const uint32_t at = shared_offset(bar, 8, what);
  if (at % 8) throw std::runtime_error(std::string(what) + ": the mbarrier is not 8-byte aligned");
  const auto it = tl_block.barriers.find(at);
  if (it == tl_block.barriers.end() || *bar != kBarrierMark)
    throw std::runtime_error(std::string(what) + " by " + thread_name() + " on shared address " + std::to_string(at) +
                             ", which holds no mbarrier (mbarrier.init missing, or the object was overwritten)");
  return it->second;
}

void complete_if_done(Barrier& b) {
  if (b.pending != 0 || b.transactions != 0) return;
  b.phase ^= 1u;
  b.pending = b.count;
  b.released = b.arrived;
}

// Swizzle<B,4,3> on a shared-memory address: the 16-byte chunk bits [4, 4+B) XOR the bits
// [7, 7+B), B = log2(span / 16); the pattern repeats every 8 x span bytes.
uint32_t swizzle(uint32_t address, unsigned span) {
  const uint32_t mask = (span / 16 - 1) << 4;
  return address ^ ((address >> 3) & mask);
}

void perform(const BulkCopy& c) {
  const TensorMap& m = c.map;
  const unsigned eb = m.element_bytes, span = m.swizzle_bytes ? m.swizzle_bytes : m.box_columns * eb;
  const auto* global = static_cast<const unsigned char*>(m.global);
  for (uint32_t r = 0; r < m.box_rows; ++r)
    for (uint32_t col = 0; col < m.box_columns; ++col) {
      const int64_t gr = static_cast<int64_t>(c.row) + r, gc = static_cast<int64_t>(c.column) + col;
      const uint32_t at = c.dst + r * span + col * eb;
      unsigned char* dst = shared_at(m.swizzle_bytes ? swizzle(at, m.swizzle_bytes) : at, eb, "tensor copy");
      if (gr >= 0 && gc >= 0 && static_cast<uint64_t>(gr) < m.rows && static_cast<uint64_t>(gc) < m.columns)
        std::memcpy(dst, global + static_cast<uint64_t>(gr) * m.row_bytes + static_cast<uint64_t>(gc) * eb, eb);
      else
        std::memset(dst, 0, eb);  // out of bounds: zeros (CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE)
      std::memcpy(async_view_at(m.swizzle_bytes ? swizzle(at, m.swizzle_bytes) : at, eb), dst, eb);
    }
}

// The copies in flight on b land (all its arrivals are in): they deliver their bytes.
void land(Barrier& b) {
  for (const BulkCopy& c : b.in_flight) {
    perform(c);
    b.transactions -= static_cast<int64_t>(c.map.box_rows) * c.map.box_columns * c.map.element_bytes;
  }
  b.in_flight.clear();
  if (b.transactions < 0)
    throw std::runtime_error("an mbarrier's transaction count went negative: its tensor copies delivered " +
                             std::to_string(-b.transactions) +
                             " bytes more than arrive.expect_tx announced (the phase could complete before they "
                             "land on the GPU)");
  complete_if_done(b);
}

// The shared-memory address of element (mn, k) of a wgmma operand (rows mn: M for A, N
// for B; k: 32 bytes per instruction) under its descriptor, in the PTX ISA's canonical
// layouts (CUTLASS's make_gmma_desc states them in 16-byte units): K-major (not
// transposed) core matrices of 8 rows x 16 bytes, MN-major (transposed) of 16 bytes of mn x
// 8 k; the swizzle modes widen a row of the pattern to 32, 64 or 128 bytes.
uint32_t operand_address(uint64_t desc, bool mn_major, unsigned mn, unsigned k, unsigned element_bytes) {
  const uint32_t start = static_cast<uint32_t>(desc & 0x3FFF) << 4;
  const uint32_t leading = static_cast<uint32_t>((desc >> 16) & 0x3FFF) << 4;
  const uint32_t stride = static_cast<uint32_t>((desc >> 32) & 0x3FFF) << 4;
  const unsigned mode = static_cast<unsigned>(desc >> 62);               // 0 none, 1 128 B, 2 64 B, 3 32 B
  const unsigned w = mode == 0 ? 1 : mode == 1 ? 8 : mode == 2 ? 4 : 2;  // 16-byte chunks per pattern row
  uint32_t at;
  if (!mn_major) {
    const unsigned kb = k * element_bytes, chunk = kb / 16;
    at = start + (mn % 8) * 16 * w + (mn / 8) * stride + (mode == 0 ? chunk * leading : chunk * 16) + kb % 16;
  } else {
    const unsigned mb = mn * element_bytes, chunk = mb / 16;
    if (mode == 0)
      at = start + chunk * stride + (k % 8) * 16 + (k / 8) * leading + mb % 16;
    else
      at = start + (chunk % w) * 16 + (chunk / w) * leading + (k % 8) * 16 * w + (k / 8) * stride + mb % 16;
  }
  return mode == 0 ? at : swizzle(at, 16 * w);
}

// The [first, last) shared-memory bytes a wgmma operand spans (rows: 64 for A, n for B),
// over every thread's elements: what a tensor copy into them must be ordered after.
std::pair<uint32_t, uint32_t> operand_span(uint64_t desc, bool mn_major, unsigned rows, WgmmaType type) {
  const unsigned eb = type == WgmmaType::tf32 ? 4 : 2, depth = type == WgmmaType::tf32 ? 8 : 16;
  const auto key = std::make_pair(desc, rows << 8 | static_cast<unsigned>(mn_major) << 4 | static_cast<unsigned>(type));
  const auto it = tl_block.spans.find(key);
  if (it != tl_block.spans.end()) return it->second;
  uint32_t first = UINT32_MAX, last = 0;
  for (unsigned mn = 0; mn < rows; ++mn)
    for (unsigned k = 0; k < depth; ++k) {
      const uint32_t at = operand_address(desc, mn_major, mn, k, eb);
      first = std::min(first, at);
      last = std::max(last, at + eb);
    }
  return tl_block.spans[key] = {first, last};
}

// issue: also checks that the asynchronous proxy sees the same bytes (a TMA wrote them, or
// a fence.proxy.async followed the generic stores that did).
uint32_t operand_bits(uint64_t desc, bool mn_major, unsigned mn, unsigned k, WgmmaType type, bool issue) {
  const unsigned eb = type == WgmmaType::tf32 ? 4 : 2;
  const uint32_t at = operand_address(desc, mn_major, mn, k, eb);
  const unsigned char* p = shared_at(at, eb, "wgmma.mma_async operand");
  if (issue && std::memcmp(p, async_view_at(at, eb), eb) != 0)
    throw std::runtime_error("wgmma.mma_async by " + thread_name() + " reads shared address " + std::to_string(at) +
                             ", written by generic stores with no fence.proxy.async since (the wgmma, in the "
                             "asynchronous proxy, may not see them)");
  uint32_t bits = 0;
  std::memcpy(&bits, p, eb);
  return bits;
}

float operand_value(uint32_t bits, WgmmaType type) {
  if (type == WgmmaType::tf32) {
    bits &= 0xFFFFE000u;  // the top 19 bits, as GPUs read a tf32 operand (cuda/simt/mma.h)
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  const auto half = static_cast<uint16_t>(bits);
  return type == WgmmaType::bf16 ? __bfloat162float(__nv_bfloat16{half}) : __half2float(__half{half});
}

// The calling thread's operand elements of op as shared memory holds them now: its two rows
// of A (register 4i + 2h + e holds row 16 warp + lane / 4 + 8h, column 8i + 2 (lane % 4) + e)
// and n / 4 columns of B, depth k each.
std::vector<uint32_t> read_operands(const Wgmma& op, bool issue) {
  const unsigned t = thread_linear() % kWarpgroup, warp = t / 32, g = (t % 32) / 4, q = t % 4;
  const unsigned depth = op.type == WgmmaType::tf32 ? 8 : 16;
  std::vector<uint32_t> bits;
  bits.reserve((2 + static_cast<size_t>(op.n) / 4) * depth);
  for (unsigned h = 0; h < 2; ++h)
    for (unsigned k = 0; k < depth; ++k)
      bits.push_back(operand_bits(op.desc_a, op.trans_a, 16 * warp + g + 8 * h, k, op.type, issue));
  for (unsigned c = 0; c < static_cast<unsigned>(op.n) / 4; ++c)
    for (unsigned k = 0; k < depth; ++k)
      bits.push_back(operand_bits(op.desc_b, op.trans_b, 8 * (c / 2) + 2 * q + c % 2, k, op.type, issue));
  return bits;
}

// D = A B (+ the accumulator input) for the calling thread's n / 2 registers, from the
// operands read at issue.
std::vector<float> compute(const Wgmma& op, const std::vector<float>& input) {
  const unsigned depth = op.type == WgmmaType::tf32 ? 8 : 16;
  float a[2][16], b[64][16];
  size_t next = 0;
  for (unsigned h = 0; h < 2; ++h)
    for (unsigned k = 0; k < depth; ++k) a[h][k] = operand_value(op.operands[next++], op.type);
  for (unsigned c = 0; c < static_cast<unsigned>(op.n) / 4; ++c)
    for (unsigned k = 0; k < depth; ++k) b[c][k] = operand_value(op.operands[next++], op.type);
  std::vector<float> out(static_cast<size_t>(op.n / 2));
  for (unsigned j = 0; j < out.size(); ++j) {
    const float* row = a[(j / 2) % 2];
    const float* col = b[2 * (j / 4) + j % 2];
    float sum = op.accumulate ? input[j] : 0.0f;
    for (unsigned k = 0; k < depth; ++k) sum += row[k] * col[k];
    out[j] = sum;
  }
  return out;
}

// The accumulators' value while a wgmma is in flight: a signaling NaN, so that arithmetic
// on them (d *= s between two chained wgmmas) gives a quiet NaN, other bits, and shows as a
// write as much as a store does.
constexpr uint32_t kPoison = 0xFFBFFFFFu;

void poison(float* d, int n) {
  for (int j = 0; j < n / 2; ++j) std::memcpy(d + j, &kPoison, 4);
}

bool still_poisoned(const float* d, int n) {
  for (int j = 0; j < n / 2; ++j) {
    uint32_t bits;
    std::memcpy(&bits, d + j, 4);
    if (bits != kPoison) return false;
  }
  return true;
}

std::vector<uint32_t> bits_of(const float* d, int registers) {
  std::vector<uint32_t> bits(static_cast<size_t>(registers));
  std::memcpy(bits.data(), d, 4 * bits.size());
  return bits;
}

Accumulators& named(ThreadWgmma& w, float* d, int registers) {
  for (Accumulators& a : w.named)
    if (a.d == d) {
      if (a.registers != registers)
        throw std::runtime_error(thread_name() + ": accumulator registers named with " + std::to_string(a.registers) +
                                 " and " + std::to_string(registers) +
                                 " registers (a wgmma shape different from an earlier one's)");
      return a;
    }
  w.named.push_back({d, registers, false, {}});
  return w.named.back();
}

}  // namespace

void block_start(unsigned threads) {
  tl_block.threads = threads;
  tl_block.barriers.clear();
  tl_block.async_view.clear();
  tl_block.wgmma.assign(threads, ThreadWgmma{});
  tl_block.warpgroups.assign((threads + kWarpgroup - 1) / kWarpgroup, {});
  tl_block.ordering = false;
  tl_block.known.clear();
  tl_block.reads.clear();
  tl_block.spans.clear();
  tl_block.registers.clear();
}

void block_barrier(const unsigned* threads, size_t count) {
  if (!tl_block.ordering) return;
  Knowledge all;
  for (size_t i = 0; i < count; ++i) join(all, tl_block.known[threads[i]]);
  for (size_t i = 0; i < count; ++i) tl_block.known[threads[i]] = all;
}

void thread_exit(unsigned linear) {
  const ThreadWgmma& w = tl_block.wgmma[linear];
  if (!w.ops.empty())
    throw std::runtime_error("thread " + std::to_string(linear) + " exited with " + std::to_string(w.ops.size()) +
                             " wgmma.mma_async not waited for (wgmma.wait_group missing)");
}

void block_end() {
  for (const auto& [at, b] : tl_block.barriers)
    if (!b.in_flight.empty())
      throw std::runtime_error("the block exited with " + std::to_string(b.in_flight.size()) +
                               " tensor copies in flight on the mbarrier at shared address " + std::to_string(at) +
                               " (nobody waited for its phase)");
  for (unsigned t = 0; t < tl_block.threads; ++t)
    if (tl_block.wgmma[t].issued != tl_block.warpgroups[t / kWarpgroup].size())
      throw std::runtime_error("thread " + std::to_string(t) + " executed " + std::to_string(tl_block.wgmma[t].issued) +
                               " wgmma.mma_async, others of its warpgroup " +
                               std::to_string(tl_block.warpgroups[t / kWarpgroup].size()) +
                               ": the instruction is .aligned (every thread of the warpgroup executes each)");
}

void mbarrier_init(uint64_t* bar, unsigned count) {
  const uint32_t at = shared_offset(bar, 8, "mbarrier.init");
  if (at % 8) throw std::runtime_error("mbarrier.init: the mbarrier is not 8-byte aligned");
  if (count == 0 || count > kMaxArrivals)
    throw std::runtime_error("mbarrier.init with count " + std::to_string(count) + " (1 to 2^20 - 1)");
  Barrier& b = tl_block.barriers[at];
  if (!b.in_flight.empty()) throw std::runtime_error("mbarrier.init on an mbarrier with tensor copies in flight");
  b = Barrier{count, count, 0, 0, {}, {}, {}};
  *bar = kBarrierMark;
}

void mbarrier_arrive(uint64_t* bar, unsigned transaction_bytes) {
  Barrier& b = barrier_at(bar, transaction_bytes ? "mbarrier.arrive.expect_tx" : "mbarrier.arrive");
  if (b.pending == 0)
    throw std::runtime_error("mbarrier.arrive by " + thread_name() +
                             " on a phase that has all its arrivals: more arrivals than the count given to "
                             "mbarrier.init");
  b.transactions += transaction_bytes;
  --b.pending;
  if (tl_block.ordering) join(b.arrived, tl_block.known[thread_linear()]);  // arrive has .release semantics
  complete_if_done(b);
}

void mbarrier_wait_parity(uint64_t* bar, unsigned parity) {
  const uint32_t at = shared_offset(bar, 8, "mbarrier.try_wait.parity");
  barrier_at(bar, "mbarrier.try_wait.parity");
  parity &= 1u;
  Knowledge acquired;  // what the completed phase released, as the wait saw it
  block_until([at, parity, &acquired] {
    Barrier& b = tl_block.barriers.at(at);
    if (b.phase == parity && b.pending == 0 && !b.in_flight.empty()) land(b);
    if (b.phase == parity) return false;
    acquired = b.released;  // the phase of that parity has completed
    return true;
  });
  if (tl_block.ordering) join(tl_block.known[thread_linear()], acquired);
}

void setmaxnreg(bool increase, unsigned count) {
  const unsigned t = thread_linear(), wg = t / kWarpgroup;
  auto fail = [&](const std::string& why) {
    throw std::runtime_error(std::string(increase ? "setmaxnreg.inc" : "setmaxnreg.dec") + " by " + thread_name() +
                             ": " + why);
  };
  if (count < 24 || count > 256 || count % 8) fail(std::to_string(count) + " registers (24 to 256 in steps of 8)");
  if ((wg + 1) * kWarpgroup > tl_block.threads)
    fail("its warpgroup is partial (the block has " + std::to_string(tl_block.threads) +
         " threads): every warp of a warpgroup executes it");
  if (tl_block.registers.empty()) {
    // At launch every warp holds the kernel's register count; ptxas gives a kernel that
    // reallocates the most its __launch_bounds__ allow (the SASS report shows it), so the
    // pool starts empty.
    const unsigned warps = (tl_block.threads + 31) / 32;
    tl_block.registers.assign(tl_block.threads, std::min(256u, 65536u / (32 * warps) / 8 * 8));
    tl_block.reallocations.assign(tl_block.threads, 0);
    tl_block.reallocated.assign((tl_block.threads + kWarpgroup - 1) / kWarpgroup, {});
    tl_block.pool = 0;
  }
  const unsigned code = static_cast<unsigned>(increase) << 16 | count;
  std::vector<unsigned>& done = tl_block.reallocated[wg];
  unsigned& mine = tl_block.reallocations[t];
  if (mine == done.size())
    done.push_back(code);
  else if (done[mine] != code)
    fail("it differs from warpgroup " + std::to_string(wg) + "'s setmaxnreg number " + std::to_string(mine) +
         " as another thread executed it (.sync.aligned: every warp of the warpgroup executes the same)");
  ++mine;
  unsigned& held = tl_block.registers[t];
  if (increase ? count < held : count > held)
    fail(std::string(increase ? "to fewer" : "to more") + " registers (" + std::to_string(count) +
         ") than the warp holds (" + std::to_string(held) + ")");
  const int64_t change = static_cast<int64_t>(count) - held;
  block_until([change] {  // takes them once the pool has them (gives them back at once)
    if (tl_block.pool < change) return false;
    tl_block.pool -= change;
    return true;
  });
  held = count;
}

void tensor_map_encode_2d(TensorMap* map, const void* global, uint32_t element_bytes, uint64_t rows, uint64_t columns,
                          uint64_t row_bytes, uint32_t box_rows, uint32_t box_columns, uint32_t swizzle_bytes) {
  auto fail = [](const std::string& why) { throw std::invalid_argument("tensor map: " + why); };
  if (reinterpret_cast<uintptr_t>(global) % 16) fail("the global address is not 16-byte aligned");
  if (element_bytes != 2 && element_bytes != 4) fail("elements of 2 or 4 bytes");
  if (rows == 0 || columns == 0 || rows > (1ull << 32) || columns > (1ull << 32)) fail("dimensions 1 to 2^32");
  if (row_bytes % 16 || row_bytes < columns * element_bytes || row_bytes >= (1ull << 40))
    fail("the row stride must be a multiple of 16 bytes below 2^40, at least a row");
  if (box_rows == 0 || box_rows > 256 || box_columns == 0 || box_columns > 256) fail("box dimensions 1 to 256");
  if (box_columns * element_bytes % 16) fail("the box's rows must be a multiple of 16 bytes");
  if (swizzle_bytes != 0 && swizzle_bytes != 32 && swizzle_bytes != 64 && swizzle_bytes != 128)
    fail("swizzle of 0, 32, 64 or 128 bytes");
  // The driver takes narrower boxes under a swizzle too; our kernels fill the pattern's
  // rows, and the emulator refuses the rest rather than guess their layout.
  if (swizzle_bytes && box_columns * element_bytes != swizzle_bytes)
    fail("a swizzled box's rows must be the swizzle's width (emulator)");
  *map = TensorMap{global, rows, columns, row_bytes, element_bytes, box_rows, box_columns, swizzle_bytes, {}};
}

void tensor_load_2d(void* dst, const TensorMap* map, int column, int row, uint64_t* bar) {
  const TensorMap& m = *map;
  const unsigned span = m.swizzle_bytes ? m.swizzle_bytes : m.box_columns * m.element_bytes;
  const uint32_t at = shared_offset(dst, static_cast<size_t>(m.box_rows) * span, "cp.async.bulk.tensor destination");
  // 128 bytes (the PTX ISA); a swizzled box at its pattern's repeat, so that its rows'
  // pattern is the one wgmma's descriptors assume (the CUDA programming guide's TMA swizzle).
  const unsigned alignment = m.swizzle_bytes ? 8 * m.swizzle_bytes : 128;
  if (at % alignment)
    throw std::runtime_error("cp.async.bulk.tensor by " + thread_name() + ": the destination (shared address " +
                             std::to_string(at) + ") is not " + std::to_string(alignment) + "-byte aligned");
  Barrier& b = barrier_at(bar, "cp.async.bulk.tensor's mbarrier");
  if (tl_block.ordering) {
    // The copy may write any time from now: every wgmma reading these bytes must be known
    // complete to this thread (its readers' wait_group, then an arrive on an mbarrier whose
    // phase this thread waited for, or a __syncthreads).
    const uint32_t end = at + m.box_rows * span;
    const Knowledge& known = tl_block.known[thread_linear()];
    for (auto it = tl_block.reads.begin(); it != tl_block.reads.end();) {
      if (it->first.first >= end || it->first.second <= at) {
        ++it;
        continue;
      }
      for (size_t t = 0; t < it->second.size(); ++t)
        if (it->second[t] > (t < known.size() ? known[t] : 0))
          throw std::runtime_error(
              "cp.async.bulk.tensor by " + thread_name() + " overwrites shared bytes " + std::to_string(at) + " to " +
              std::to_string(end) + " that thread " + std::to_string(t) + "'s wgmma number " +
              std::to_string(it->second[t] - 1) +
              " reads, and nothing orders that wgmma's completion before the copy (a stage refilled before all "
              "its consumers released it: their wgmma.wait_group, then an arrive on the stage's empty mbarrier "
              "whose phase the producer waits for with the right parity)");
      it = tl_block.reads.erase(it);  // overwritten: later reads are new ones
    }
  }
  b.in_flight.push_back({at, m, column, row});
  std::memset(dst, 0xFF, static_cast<size_t>(m.box_rows) * span);  // NaN until it lands
  std::memset(async_view_at(at, static_cast<size_t>(m.box_rows) * span), 0xFF, static_cast<size_t>(m.box_rows) * span);
}

// Publishes all of the block's generic stores, not only the calling thread's (not checked).
void fence_proxy_async() {
  const size_t bytes = dynamic_shared_bytes();
  if (bytes) std::memcpy(async_view_at(0, bytes), shared_at(0, bytes, "fence.proxy.async"), bytes);
}

void wgmma_fence() {
  ThreadWgmma& w = tl_block.wgmma[thread_linear()];
  w.fenced = true;
  for (Accumulators& a : w.named) {
    a.bits = bits_of(a.d, a.registers);
    a.captured = true;
  }
}

void wgmma_fence_operands(float* d, int registers) { named(tl_block.wgmma[thread_linear()], d, registers); }

void wgmma_mma_async(float* d, int n, uint64_t desc_a, uint64_t desc_b, bool accumulate, bool trans_a, bool trans_b,
                     WgmmaType type) {
  const unsigned t = thread_linear(), wg = t / kWarpgroup;
  ThreadWgmma& w = tl_block.wgmma[t];
  auto fail = [&](const std::string& why) {
    throw std::runtime_error("wgmma.mma_async by " + thread_name() + ": " + why);
  };
  if ((wg + 1) * kWarpgroup > tl_block.threads)
    fail("its warpgroup is partial (the block has " + std::to_string(tl_block.threads) +
         " threads): all 128 threads of a warpgroup execute it");
  if (!w.fenced)
    fail(
        "no wgmma.fence since the thread's last wgmma.wait_group (or start): the accumulator registers' earlier "
        "accesses are not ordered before it");
  if (n < 8 || n > 256 || n % 8) fail("n " + std::to_string(n) + " (8 to 256 in steps of 8)");
  if (type == WgmmaType::tf32 && (trans_a || trans_b)) fail("tf32 operands must be K-major (no transpose)");
  if (((desc_a >> 49) & 7) || ((desc_b >> 49) & 7)) fail("a descriptor's base offset is not 0 (not emulated)");
  // With base offset 0 the PTX ISA has a swizzled operand start on its pattern's repeat
  // (8 rows of 16 w bytes; only the 16-byte chunk bits below the row may step k): the GPU
  // swizzles relative to that repeat, so another start reads other elements there.
  for (const uint64_t desc : {desc_a, desc_b}) {
    const unsigned mode = static_cast<unsigned>(desc >> 62), w = mode == 1 ? 8 : mode == 2 ? 4 : 2;
    const uint32_t start = static_cast<uint32_t>(desc & 0x3FFF) << 4;
    if (mode != 0 && ((start >> 7) & (w - 1)) != 0)
      fail("a descriptor's start (shared address " + std::to_string(start) + ") is not on its swizzle pattern's " +
           std::to_string(128 * w) + "-byte repeat (rows in, with base offset 0)");
  }
  const unsigned flags = accumulate | trans_a << 1 | trans_b << 2 | static_cast<unsigned>(type) << 3;
  std::vector<Issued>& issued = tl_block.warpgroups[wg];
  if (w.issued == issued.size()) {
    issued.push_back({desc_a, desc_b, n, flags});
    g_wgmma_issued.fetch_add(1, std::memory_order_relaxed);
  } else {
    const Issued& first = issued[w.issued];
    if (first.desc_a != desc_a || first.desc_b != desc_b || first.n != n || first.flags != flags)
      fail("it differs from what another thread of warpgroup " + std::to_string(wg) +
           " issued as its wgmma.mma_async number " + std::to_string(w.issued) + " (.aligned)");
  }
  ++w.issued;
  Wgmma op{d, n, desc_a, desc_b, accumulate, trans_a, trans_b, type, false, {}, {}};
  for (const Wgmma& earlier : w.ops)
    if (earlier.d == d) {
      if (earlier.n != n) fail("a different shape accumulates into registers a wgmma in flight writes");
      op.chained = true;
    }
  if (op.chained && !still_poisoned(d, n))
    fail("it accumulates into registers an earlier wgmma in flight writes, and the thread wrote them meanwhile");
  Accumulators& acc = named(w, d, n / 2);
  if (acc.captured && acc.bits != bits_of(d, n / 2))
    fail(
        "its accumulator registers were written after the last wgmma.fence (the fence orders register accesses "
        "before the wgmma)");
  if (!op.chained) op.input.assign(d, d + n / 2);
  op.operands = read_operands(op, true);
  if (!tl_block.ordering) {
    tl_block.ordering = true;
    tl_block.known.assign(tl_block.threads, Knowledge(tl_block.threads, 0));
  }
  for (const auto& span : {operand_span(desc_a, trans_a, 64, type), operand_span(desc_b, trans_b, n, type)}) {
    std::vector<size_t>& readers = tl_block.reads[span];
    readers.resize(tl_block.threads, 0);
    readers[t] = w.issued;  // 1 + this wgmma's issue index
  }
  poison(d, n);  // NaN until the wait
  acc.bits = bits_of(d, n / 2);
  acc.captured = true;
  w.ops.push_back(std::move(op));
}

void wgmma_commit_group() {
  ThreadWgmma& w = tl_block.wgmma[thread_linear()];
  w.group_ends.push_back(w.ops.size());
}

void wgmma_wait_group(int pending) {
  ThreadWgmma& w = tl_block.wgmma[thread_linear()];
  w.fenced = false;
  if (w.ops.size() > (w.group_ends.empty() ? 0 : w.group_ends.back()))
    throw std::runtime_error(thread_name() +
                             " waits with wgmma.mma_async issued but not committed: wgmma.wait_group does not wait "
                             "for them (wgmma.commit_group missing)");
  const size_t groups = w.group_ends.size(), keep = static_cast<size_t>(pending);
  if (groups <= keep) return;
  const size_t done_groups = groups - keep, done = w.group_ends[done_groups - 1];
  // The GPU may read the operands any time from issue to completion: a kernel that changes
  // them in between (a stage refilled early, a TMA landing after the wgmma was issued
  // without waiting for its mbarrier) computes with either contents, so it is refused.
  std::map<float*, std::vector<float>> results;
  for (size_t i = 0; i < done; ++i) {
    const Wgmma& op = w.ops[i];
    if (read_operands(op, false) != op.operands)
      throw std::runtime_error(thread_name() +
                               ": operand shared memory changed while the wgmma was in flight (between its "
                               "wgmma.mma_async and the wgmma.wait_group covering it: an mbarrier wait missing, or "
                               "a stage refilled before the wgmmas reading it completed)");
    results[op.d] = compute(op, op.chained ? results.at(op.d) : op.input);
  }
  for (size_t i = done; i < w.ops.size(); ++i) {
    Wgmma& later = w.ops[i];
    const auto it = results.find(later.d);
    if (later.chained && it != results.end()) {
      later.chained = false;
      later.input = it->second;
      results.erase(it);  // still in flight: the registers stay NaN
    }
  }
  for (auto& [d, values] : results) {
    if (!still_poisoned(d, static_cast<int>(values.size()) * 2))
      throw std::runtime_error(thread_name() +
                               " wrote accumulator registers of a wgmma.mma_async in flight (before the "
                               "wgmma.wait_group covering it)");
    std::memcpy(d, values.data(), sizeof(float) * values.size());
  }
  for (Accumulators& a : w.named) a.captured = false;  // a wgmma.fence must follow (w.fenced)
  w.ops.erase(w.ops.begin(), w.ops.begin() + static_cast<std::ptrdiff_t>(done));
  w.group_ends.erase(w.group_ends.begin(), w.group_ends.begin() + static_cast<std::ptrdiff_t>(done_groups));
  for (size_t& end : w.group_ends) end -= done;
  tl_block.known[thread_linear()][thread_linear()] = w.issued - w.ops.size();
}

}  // namespace customml::simt::async_proxy

namespace customml::simt {
int64_t wgmma_issued() { return async_proxy::g_wgmma_issued.load(std::memory_order_relaxed); }
}  // namespace customml::simt
