#pragma once
// Defines: the host SIMT emulator's runtime: dim3/uint3, run_grid() which executes a
// kernel body for every thread of every block, the thread order, and the primitives the
// CUDA spellings of simt/simt.h are built on.
//
// Each block's threads run as cooperative fibers on one OS thread, so __syncthreads()
// is a real barrier: a thread that reaches it stops until every live thread of the
// block has reached it. The order in which runnable threads are resumed is selectable
// (forward, reverse, shuffled), which surfaces missing barriers as wrong results.
// Blocks run one after another; device memory is host memory.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "private_api.h"

namespace customml::simt {

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

constexpr int kWarpSize = 32;
constexpr unsigned kMaxThreadsPerBlock = 1024;

enum class ThreadOrder { forward, reverse, shuffled };
// The order runnable threads of a block are resumed in, for every later launch on any
// OS thread; the seed drives `shuffled`.
CUSTOMML_PRIVATE_API void set_thread_order(ThreadOrder order, uint64_t seed = 0);
ThreadOrder thread_order();
const char* thread_order_name(ThreadOrder order);
CUSTOMML_PRIVATE_API ThreadOrder parse_thread_order(const std::string& name);

// Runs body() once per thread of a grid x block launch, each call as a fiber that sees
// its own threadIdx / blockIdx. dynamic_shared_bytes of per-block memory are available
// through dynamic_shared(). Throws std::invalid_argument on a bad configuration and
// std::runtime_error when the threads of a block deadlock (waiting at different
// barriers).
void run_grid(dim3 grid, dim3 block, size_t dynamic_shared_bytes, const std::function<void()>& body);
// Stream capture, as CUDA graphs record it: while a recording is set on this OS thread,
// run_grid appends each launch (with its arguments, which the body holds by value) to it
// instead of running it; replaying runs the entries in order. Null: launches run.
using Recording = std::vector<std::function<void()>>;
void set_recording(Recording* recording);
Recording* recording();
// Recordings begun (set_recording with a recording) in this process, on any OS thread,
// graphs whose capture failed included; for tests.
CUSTOMML_PRIVATE_API int64_t recordings();
// Kernel launches run_grid has started in this process, on any OS thread: what a launch
// costs on the GPU (a few microseconds each) is counted where no GPU is; for tests.
CUSTOMML_PRIVATE_API int64_t launches();
// wgmma.mma_async instructions warpgroups have issued in this process (one per warpgroup,
// simt/async_proxy.cpp): tests tell by it that gemm() took the sm_90a kernel.
CUSTOMML_PRIVATE_API int64_t wgmma_issued();

// The calling fiber's coordinates and the launch shape.
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
void* dynamic_shared();
size_t dynamic_shared_bytes();

// Barriers. Not inline on purpose: the calling fiber is suspended inside, and the
// compiler must reload anything it cached from memory other threads may have written.
void syncthreads();
// Every lane of `mask` deposits `value`; returns the 32 values deposited (indexed by
// lane) once all of them have arrived. The basis of shuffles, votes and __syncwarp.
const uint64_t* warp_exchange(unsigned mask, uint64_t value);
// After a warp_exchange: throws unless src_lane took part in it. A shuffle that reads a
// lane outside the mask, exited or absent (a partial warp) gets an undefined value on the
// GPU; votes are defined for such lanes (they count as false) and are not checked.
void check_shuffle_source(unsigned src_lane);
// After a warp_exchange: the lanes that took part in it, one bit per lane (absent lanes of
// a partial warp, exited lanes and lanes outside the mask are 0).
unsigned warp_participants();
// elect.sync over `mask`: true in one lane of those taking part. The PTX ISA makes the
// choice deterministic (the same lane for the same mask) but does not say which; here the
// first of them in the block's thread order (the lowest lane under forward, the highest
// under reverse, any under shuffled), so that a kernel assuming lane 0 fails under some order.
bool elect_one(unsigned mask);
unsigned lane_id();
// The calling thread's index in its block (x fastest).
unsigned thread_linear();
// The shared-memory address of p (its offset in the block's dynamic shared memory, whose
// base is 1024-byte aligned), as the GPU's 32-bit shared addresses; throws, naming what,
// unless all `bytes` from p lie in the block's dynamic shared memory. shared_at: back.
uint32_t shared_offset(const void* p, size_t bytes, const char* what);
unsigned char* shared_at(uint32_t offset, size_t bytes, const char* what);
// Suspends the calling thread until ready() holds (evaluated now, then whenever no thread
// can run); a block whose threads all wait on conditions that do not hold is a deadlock.
void block_until(const std::function<bool()>& ready);
// Fills `bytes` at `p` (a static __shared__ variable) with 0xFF unless this block has
// already: the first thread to reach the declaration poisons it, before any can write it.
void poison_shared(void* p, size_t bytes);

// One of the primitive test kernels of simt/selftest.cpp over `input`; for the tests.
CUSTOMML_PRIVATE_API std::vector<double> run_selftest(const std::string& name, const std::vector<double>& input,
                                                      dim3 grid, dim3 block);

}  // namespace customml::simt
