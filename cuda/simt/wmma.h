#pragma once
// Defines: the host emulation of what the kernels use of CUDA's half types (__half,
// __nv_bfloat16 and their float conversions) and of the warp matrix API nvcuda::wmma
// (fragments, fill / load / store / mma_sync, precision::tf32, __float_to_tf32; 8-bit
// integer fragments, signed char or unsigned char, with int accumulators).
//
// Each lane of the emulated warp holds a whole tile in its fragment and computes the
// whole product itself. The element-to-lane mapping of a real fragment is unspecified,
// so kernels may only use fragments opaquely (or elementwise over num_elements, which
// is valid under any mapping); position-dependent work goes through shared memory.

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "simt/simt.h"

// IEEE binary16 with round-to-nearest-even conversion from float (as __float2half).
struct __half {
  uint16_t bits;
};

inline __half __float2half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) return {static_cast<uint16_t>(sign | 0x7C00u | (abs > 0x7F800000u ? 0x200u : 0u))};
  if (abs >= 0x477FF000u) return {static_cast<uint16_t>(sign | 0x7C00u)};  // rounds past 65504: inf
  if (abs < 0x38800000u) {                                                 // below 2^-14: a subnormal half (or zero)
    if (abs < 0x33000000u) return {static_cast<uint16_t>(sign)};           // below half the smallest subnormal
    const uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
    const int shift = 126 - static_cast<int>(abs >> 23);  // 14 + (113 - exponent) bits go
    const uint32_t kept = mant >> shift;
    const uint32_t rest = mant & ((1u << shift) - 1u), half_way = 1u << (shift - 1);
    const uint32_t rounded = kept + (rest > half_way || (rest == half_way && (kept & 1u)));
    return {static_cast<uint16_t>(sign | rounded)};
  }
  const uint32_t exp = (abs >> 23) - 112u;
  uint32_t h = (exp << 10) | ((abs >> 13) & 0x3FFu);
  const uint32_t rest = abs & 0x1FFFu;
  h += rest > 0x1000u || (rest == 0x1000u && (h & 1u));  // a carry into the exponent is correct
  return {static_cast<uint16_t>(sign | h)};
}

inline float __half2float(__half h) {
  const uint32_t sign = static_cast<uint32_t>(h.bits & 0x8000u) << 16;
  const uint32_t exp = (h.bits >> 10) & 0x1Fu, mant = h.bits & 0x3FFu;
  uint32_t x;
  if (exp == 0x1Fu) {
    x = sign | 0x7F800000u | (mant << 13);
  } else if (exp != 0) {
    x = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {
    x = sign;
  } else {  // subnormal: normalize
    int e = -1;
    uint32_t m = mant;
    do {
      ++e;
      m <<= 1;
    } while (!(m & 0x400u));
    x = sign | ((112u - static_cast<uint32_t>(e)) << 23) | ((m & 0x3FFu) << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

// bfloat16: the top half of a float, rounded to nearest even (as __float2bfloat16).
struct __nv_bfloat16 {
  uint16_t bits;
};

inline __nv_bfloat16 __float2bfloat16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return {static_cast<uint16_t>((x >> 16) | 0x40u)};  // quiet NaN
  x += 0x7FFFu + ((x >> 16) & 1u);
  return {static_cast<uint16_t>(x >> 16)};
}

inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t x = static_cast<uint32_t>(b.bits) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision {
struct tf32 {};
}  // namespace precision

// tf32: float with 10 explicit mantissa bits, rounded to nearest, ties away from zero
// (cvt.rna.tf32.f32). A NaN is quieted, so that no NaN whose payload lies only in the low 13
// bits reads as an infinity once the tensor core drops them.
inline float __float_to_tf32(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7F800000u) != 0x7F800000u)
    x = (x + 0x1000u) & 0xFFFFE000u;
  else if (x & 0x007FFFFFu)
    x |= 0x00400000u;
  std::memcpy(&f, &x, 4);
  return f;
}

namespace detail {
template <class T>
struct storage {
  using type = T;
};
template <>
struct storage<precision::tf32> {
  using type = float;
};
inline float to_float(float v) { return v; }
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class Use, int M, int N, int K>
struct shape;
template <int M, int N, int K>
struct shape<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct shape<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct shape<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};
}  // namespace detail

// The whole rows x cols tile, row-major, in every lane.
template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  using element_type = typename detail::storage<T>::type;
  static constexpr int rows = detail::shape<Use, M, N, K>::rows;
  static constexpr int cols = detail::shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  element_type x[num_elements];
};

template <class Use, int M, int N, int K, class T, class Layout, class V>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, V value) {
  for (auto& e : f.x) e = static_cast<typename fragment<Use, M, N, K, T, Layout>::element_type>(value);
}

// wmma's rules for the memory a fragment is loaded from or stored to (CUDA C
// Programming Guide, "Warp Matrix Functions"): a 256-bit aligned pointer, and a leading
// dimension that is a multiple of 16 bytes. The GPU gives no error for either, only
// wrong results or a misaligned-address fault.
namespace detail {
template <class P>
void check_matrix_memory(const P* p, unsigned ldm, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
    throw std::runtime_error(std::string(what) + ": the pointer is not 256-bit aligned");
  if (ldm * sizeof(P) % 16 != 0)
    throw std::runtime_error(std::string(what) + ": ldm " + std::to_string(ldm) + " is not a multiple of " +
                             std::to_string(16 / sizeof(P)) + " elements (16 bytes)");
}
}  // namespace detail

// Warp-collective, as on the device: the lanes' earlier writes are visible to all.
template <class Use, int M, int N, int K, class T, class Layout, class P>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const P* p, unsigned ldm) {
  detail::check_matrix_memory(p, ldm, "wmma::load_matrix_sync");
  __syncwarp();
  using F = fragment<Use, M, N, K, T, Layout>;
  constexpr bool col = std::is_same_v<Layout, col_major>;
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c) f.x[r * F::cols + c] = col ? p[c * ldm + r] : p[r * ldm + c];
}

template <int M, int N, int K, class T>
void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p, unsigned ldm, layout_t layout) {
  detail::check_matrix_memory(p, ldm, "wmma::load_matrix_sync");
  __syncwarp();
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) f.x[r * N + c] = layout == mem_col_major ? p[c * ldm + r] : p[r * ldm + c];
}

template <int M, int N, int K, class T>
void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t layout) {
  detail::check_matrix_memory(p, ldm, "wmma::store_matrix_sync");
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) (layout == mem_col_major ? p[c * ldm + r] : p[r * ldm + c]) = f.x[r * N + c];
  __syncwarp();
}

// d = a b + c. Floating point: products of the input type formed exactly in float and
// summed in float. Integer (8-bit operands, int accumulators): exact products summed in
// int32 with wrap-around on overflow, as the s32 accumulation of the mma instruction
// without .satfinite.
template <int M, int N, int K, class TA, class LA, class TB, class LB, class TC>
void mma_sync(fragment<accumulator, M, N, K, TC>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
              const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, TC>& c) {
  constexpr bool kInteger = std::is_integral_v<TC>;
  static_assert(kInteger == (std::is_integral_v<TA> && std::is_integral_v<TB>),
                "integer fragments take an int accumulator, floating-point ones a float accumulator");
  static_assert(!kInteger || std::is_same_v<TA, TB>, "wmma multiplies s8 by s8 or u8 by u8, never mixed");
  TC out[M * N];
  for (int r = 0; r < M; ++r)
    for (int col = 0; col < N; ++col) {
      if constexpr (kInteger) {
        uint32_t sum = static_cast<uint32_t>(c.x[r * N + col]);
        for (int k = 0; k < K; ++k)
          sum += static_cast<uint32_t>(static_cast<int32_t>(a.x[r * K + k]) * static_cast<int32_t>(b.x[k * N + col]));
        out[r * N + col] = static_cast<TC>(sum);
      } else {
        float sum = c.x[r * N + col];
        for (int k = 0; k < K; ++k) sum += detail::to_float(a.x[r * K + k]) * detail::to_float(b.x[k * N + col]);
        out[r * N + col] = sum;
      }
    }
  std::memcpy(d.x, out, sizeof(out));
}

}  // namespace nvcuda::wmma
