// Kernels that exercise one emulator primitive each, for tests/test_simt.py (through
// _core._simt_selftest). They go through the same launch() as the real kernels.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda/launch.h"
#include "simt/async_copy.h"
#include "simt/mma.h"
#include "simt/wmma.h"

namespace customml::simt {
namespace {

using cuda_emulated::launch;

// A 16 x 16 matrix, aligned as wmma's loads and stores require.
template <class T>
struct alignas(32) Tile {
  T v[256];
  T& operator[](int i) { return v[i]; }
  T* data() { return v; }
  const T* begin() const { return v; }
  const T* end() const { return v + 256; }
};

__device__ int64_t global_id() {
  const int64_t block =
      blockIdx.x + static_cast<int64_t>(gridDim.x) * (blockIdx.y + static_cast<int64_t>(gridDim.y) * blockIdx.z);
  const int64_t thread =
      threadIdx.x + static_cast<int64_t>(blockDim.x) * (threadIdx.y + static_cast<int64_t>(blockDim.y) * threadIdx.z);
  return block * blockDim.x * blockDim.y * blockDim.z + thread;
}

// out (threads, 6): each thread's threadIdx and blockIdx.
__global__ void indices_kernel(double* out) {
  double* o = out + global_id() * 6;
  o[0] = threadIdx.x;
  o[1] = threadIdx.y;
  o[2] = threadIdx.z;
  o[3] = blockIdx.x;
  o[4] = blockIdx.y;
  o[5] = blockIdx.z;
}

// Reverses each block's slice of in through shared memory (1-D blocks).
template <bool kBarrier>
__global__ void reverse_kernel(double* out, const double* in) {
  double* s = static_cast<double*>(dynamic_shared());
  const unsigned t = threadIdx.x;
  const int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x;
  s[t] = in[base + t];
  if (kBarrier) __syncthreads();
  out[base + t] = s[blockDim.x - 1 - t];
}

// out (threads, 6): the shuffles of in.
__global__ void shuffle_kernel(double* out, const double* in) {
  const int64_t g = global_id();
  const float v = static_cast<float>(in[g]);
  const unsigned lane = threadIdx.x % 32;
  double* o = out + g * 6;
  o[0] = __shfl_sync(0xffffffffu, v, static_cast<int>((lane + 3) % 32));
  o[1] = __shfl_down_sync(0xffffffffu, v, 5);
  o[2] = __shfl_up_sync(0xffffffffu, v, 2);
  o[3] = __shfl_xor_sync(0xffffffffu, v, 9);
  o[4] = __shfl_sync(0xffffffffu, v, 1, 8);
  o[5] = __shfl_down_sync(0xffffffffu, v, 3, 16);
}

// out (threads, 3): ballot, any and all of in > 0 over the full warp.
__global__ void vote_kernel(double* out, const double* in) {
  const int64_t g = global_id();
  const int p = in[g] > 0;
  out[g * 3 + 0] = __ballot_sync(0xffffffffu, p);
  out[g * 3 + 1] = __any_sync(0xffffffffu, p);
  out[g * 3 + 2] = __all_sync(0xffffffffu, p);
}

// out (3): the sum of in, the maximum of round(in), and how many threads won a CAS race.
__global__ void atomics_kernel(double* out, int64_t* scratch, const double* in) {
  const int64_t g = global_id();
  atomicAdd(&out[0], in[g]);
  atomicMax(&scratch[0], static_cast<int64_t>(in[g]));
  if (atomicCAS(&scratch[1], int64_t{0}, g + 1) == 0) atomicAdd(&scratch[2], int64_t{1});
}

// out (threads): __dp4a of the packed bytes in in[3g], in[3g + 1] plus in[3g + 2].
__global__ void dp4a_kernel(double* out, const double* in) {
  const int64_t g = global_id();
  out[g] = __dp4a(static_cast<int>(static_cast<int64_t>(in[3 * g]) & 0xffffffff),
                  static_cast<int>(static_cast<int64_t>(in[3 * g + 1]) & 0xffffffff), static_cast<int>(in[3 * g + 2]));
}

// One warp: d (16, 16) = a (16, 16) row-major . b (16, 16) stored col-major (b[n * 16 + k])
// + c (16, 16), through 8-bit fragments and an int accumulator.
template <class T>
__global__ void wmma_int8_kernel(int* d, const T* a, const T* b, const int* c) {
  namespace wmma = nvcuda::wmma;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, int> acc;
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::load_matrix_sync(acc, c, 16, wmma::mem_row_major);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(d, acc, 16, wmma::mem_row_major);
}

// One warp: d (16, 16) = a (16, 16) . b (16, 16) + c (16, 16), all row-major, through
// floating-point fragments of T (__half, __nv_bfloat16 or precision::tf32: depth 16, 16
// or 8) and a float accumulator, in 16 / depth mma steps along k, as gemm_tc_kernel
// takes them. E: how a fragment of T stores its elements (float for tf32).
template <class T, int kDepth, class E>
__global__ void wmma_float_kernel(float* d, const E* a, const E* b, const float* c) {
  namespace wmma = nvcuda::wmma;
  wmma::fragment<wmma::accumulator, 16, 16, kDepth, float> acc;
  wmma::load_matrix_sync(acc, c, 16, wmma::mem_row_major);
  for (int k = 0; k < 16; k += kDepth) {
    wmma::fragment<wmma::matrix_a, 16, 16, kDepth, T, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, kDepth, T, wmma::row_major> fb;
    wmma::load_matrix_sync(fa, a + k, 16);
    wmma::load_matrix_sync(fb, b + k * 16, 16);
    wmma::mma_sync(acc, fa, fb, acc);
  }
  wmma::store_matrix_sync(d, acc, 16, wmma::mem_row_major);
}

// One warp: shared memory holds 32 rows of 8 16-bit elements, element e = its index
// (0..255); lane l gives row l's address plus `offset` bytes to ldmatrix.x4 (.trans if
// kTrans). out (32, 8): each lane's 4 registers as 8 16-bit halves, low half first.
template <bool kTrans>
__global__ void ldmatrix_kernel(double* out, int offset) {
  __shared__ __align__(16) uint16_t rows[32 * 8 + 8];
  poison_shared(&rows, sizeof(rows));
  const unsigned lane = threadIdx.x % 32;
  for (unsigned e = lane; e < 32 * 8 + 8; e += 32) rows[e] = static_cast<uint16_t>(e);
  __syncwarp();
  uint32_t r[4];
  const void* row = reinterpret_cast<const char*>(rows + lane * 8) + offset;
  if (kTrans)
    ptx::ldmatrix_x4_trans(r, row);
  else
    ptx::ldmatrix_x4(r, row);
  for (int i = 0; i < 4; ++i) {
    out[threadIdx.x * 8 + 2 * i] = r[i] & 0xFFFFu;
    out[threadIdx.x * 8 + 2 * i + 1] = r[i] >> 16;
  }
}

// One warp: d (16, 8) = a (16, K) b (K, 8) + c (16, 8) (row-major floats; K 16, or 8 for
// tf32) through mma_sync<T>, each lane building its fragments from a and b as the PTX ISA
// lays them out and storing its d elements by the accumulator layout (simt/mma.h). The
// operands are converted here (16-bit: __float2bfloat16 / __float2half; tf32: the float
// bits as they are, so the tensor core's truncation shows). swap_a: a[1] and a[2]
// exchanged, a wrong fragment mapping that must give a wrong d.
template <class T>
__global__ void mma_kernel(float* d, const float* a, const float* b, const float* c, bool swap_a) {
  constexpr bool kTf32 = !std::is_same_v<T, __half> && !std::is_same_v<T, __nv_bfloat16>;
  constexpr int kK = kTf32 ? 8 : 16;
  const int lane = static_cast<int>(threadIdx.x), g = lane / 4, t = lane % 4;
  auto bits = [](float v) -> uint32_t {
    if constexpr (std::is_same_v<T, __half>) return __float2half(v).bits;
    if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16(v).bits;
    uint32_t x;
    std::memcpy(&x, &v, 4);
    return x;
  };
  // a 16-bit pair (the lower k in the low half), or one tf32 element
  auto pair = [&](const float* p, int stride) { return kTf32 ? bits(p[0]) : bits(p[0]) | bits(p[stride]) << 16; };
  uint32_t fa[4], fb[2];
  for (int r = 0; r < 4; ++r) {
    const int row = g + 8 * (r % 2), k = kTf32 ? t + 4 * (r / 2) : 2 * t + 8 * (r / 2);
    fa[r] = pair(a + row * kK + k, 1);
  }
  for (int r = 0; r < 2; ++r) {
    const int k = kTf32 ? t + 4 * r : 2 * t + 8 * r;
    fb[r] = pair(b + k * 8 + g, 8);
  }
  if (swap_a) std::swap(fa[1], fa[2]);
  float acc[4];
  for (int e = 0; e < 4; ++e) acc[e] = c[(g + 8 * (e / 2)) * 8 + 2 * t + e % 2];
  ptx::mma_sync<T>(acc, fa, fb, acc);
  for (int e = 0; e < 4; ++e) d[(g + 8 * (e / 2)) * 8 + 2 * t + e % 2] = acc[e];
}

// Lanes below `split` execute ldmatrix while the others execute an mma: refused.
__global__ void matrix_divergence_kernel(double* out, unsigned split) {
  __shared__ __align__(16) uint16_t rows[32 * 8];
  poison_shared(&rows, sizeof(rows));
  uint32_t r[4] = {0, 0, 0, 0};
  const uint32_t b[2] = {0, 0};
  float acc[4] = {0, 0, 0, 0};
  if (threadIdx.x % 32 < split)
    ptx::ldmatrix_x4(r, rows + (threadIdx.x % 32) * 8);
  else
    ptx::mma_sync<__nv_bfloat16>(acc, r, b, acc);
  out[threadIdx.x] = 1.0;
}

// One warp loads a __half fragment from `offset` elements into a 32-byte aligned tile,
// with leading dimension ldm; out[0] = 1 once loaded.
__global__ void wmma_rules_kernel(double* out, const __half* tile, int offset, unsigned ldm) {
  namespace wmma = nvcuda::wmma;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
  wmma::load_matrix_sync(fa, tile + offset, ldm);
  out[0] = 1.0;
}

// out (threads): what each thread reads from a static __shared__ slot before writing it
// (1-D blocks of up to 256 threads); then the slot holds its input, for the next block.
__global__ void static_shared_kernel(double* out, const double* in) {
  __shared__ double slots[256];
  poison_shared(&slots, sizeof(slots));
  out[global_id()] = slots[threadIdx.x];
  slots[threadIdx.x] = in[global_id()];
}

// Each lane writes shared memory, __syncwarp, then reads its neighbour's slot.
__global__ void syncwarp_kernel(double* out, const double* in) {
  double* s = static_cast<double*>(dynamic_shared());
  const unsigned t = threadIdx.x;
  s[t] = in[global_id()];
  __syncwarp();
  const unsigned warp_base = t - t % 32;
  out[global_id()] = s[warp_base + (t % 32 + 1) % 32];
}

// Half of warp 0 waits at __syncthreads while the other half waits at __syncwarp for it.
__global__ void deadlock_kernel(double* out) {
  if (threadIdx.x < 16)
    __syncthreads();
  else
    __syncwarp();
  out[threadIdx.x] = 1.0;
}

// out (blocks + 1): the blocks' linear indices in the order they ran (each block's
// first thread takes a slot through an atomic counter, in out[0]).
__global__ void block_order_kernel(double* out, unsigned* next) {
  if (threadIdx.x + threadIdx.y + threadIdx.z != 0) return;
  const unsigned slot = atomicAdd(next, 1u);
  out[slot] = blockIdx.x + static_cast<double>(gridDim.x) * (blockIdx.y + static_cast<double>(gridDim.y) * blockIdx.z);
}

// cp.async (simt/async_copy.h), one block of up to 256 threads over in (5 per thread): a
// group of a 16-byte copy of in[4t..] (the last thread's reads 8 bytes, the rest
// zero-filled), then a group of a 4-byte copy of in[4n + t]. out (threads, 11): the 16-byte
// destination after wait_group 1 (0-3), the 4-byte one then (4: its group still pending)
// and after wait_group 0 (5), the next thread's two destinations after the barrier (6-10).
// The other modes each make one mistake.
enum AsyncCopyMode {
  kCopyRight,
  kCopyNoBarrier,
  kCopyReadBeforeWait,
  kCopyUncommitted,
  kCopyPendingAtExit,
  kCopyMisalignedSource,
  kCopyMisalignedDestination,
  kCopySourceTooLong
};

__global__ void async_copy_kernel(double* out, const float* in, int mode) {
  __shared__ __align__(16) float wide[256 * 4];
  __shared__ __align__(16) float narrow[256];
  poison_shared(&wide, sizeof(wide));
  poison_shared(&narrow, sizeof(narrow));
  const unsigned t = threadIdx.x, n = blockDim.x, next = (t + 1) % n;
  double* o = out + global_id() * 11;
  cp_async<16>(wide + 4 * t + (mode == kCopyMisalignedDestination), in + 4 * t + (mode == kCopyMisalignedSource),
               t == n - 1 ? 8 : 16);
  cp_async_commit();
  if (mode == kCopyReadBeforeWait)
    for (int i = 0; i < 4; ++i) o[i] = wide[4 * t + i];
  cp_async<4>(narrow + t, in + 4 * n + t, mode == kCopySourceTooLong ? 8 : 4);
  if (mode == kCopyUncommitted) {
    cp_async_wait<0>();
    return;
  }
  cp_async_commit();
  if (mode == kCopyPendingAtExit) return;
  cp_async_wait<1>();
  if (mode != kCopyReadBeforeWait)
    for (int i = 0; i < 4; ++i) o[i] = wide[4 * t + i];
  o[4] = narrow[t];
  cp_async_wait<0>();
  o[5] = narrow[t];
  if (mode != kCopyNoBarrier) __syncthreads();
  for (int i = 0; i < 4; ++i) o[6 + i] = wide[4 * next + i];
  o[10] = narrow[next];
}

}  // namespace

// The sm_90 primitives' test kernels (selftest_sm90.cpp), names starting "sm90_".
std::vector<double> run_selftest_sm90(const std::string& name, const std::vector<double>& in, dim3 grid, dim3 block);

std::vector<double> run_selftest(const std::string& name, const std::vector<double>& in, dim3 grid, dim3 block) {
  const int64_t threads = static_cast<int64_t>(grid.x) * grid.y * grid.z * block.x * block.y * block.z;
  std::vector<double> out;
  const size_t shared = sizeof(double) * block.x * block.y * block.z;
  auto need_input = [&](int64_t per_thread) {
    if (static_cast<int64_t>(in.size()) != threads * per_thread)
      throw std::invalid_argument("selftest '" + name + "' needs " + std::to_string(threads * per_thread) + " inputs");
  };
  if (name == "indices") {
    out.assign(threads * 6, -1.0);
    launch(indices_kernel, grid, block, 0, nullptr, out.data());
  } else if (name == "reverse" || name == "reverse_missing_barrier") {
    need_input(1);
    out.assign(threads, -1.0);
    if (name == "reverse")
      launch(reverse_kernel<true>, grid, block, shared, nullptr, out.data(), in.data());
    else
      launch(reverse_kernel<false>, grid, block, shared, nullptr, out.data(), in.data());
  } else if (name == "shuffle") {
    need_input(1);
    out.assign(threads * 6, -1.0);
    launch(shuffle_kernel, grid, block, 0, nullptr, out.data(), in.data());
  } else if (name == "vote") {
    need_input(1);
    out.assign(threads * 3, -1.0);
    launch(vote_kernel, grid, block, 0, nullptr, out.data(), in.data());
  } else if (name == "block_order") {
    unsigned next = 0;
    out.assign(static_cast<size_t>(grid.x) * grid.y * grid.z, -1.0);
    launch(block_order_kernel, grid, block, 0, nullptr, out.data(), &next);
  } else if (name == "atomics") {
    need_input(1);
    std::vector<int64_t> scratch{INT64_MIN, 0, 0};
    out.assign(1, 0.0);
    launch(atomics_kernel, grid, block, 0, nullptr, out.data(), scratch.data(), in.data());
    out = {out[0], static_cast<double>(scratch[0]), static_cast<double>(scratch[2])};
  } else if (name == "dp4a") {
    need_input(3);
    out.assign(threads, -1.0);
    launch(dp4a_kernel, grid, block, 0, nullptr, out.data(), in.data());
  } else if (name == "wmma_s8" || name == "wmma_u8") {
    // in: a (256) row-major, b (256) col-major, c (256); out: d (256) row-major.
    if (in.size() != 3 * 256 || threads != 32)
      throw std::invalid_argument("selftest '" + name + "' needs one warp and 768 inputs");
    Tile<int> c, d;
    for (int i = 0; i < 256; ++i) {
      c[i] = static_cast<int>(static_cast<int64_t>(in[512 + i]));
      d[i] = -1;
    }
    auto run_typed = [&](auto type) {
      using T = decltype(type);
      Tile<T> a, b;
      for (int i = 0; i < 256; ++i) {
        a[i] = static_cast<T>(in[i]);
        b[i] = static_cast<T>(in[256 + i]);
      }
      launch(wmma_int8_kernel<T>, grid, block, 0, nullptr, d.data(), a.data(), b.data(), c.data());
    };
    if (name == "wmma_s8")
      run_typed(static_cast<signed char>(0));
    else
      run_typed(static_cast<unsigned char>(0));
    out.assign(d.begin(), d.end());
  } else if (name == "wmma_f16" || name == "wmma_bf16" || name == "wmma_tf32") {
    // in: a (256), b (256), c (256) row-major floats; a and b are converted to the
    // fragment type on the host (round to nearest, as the GEMM's staging does); out: d.
    if (in.size() != 3 * 256 || threads != 32)
      throw std::invalid_argument("selftest '" + name + "' needs one warp and 768 inputs");
    Tile<float> c, d;
    for (int i = 0; i < 256; ++i) {
      c[i] = static_cast<float>(in[512 + i]);
      d[i] = -1.0f;
    }
    auto run_typed = [&](auto type, auto depth, auto convert) {
      using T = decltype(type);
      using E = typename nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, decltype(depth)::value, T,
                                                nvcuda::wmma::row_major>::element_type;
      Tile<E> a, b;
      for (int i = 0; i < 256; ++i) {
        a[i] = convert(static_cast<float>(in[i]));
        b[i] = convert(static_cast<float>(in[256 + i]));
      }
      launch(wmma_float_kernel<T, decltype(depth)::value, E>, grid, block, 0, nullptr, d.data(),
             static_cast<const E*>(a.data()), static_cast<const E*>(b.data()), static_cast<const float*>(c.data()));
    };
    if (name == "wmma_f16")
      run_typed(__half{}, std::integral_constant<int, 16>{}, [](float v) { return __float2half(v); });
    else if (name == "wmma_bf16")
      run_typed(__nv_bfloat16{}, std::integral_constant<int, 16>{}, [](float v) { return __float2bfloat16(v); });
    else
      run_typed(nvcuda::wmma::precision::tf32{}, std::integral_constant<int, 8>{},
                [](float v) { return nvcuda::wmma::__float_to_tf32(v); });
    out.assign(d.begin(), d.end());
  } else if (name == "to_f16" || name == "to_bf16" || name == "to_tf32") {
    // in: floats; out: each rounded to the format and back (__float2half / __half2float,
    // __float2bfloat16 / __bfloat162float, __float_to_tf32), on the host.
    out.resize(in.size());
    for (size_t i = 0; i < in.size(); ++i) {
      const float v = static_cast<float>(in[i]);
      out[i] = name == "to_f16"    ? __half2float(__float2half(v))
               : name == "to_bf16" ? __bfloat162float(__float2bfloat16(v))
                                   : nvcuda::wmma::__float_to_tf32(v);
    }
  } else if (name == "ldmatrix" || name == "ldmatrix_trans") {
    // in: the byte offset added to each row address; out (threads, 8).
    if (in.size() != 1) throw std::invalid_argument("selftest '" + name + "' needs 1 input");
    out.assign(static_cast<size_t>(threads) * 8, -1.0);
    if (name == "ldmatrix")
      launch(ldmatrix_kernel<false>, grid, block, 0, nullptr, out.data(), static_cast<int>(in[0]));
    else
      launch(ldmatrix_kernel<true>, grid, block, 0, nullptr, out.data(), static_cast<int>(in[0]));
  } else if (name.rfind("mma_", 0) == 0 && name != "mma_diverge") {
    // mma_{bf16,f16,tf32}[_swapped]; in: a (16, K), b (K, 8), c (16, 8) row-major
    // floats; out: d (16, 8).
    const bool swapped = name.size() > 8 && name.compare(name.size() - 8, 8, "_swapped") == 0;
    const std::string kind = name.substr(4, name.size() - 4 - (swapped ? 8 : 0));
    const size_t depth = kind == "tf32" ? 8 : 16;
    if (in.size() != 16 * depth + depth * 8 + 128)
      throw std::invalid_argument("selftest '" + name + "' needs " + std::to_string(24 * depth + 128) + " inputs");
    const std::vector<float> f(in.begin(), in.end());
    std::vector<float> d(128, -1.0f);
    const float *a = f.data(), *b = a + 16 * depth, *c = b + depth * 8;
    if (kind == "bf16")
      launch(mma_kernel<__nv_bfloat16>, grid, block, 0, nullptr, d.data(), a, b, c, swapped);
    else if (kind == "f16")
      launch(mma_kernel<__half>, grid, block, 0, nullptr, d.data(), a, b, c, swapped);
    else if (kind == "tf32")
      launch(mma_kernel<nvcuda::wmma::precision::tf32>, grid, block, 0, nullptr, d.data(), a, b, c, swapped);
    else
      throw std::invalid_argument("unknown selftest '" + name + "'");
    out.assign(d.begin(), d.end());
  } else if (name == "mma_diverge") {
    // in: the first lane that executes the mma instead of ldmatrix; out: 1 per thread.
    if (in.size() != 1) throw std::invalid_argument("selftest 'mma_diverge' needs 1 input");
    out.assign(threads, 0.0);
    launch(matrix_divergence_kernel, grid, block, 0, nullptr, out.data(), static_cast<unsigned>(in[0]));
  } else if (name == "wmma_rules") {
    // in: the offset (elements) and ldm of a __half fragment's load; out: 1 once loaded.
    if (in.size() != 2 || threads != 32) throw std::invalid_argument("selftest 'wmma_rules' needs one warp, 2 inputs");
    static Tile<__half> tiles[4];
    out.assign(1, 0.0);
    launch(wmma_rules_kernel, grid, block, 0, nullptr, out.data(), static_cast<const __half*>(tiles[0].data()),
           static_cast<int>(in[0]), static_cast<unsigned>(in[1]));
  } else if (name == "static_shared") {
    need_input(1);
    if (block.x * block.y * block.z > 256) throw std::invalid_argument("selftest 'static_shared': 256 threads at most");
    out.assign(threads, -1.0);
    launch(static_shared_kernel, grid, block, 0, nullptr, out.data(), in.data());
  } else if (name == "syncwarp") {
    need_input(1);
    out.assign(threads, -1.0);
    launch(syncwarp_kernel, grid, block, shared, nullptr, out.data(), in.data());
  } else if (name == "deadlock") {
    out.assign(threads, 0.0);
    launch(deadlock_kernel, grid, block, 0, nullptr, out.data());
  } else if (name.rfind("async_copy", 0) == 0) {
    static const char* const modes[] = {"",
                                        "_no_barrier",
                                        "_read_before_wait",
                                        "_uncommitted",
                                        "_pending_at_exit",
                                        "_misaligned_source",
                                        "_misaligned_destination",
                                        "_source_too_long"};
    int mode = -1;
    for (int m = 0; m < 8; ++m)
      if (name == std::string("async_copy") + modes[m]) mode = m;
    if (mode < 0) throw std::invalid_argument("unknown selftest '" + name + "'");
    if (grid.x * grid.y * grid.z != 1 || block.y * block.z != 1 || block.x > 256)
      throw std::invalid_argument("selftest 'async_copy': one 1-D block of up to 256 threads");
    need_input(5);
    std::vector<float> source(in.begin(), in.end());
    out.assign(threads * 11, -1.0);
    launch(async_copy_kernel, grid, block, 0, nullptr, out.data(), static_cast<const float*>(source.data()), mode);
  } else if (name.rfind("sm90_", 0) == 0) {
    return run_selftest_sm90(name, in, grid, block);
  } else {
    throw std::invalid_argument("unknown selftest '" + name + "'");
  }
  return out;
}

}  // namespace customml::simt
