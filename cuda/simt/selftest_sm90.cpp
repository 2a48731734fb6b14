// Test kernels for the emulator's sm_90 primitives (simt/tma.h, simt/wgmma.h), for
// tests/test_simt_sm90.py through _core._simt_selftest (run_selftest hands the names
// starting "sm90_" here).

#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/gemm_wgmma.cuh"
#include "cuda/launch.h"
#include "simt/tma.h"
#include "simt/wgmma.h"

namespace customml::simt {
namespace {

using cuda_emulated::launch;
using ptx::Swizzle;

// wgmma over operands the test lays out in shared memory itself. The modes each make one
// mistake, or chain two wgmmas into the same registers (D = C + 2 A B).
enum WgmmaMode {
  kRight,
  kChain,
  kNoFence,
  kReadEarly,
  kUncommitted,
  kPendingAtExit,
  kWriteAccumulator,
  kDiverge,
  kWriteBetweenChained,  // scales the registers between two chained wgmmas
  kWriteAfterFence,      // writes a register after the fence, before the wgmma
  kOverwriteOperand,     // a generic store into A while the wgmma is in flight
  kNoProxyFence          // the operands' stores not followed by fence.proxy.async
};

struct WgmmaArgs {
  unsigned a_start, a_leading, a_stride, a_swizzle, b_start, b_leading, b_stride, b_swizzle;
  bool accumulate;
  int mode;
};

// out (threads, N / 2): each thread's accumulator registers after the wait; c: their
// values before; image: the shared memory's 32-bit words.
template <class T, int N, bool kTransA, bool kTransB>
__global__ void wgmma_kernel(double* out, const double* c, const uint32_t* image, unsigned words, WgmmaArgs args) {
  auto* s = static_cast<uint32_t*>(dynamic_shared());
  for (unsigned i = threadIdx.x; i < words; i += blockDim.x) s[i] = image[i];
  if (args.mode != kNoProxyFence) ptx::fence_proxy_async();
  __syncthreads();
  const auto* base = reinterpret_cast<const unsigned char*>(s);
  float d[N / 2];
  for (int j = 0; j < N / 2; ++j) d[j] = static_cast<float>(c[threadIdx.x * (N / 2) + j]);
  uint64_t da = ptx::smem_descriptor(base + args.a_start, args.a_leading, args.a_stride, Swizzle(args.a_swizzle));
  const uint64_t db = ptx::smem_descriptor(base + args.b_start, args.b_leading, args.b_stride, Swizzle(args.b_swizzle));
  if (args.mode == kDiverge && threadIdx.x == 40) da += 2;
  ptx::wgmma_fence_operands(d);
  if (args.mode != kNoFence) ptx::wgmma_fence();
  if (args.mode == kWriteAfterFence) d[N / 2 - 1] = 0.5f;
  ptx::wgmma_async<T, N, kTransA, kTransB>(d, da, db, args.accumulate);
  if (args.mode == kWriteBetweenChained)
    for (int j = 0; j < N / 2; ++j) d[j] *= 2.0f;
  if (args.mode == kChain || args.mode == kWriteBetweenChained)
    ptx::wgmma_async<T, N, kTransA, kTransB>(d, da, db, true);
  if (args.mode == kWriteAccumulator) d[0] = 1.0f;
  if (args.mode == kOverwriteOperand) {
    __syncthreads();  // every thread's wgmma issued: thread 0 then stores into A's first row
    if (threadIdx.x == 0)
      for (unsigned i = 0; i < 4; ++i) s[args.a_start / 4 + i] = 0;
  }
  double* o = out + threadIdx.x * (N / 2);
  if (args.mode == kReadEarly)
    for (int j = 0; j < N / 2; ++j) o[j] = d[j];
  if (args.mode != kUncommitted) ptx::wgmma_commit_group();
  if (args.mode == kPendingAtExit) return;
  ptx::wgmma_wait_group<0>();
  if (args.mode != kReadEarly)
    for (int j = 0; j < N / 2; ++j) o[j] = d[j];
}

template <class T, int N>
void run_wgmma(bool trans_a, bool trans_b, dim3 block, size_t shared, double* out, const double* c,
               const uint32_t* image, unsigned words, const WgmmaArgs& args) {
  if constexpr (std::is_same_v<T, nvcuda::wmma::precision::tf32>) {
    if (trans_a || trans_b) throw std::invalid_argument("tf32 operands are K-major");
    launch(wgmma_kernel<T, N, false, false>, dim3(), block, shared, nullptr, out, c, image, words, args);
  } else if (trans_a && trans_b) {
    launch(wgmma_kernel<T, N, true, true>, dim3(), block, shared, nullptr, out, c, image, words, args);
  } else if (trans_a) {
    launch(wgmma_kernel<T, N, true, false>, dim3(), block, shared, nullptr, out, c, image, words, args);
  } else if (trans_b) {
    launch(wgmma_kernel<T, N, false, true>, dim3(), block, shared, nullptr, out, c, image, words, args);
  } else {
    launch(wgmma_kernel<T, N, false, false>, dim3(), block, shared, nullptr, out, c, image, words, args);
  }
}

// A TMA load through an mbarrier, one block: thread 0 initializes the barrier, announces
// the box's bytes and issues the load; every thread waits, then writes its share of the
// box's shared-memory words to out. The modes each make one mistake, or load twice.
enum TmaMode {
  kTmaRight,
  kTmaTwoPhases,
  kTmaReadBeforeWait,
  kTmaWrongParity,
  kTmaNoExpectTx,
  kTmaExpectMore,
  kTmaExpectLess,
  kTmaNoInit,
  kTmaMisaligned
};

__global__ void tma_kernel(double* out, const ptx::TensorMap* map, int column, int row, unsigned box_bytes,
                           unsigned dst_offset, int mode) {
  auto* s = static_cast<unsigned char*>(dynamic_shared());
  auto* bar = reinterpret_cast<uint64_t*>(s);
  unsigned char* box = s + dst_offset;
  if (threadIdx.x == 0 && mode != kTmaNoInit) ptx::mbarrier_init(bar, 1);
  __syncthreads();
  const unsigned expected = mode == kTmaExpectMore   ? box_bytes + 16
                            : mode == kTmaExpectLess ? box_bytes - 16
                                                     : box_bytes;
  if (threadIdx.x == 0) {
    if (mode == kTmaNoExpectTx)
      ptx::mbarrier_arrive(bar);
    else
      ptx::mbarrier_arrive_expect_tx(bar, expected);
    ptx::tma_load_2d(box, map, column, row, bar);
  }
  auto read = [&] {
    for (unsigned i = threadIdx.x; i < box_bytes / 4; i += blockDim.x) {
      uint32_t word;
      std::memcpy(&word, box + 4 * i, 4);
      out[i] = word;
    }
  };
  if (mode == kTmaReadBeforeWait) {
    __syncthreads();  // after the issue
    read();
    __syncthreads();  // before anyone's wait (at which the copy may land)
  }
  if (mode == kTmaWrongParity) {
    ptx::mbarrier_wait(bar, 1);  // the phase "before" the first: complete at once
    read();
    __syncthreads();
  }
  ptx::mbarrier_wait(bar, 0);
  if (mode == kTmaTwoPhases) {
    __syncthreads();  // every thread is done with the first phase's box
    if (threadIdx.x == 0) {
      ptx::mbarrier_arrive_expect_tx(bar, box_bytes);
      ptx::tma_load_2d(box, map, column + 8, row + 1, bar);
    }
    ptx::mbarrier_wait(bar, 1);
  }
  if (mode != kTmaReadBeforeWait && mode != kTmaWrongParity) read();
}

// The path a Hopper GEMM takes: A (64 x k) and B by TMA into 128-byte swizzled stages,
// then wgmma over k in steps of 32 bytes; out (64, n): D = A B in the accumulator layout's
// rows and columns. B is K-major (n x k, as the backward's W^T) or, with kTransB, MN-major
// (k x n, as the forward's W), 16-bit types only. The modes each make one mistake.
enum TmaWgmmaMode {
  kTmaWgmmaRight,
  kTmaWgmmaLateWait,  // the mbarrier wait after the wgmmas are issued, before their wait_group
  kTmaWgmmaRefill,    // the stage reloaded while the wgmmas reading it are in flight
  kTmaWgmmaReload     // right: the stage reloaded after every thread's wait_group and a __syncthreads
};

template <class T, int N, bool kTransB>
__global__ void tma_wgmma_kernel(double* out, const ptx::TensorMap* map_a, const ptx::TensorMap* map_b, int depth,
                                 unsigned a_bytes, unsigned b_bytes, int mode) {
  constexpr unsigned kElement = std::is_same_v<T, nvcuda::wmma::precision::tf32> ? 4 : 2;
  auto* s = static_cast<unsigned char*>(dynamic_shared());
  auto* bar = reinterpret_cast<uint64_t*>(s);
  unsigned char *a = s + 1024, *b = a + a_bytes;
  if (threadIdx.x == 0) ptx::mbarrier_init(bar, 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    ptx::mbarrier_arrive_expect_tx(bar, a_bytes + b_bytes);
    ptx::tma_load_2d(a, map_a, 0, 0, bar);
    ptx::tma_load_2d(b, map_b, 0, 0, bar);
  }
  if (mode != kTmaWgmmaLateWait) ptx::mbarrier_wait(bar, 0);
  float d[N / 2];
  ptx::wgmma_fence();
  for (int k = 0; k < depth; k += 32 / kElement) {
    const uint64_t da = ptx::smem_descriptor(a + k * kElement, 16, 1024, Swizzle::b128);
    const uint64_t db = kTransB ? ptx::smem_descriptor(b + k / 8 * 1024, 8192, 1024, Swizzle::b128)
                                : ptx::smem_descriptor(b + k * kElement, 16, 1024, Swizzle::b128);
    ptx::wgmma_async<T, N, false, kTransB>(d, da, db, k > 0);
  }
  ptx::wgmma_commit_group();
  if (mode == kTmaWgmmaLateWait) ptx::mbarrier_wait(bar, 0);
  if (mode == kTmaWgmmaRefill) {
    __syncthreads();  // every thread's wgmmas issued
    if (threadIdx.x == 0) {
      ptx::mbarrier_arrive_expect_tx(bar, a_bytes);
      ptx::tma_load_2d(a, map_a, 0, 0, bar);
    }
  }
  ptx::wgmma_wait_group<0>();
  if (mode == kTmaWgmmaRefill) ptx::mbarrier_wait(bar, 1);
  if (mode == kTmaWgmmaReload) {
    __syncthreads();  // every thread's wgmmas complete, and thread 0 knows it
    if (threadIdx.x == 0) {
      ptx::mbarrier_arrive_expect_tx(bar, a_bytes);
      ptx::tma_load_2d(a, map_a, 0, 0, bar);
    }
    ptx::mbarrier_wait(bar, 1);
  }
  const unsigned t = threadIdx.x, warp = t / 32, g = (t % 32) / 4, q = t % 4;
  for (int j = 0; j < N / 2; ++j) out[(16 * warp + g + 8 * (j / 2 % 2)) * N + 8 * (j / 4) + 2 * q + j % 2] = d[j];
}

// A warp-specialized ring as gemm_wgmma_kernel's, small: warpgroup 0's elected thread
// loads slice after slice of A (64 x 64, K-major) and B (64 (k) x 64 (n), MN-major) into
// kRingStages stages, each with a full and an empty mbarrier; warpgroup 1 computes D = A B
// over all of k and releases a stage once its wgmmas are complete. out (64, 64): D. The
// modes each make one mistake in the release.
enum RingMode {
  kRingRight,
  kRingEarlyRelease,    // a consumer arrives on the slice's empty barrier before its wait_group
  kRingReleaseCurrent,  // after wait_group 1, the current slice's stage released (its wgmmas in flight)
  kRingEmptyParity      // the producer's empty wait without the flip: its first pass never goes on
};
constexpr int kRingStages = 2;

__global__ void ring_kernel(double* out, const ptx::TensorMap* map_a, const ptx::TensorMap* map_b, int slices,
                            int mode) {
  constexpr unsigned kBox = 64 * 64 * 2;
  auto* s = static_cast<unsigned char*>(dynamic_shared());
  auto* full = reinterpret_cast<uint64_t*>(s);
  uint64_t* empty = full + kRingStages;
  unsigned char* stages = s + 1024;
  const unsigned tid = threadIdx.x;
  if (tid == 0)
    for (int i = 0; i < kRingStages; ++i) {
      ptx::mbarrier_init(&full[i], 1);
      ptx::mbarrier_init(&empty[i], 128);
    }
  __syncthreads();
  if (tid < 128) {
    if (tid < 32 && ptx::elect_one_sync())
      for (int slice = 0; slice < slices; ++slice) {
        const int st = slice % kRingStages;
        ptx::mbarrier_wait(&empty[st], (static_cast<unsigned>(slice / kRingStages) & 1u) ^ (mode != kRingEmptyParity));
        unsigned char* a = stages + st * 2 * kBox;
        ptx::mbarrier_arrive_expect_tx(&full[st], 2 * kBox);
        ptx::tma_load_2d(a, map_a, 64 * slice, 0, &full[st]);
        ptx::tma_load_2d(a + kBox, map_b, 0, 64 * slice, &full[st]);
      }
    return;
  }
  float d[32];
  for (int slice = 0; slice < slices; ++slice) {
    const int st = slice % kRingStages;
    ptx::mbarrier_wait(&full[st], static_cast<unsigned>(slice / kRingStages) & 1u);
    const unsigned char* a = stages + st * 2 * kBox;
    ptx::wgmma_fence_operands(d);
    ptx::wgmma_fence();
    for (int k = 0; k < 64; k += 16) {
      const uint64_t da = ptx::smem_descriptor(a + 2 * k, 16, 1024, Swizzle::b128);
      const uint64_t db = ptx::smem_descriptor(a + kBox + k / 8 * 1024, 8192, 1024, Swizzle::b128);
      ptx::wgmma_async<__nv_bfloat16, 64, false, true>(d, da, db, slice > 0 || k > 0);
    }
    ptx::wgmma_commit_group();
    if (mode == kRingEarlyRelease) ptx::mbarrier_arrive(&empty[st]);
    ptx::wgmma_wait_group<1>();
    ptx::wgmma_fence_operands(d);
    if (mode == kRingReleaseCurrent)
      ptx::mbarrier_arrive(&empty[st]);
    else if (mode != kRingEarlyRelease && slice > 0)
      ptx::mbarrier_arrive(&empty[(slice - 1) % kRingStages]);
  }
  ptx::wgmma_wait_group<0>();
  ptx::wgmma_fence_operands(d);
  const unsigned t = tid % 128, warp = t / 32, g = (t % 32) / 4, q = t % 4;
  for (int j = 0; j < 32; ++j) out[(16 * warp + g + 8 * (j / 2 % 2)) * 64 + 8 * (j / 4) + 2 * q + j % 2] = d[j];
}

// setmaxnreg as gemm_wgmma_kernel uses it (a block of 384 threads: warpgroup 0 gives
// registers up, 1 and 2 take them); the modes each make one mistake. out: 1 a thread past it.
enum RegisterMode { kRegRight, kRegTooMany, kRegOddCount, kRegDiverge, kRegIncBelow, kRegDecAbove };

__global__ void setmaxnreg_kernel(double* out, int mode) {
  const unsigned tid = threadIdx.x;
  if (tid < 128) {
    if (mode == kRegDecAbove)
      ptx::setmaxnreg_dec<176>();
    else
      ptx::setmaxnreg_dec<40>();
  } else if (mode == kRegTooMany) {
    ptx::setmaxnreg_inc<240>();
  } else if (mode == kRegOddCount) {
    ptx::setmaxnreg_inc<236>();
  } else if (mode == kRegDiverge && tid / 32 == 5) {
    ptx::setmaxnreg_inc<224>();
  } else if (mode == kRegIncBelow) {
    ptx::setmaxnreg_inc<160>();
  } else {
    ptx::setmaxnreg_inc<232>();
  }
  out[tid] = 1.0;
}

// elect.sync in each warp; out: 1 in the elected lane, 0 elsewhere.
__global__ void elect_kernel(double* out) { out[threadIdx.x] = ptx::elect_one_sync() ? 1.0 : 0.0; }

std::vector<uint32_t> words_of(const std::vector<double>& in, size_t from) {
  std::vector<uint32_t> w(in.size() - from);
  for (size_t i = from; i < in.size(); ++i) w[i - from] = static_cast<uint32_t>(in[i]);
  return w;
}

}  // namespace

std::vector<double> run_selftest_sm90(const std::string& name, const std::vector<double>& in, dim3 grid, dim3 block) {
  const unsigned threads = block.x * block.y * block.z;
  if (grid.x * grid.y * grid.z != 1) throw std::invalid_argument("selftest '" + name + "': one block");
  std::vector<double> out;
  if (name.rfind("sm90_wgmma_", 0) == 0) {
    // sm90_wgmma_{bf16,f16,tf32}_n{8,64,128}; in: trans_a, trans_b, WgmmaArgs (10), the
    // accumulators (threads x n / 2), the shared memory's words.
    const std::string kind = name.substr(11, name.find("_n", 11) - 11);
    const int n = std::stoi(name.substr(name.find("_n", 11) + 2));
    const size_t head = 12, acc = static_cast<size_t>(threads) * (n / 2);
    if (in.size() < head + acc) throw std::invalid_argument("selftest '" + name + "': too few inputs");
    const WgmmaArgs args{static_cast<unsigned>(in[2]), static_cast<unsigned>(in[3]), static_cast<unsigned>(in[4]),
                         static_cast<unsigned>(in[5]), static_cast<unsigned>(in[6]), static_cast<unsigned>(in[7]),
                         static_cast<unsigned>(in[8]), static_cast<unsigned>(in[9]), in[10] != 0,
                         static_cast<int>(in[11])};
    const std::vector<double> c(in.begin() + head, in.begin() + static_cast<std::ptrdiff_t>(head + acc));
    const std::vector<uint32_t> image = words_of(in, head + acc);
    const size_t shared = 4 * image.size();
    out.assign(acc, -1.0);
    const bool ta = in[0] != 0, tb = in[1] != 0;
    const auto words = static_cast<unsigned>(image.size());
    auto run_n = [&](auto type) {
      using T = decltype(type);
      if (n == 8)
        run_wgmma<T, 8>(ta, tb, block, shared, out.data(), c.data(), image.data(), words, args);
      else if (n == 64)
        run_wgmma<T, 64>(ta, tb, block, shared, out.data(), c.data(), image.data(), words, args);
      else if (n == 128)
        run_wgmma<T, 128>(ta, tb, block, shared, out.data(), c.data(), image.data(), words, args);
      else
        throw std::invalid_argument("selftest '" + name + "': n 8, 64 or 128");
    };
    if (kind == "bf16")
      run_n(__nv_bfloat16{});
    else if (kind == "f16")
      run_n(__half{});
    else if (kind == "tf32")
      run_n(nvcuda::wmma::precision::tf32{});
    else
      throw std::invalid_argument("unknown selftest '" + name + "'");
  } else if (name == "sm90_tma") {
    // in: rows, columns, element bytes, box rows, box columns, swizzle bytes, column, row,
    // destination offset, mode, then the matrix's 32-bit words; out: the box's words.
    if (in.size() < 10) throw std::invalid_argument("selftest 'sm90_tma': too few inputs");
    const std::vector<uint32_t> matrix = words_of(in, 10);
    const auto eb = static_cast<unsigned>(in[2]), box_rows = static_cast<unsigned>(in[3]),
               box_columns = static_cast<unsigned>(in[4]), dst_offset = static_cast<unsigned>(in[8]);
    ptx::TensorMap map;
    ptx::encode_tensor_map_2d(&map, matrix.data(), eb, static_cast<uint64_t>(in[0]), static_cast<uint64_t>(in[1]),
                              static_cast<uint64_t>(in[1]) * eb, box_rows, box_columns, static_cast<unsigned>(in[5]));
    const unsigned box_bytes = box_rows * box_columns * eb;
    out.assign(box_bytes / 4, -1.0);
    launch(tma_kernel, dim3(), block, dst_offset + box_bytes, nullptr, out.data(),
           static_cast<const ptx::TensorMap*>(&map), static_cast<int>(in[6]), static_cast<int>(in[7]), box_bytes,
           dst_offset, static_cast<int>(in[9]));
  } else if (name.rfind("sm90_tma_wgmma_", 0) == 0) {
    // sm90_tma_wgmma_{bf16,tf32}[_mn]; in: depth, n, mode, then A's words (64 x depth),
    // then B's (n x depth, or depth x n for _mn); out: D (64, n).
    const bool mn = name.size() > 3 && name.compare(name.size() - 3, 3, "_mn") == 0;
    const bool tf32 = name.find("tf32") != std::string::npos;
    const unsigned eb = tf32 ? 4 : 2, depth = static_cast<unsigned>(in[0]), n = static_cast<unsigned>(in[1]);
    if (n != 64 || depth * eb != 128 || in.size() != 3 + (64 + n) * depth * eb / 4)
      throw std::invalid_argument("selftest '" + name + "': n 64, 128 bytes of k, and the operands' words");
    const int mode = static_cast<int>(in[2]);
    const std::vector<uint32_t> words = words_of(in, 3);
    const uint32_t* b_words = words.data() + 64 * depth * eb / 4;
    ptx::TensorMap map_a, map_b;
    ptx::encode_tensor_map_2d(&map_a, words.data(), eb, 64, depth, depth * eb, 64, depth, 128);
    if (mn)
      ptx::encode_tensor_map_2d(&map_b, b_words, eb, depth, n, n * eb, depth, n, 128);
    else
      ptx::encode_tensor_map_2d(&map_b, b_words, eb, n, depth, depth * eb, n, depth, 128);
    const unsigned a_bytes = 64 * depth * eb, b_bytes = n * depth * eb;
    out.assign(64 * n, -1.0);
    const auto* pa = static_cast<const ptx::TensorMap*>(&map_a);
    const auto* pb = static_cast<const ptx::TensorMap*>(&map_b);
    const size_t shared = 1024 + a_bytes + b_bytes;
    const int k = static_cast<int>(depth);
    if (tf32 && mn) throw std::invalid_argument("tf32 operands are K-major");
    if (tf32)
      launch(tma_wgmma_kernel<nvcuda::wmma::precision::tf32, 64, false>, dim3(), block, shared, nullptr, out.data(), pa,
             pb, k, a_bytes, b_bytes, mode);
    else if (mn)
      launch(tma_wgmma_kernel<__nv_bfloat16, 64, true>, dim3(), block, shared, nullptr, out.data(), pa, pb, k, a_bytes,
             b_bytes, mode);
    else
      launch(tma_wgmma_kernel<__nv_bfloat16, 64, false>, dim3(), block, shared, nullptr, out.data(), pa, pb, k, a_bytes,
             b_bytes, mode);
  } else if (name == "sm90_gemm") {
    // gemm_wgmma_kernel on 16-bit operands given directly; in: m, n, k, activation, bias?,
    // preact?, format (0 bf16, 1 f16), x (m x k), w (k x n), bias (n); out: C (m x n), then
    // preact (m x n) when asked.
    if (in.size() < 7) throw std::invalid_argument("selftest 'sm90_gemm': too few inputs");
    const auto m = static_cast<int64_t>(in[0]), n = static_cast<int64_t>(in[1]), k = static_cast<int64_t>(in[2]);
    const bool bias = in[4] != 0, preact = in[5] != 0, f16 = in[6] != 0;
    if (in.size() != static_cast<size_t>(7 + m * k + k * n + n))
      throw std::invalid_argument("selftest 'sm90_gemm': x, w and bias");
    std::vector<float> f(in.begin() + 7, in.end());
    std::vector<uint16_t> x16(static_cast<size_t>(m * k)), w16(static_cast<size_t>(k * n));
    auto to16 = [f16](float v) { return f16 ? __float2half(v).bits : __float2bfloat16(v).bits; };
    for (size_t i = 0; i < x16.size(); ++i) x16[i] = to16(f[i]);
    for (size_t i = 0; i < w16.size(); ++i) w16[i] = to16(f[x16.size() + i]);
    const float nan = std::numeric_limits<float>::quiet_NaN();  // every element must be written
    std::vector<float> c(static_cast<size_t>(m * n), nan), z(static_cast<size_t>(m * n), nan);
    cuda_emulated::GemmParams p{m,
                                n,
                                k,
                                f.data(),
                                k,
                                1,
                                f.data() + m * k,
                                n,
                                1,
                                c.data(),
                                n,
                                bias ? f.data() + m * k + k * n : nullptr,
                                static_cast<Activation>(static_cast<int>(in[3])),
                                preact ? z.data() : nullptr};
    p.a16 = x16.data();
    p.b16 = w16.data();
    p.a16_rs = k;  // the copies as packed as the floats
    p.a16_cs = p.b16_cs = 1;
    p.b16_rs = n;
    if (!cuda_emulated::wgmma_operands_fit(p))
      throw std::invalid_argument("selftest 'sm90_gemm': operands the wgmma GEMM does not take");
    if (f16)
      cuda_emulated::launch_wgmma<__half, false>(&p, nullptr);
    else
      cuda_emulated::launch_wgmma<__nv_bfloat16, false>(&p, nullptr);
    out.assign(c.begin(), c.end());
    if (preact) out.insert(out.end(), z.begin(), z.end());
  } else if (name == "sm90_ring") {
    // in: slices, mode, then A's words (64 x 64 slices, k contiguous), then B's (64 slices x
    // 64, n contiguous); out: D (64, 64). Block 256.
    if (in.size() < 2) throw std::invalid_argument("selftest 'sm90_ring': too few inputs");
    const int slices = static_cast<int>(in[0]);
    const std::vector<uint32_t> words = words_of(in, 2);
    if (words.size() != static_cast<size_t>(2 * 64 * 64 * slices / 2))
      throw std::invalid_argument("selftest 'sm90_ring': A's and B's words");
    ptx::TensorMap map_a, map_b;
    const auto k = static_cast<uint64_t>(64 * slices);
    ptx::encode_tensor_map_2d(&map_a, words.data(), 2, 64, k, 2 * k, 64, 64, 128);
    ptx::encode_tensor_map_2d(&map_b, words.data() + 64 * k / 2, 2, k, 64, 128, 64, 64, 128);
    out.assign(64 * 64, -1.0);
    launch(ring_kernel, dim3(), block, 1024 + kRingStages * 2 * 64 * 64 * 2, nullptr, out.data(),
           static_cast<const ptx::TensorMap*>(&map_a), static_cast<const ptx::TensorMap*>(&map_b), slices,
           static_cast<int>(in[1]));
  } else if (name == "sm90_setmaxnreg") {
    // in: mode; out: 1 for each thread that went past its setmaxnreg.
    if (in.size() != 1) throw std::invalid_argument("selftest 'sm90_setmaxnreg': the mode");
    out.assign(threads, 0.0);
    launch(setmaxnreg_kernel, dim3(), block, 0, nullptr, out.data(), static_cast<int>(in[0]));
  } else if (name == "sm90_elect") {
    out.assign(threads, -1.0);
    launch(elect_kernel, dim3(), block, 0, nullptr, out.data());
  } else if (name == "sm90_path") {
    // gemm()'s choice (wgmma_path) for a forward product x (m x k) w (k x n) with 16-bit
    // copies (rows half_ld apart, as dense.cu's forward_params); in: sm90, precision
    // (Precision's value), m, n, k, the copies' offset in elements from an aligned address;
    // out: 1 if the wgmma kernel would take it.
    if (in.size() != 6) throw std::invalid_argument("selftest 'sm90_path': 6 inputs");
    alignas(16) static const uint16_t storage[16] = {};
    const auto m = static_cast<int64_t>(in[2]), n = static_cast<int64_t>(in[3]), k = static_cast<int64_t>(in[4]);
    cuda_emulated::GemmParams p{m,      n, k, nullptr, k, 1, nullptr, n, 1, nullptr, n, nullptr, Activation::identity,
                                nullptr};
    p.a16 = p.b16 = storage + static_cast<int>(in[5]);
    p.a16_rs = half_ld(k);
    p.b16_rs = half_ld(n);
    p.a16_cs = p.b16_cs = 1;
    cuda_emulated::DeviceContext ctx(nullptr);  // the threshold a device starts with
    ctx.sm90 = in[0] != 0;
    out.assign(1, cuda_emulated::wgmma_path(ctx, p, static_cast<Precision>(static_cast<int>(in[1]))));
  } else if (name == "sm90_backward_path") {
    // gemm()'s choice (wgmma_backward) for dense_backward's pair of a layer batch x in ->
    // out (dW with db, dx; dense.cu's backward_params) with 16-bit copies of x, dz and W;
    // in: sm90, precision, batch, in, out; out: 1 if the wgmma kernel would take it.
    if (in.size() != 5) throw std::invalid_argument("selftest 'sm90_backward_path': 5 inputs");
    alignas(16) static const uint16_t storage[16] = {};
    static float db = 0.0f;
    const auto batch = static_cast<int64_t>(in[2]), n_in = static_cast<int64_t>(in[3]),
               n_out = static_cast<int64_t>(in[4]);
    cuda_emulated::GemmParams ps[2] = {{n_in, n_out, batch, nullptr, 1, n_in, nullptr, n_out, 1, nullptr, n_out,
                                        nullptr, Activation::identity, nullptr},
                                       {batch, n_in, n_out, nullptr, n_out, 1, nullptr, 1, n_out, nullptr, n_in,
                                        nullptr, Activation::identity, nullptr}};
    ps[0].db = &db;
    for (cuda_emulated::GemmParams& p : ps) p.a16 = p.b16 = storage;
    // the copies' strides as dense.cu's backward_params: x^T, dz; dz, W^T
    ps[0].a16_rs = ps[0].b16_cs = ps[1].a16_cs = ps[1].b16_rs = 1;
    ps[0].a16_cs = half_ld(n_in);
    ps[0].b16_rs = ps[1].a16_rs = ps[1].b16_cs = half_ld(n_out);
    cuda_emulated::DeviceContext ctx(nullptr);
    ctx.sm90 = in[0] != 0;
    cuda_emulated::GemmParams pair[2];
    out.assign(1, cuda_emulated::wgmma_backward(ctx, ps, 2, static_cast<Precision>(static_cast<int>(in[1])), pair));
  } else {
    throw std::invalid_argument("unknown selftest '" + name + "'");
  }
  return out;
}

}  // namespace customml::simt
