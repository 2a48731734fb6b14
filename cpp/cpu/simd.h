#pragma once
// Defines: Vf / Vd / Mask, the float32 and float64 vectors every elementwise kernel is
// written over, for the ISA this file is compiled for: AVX-512 (16 floats), AVX2 + FMA
// (8 floats) or portable (1 float, plain C++).
//
// Internal linkage only, and no standard-library templates (see gemm_driver.h and
// docs/decisions.md): each ISA file includes this header under its own flags, and an
// out-of-line copy built for AVX-512 must never be what the portable path calls.

#include <cstdint>
#include <cmath>
#include <cstring>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace customml::cpu {
namespace {

#if defined(__AVX512F__) && defined(__AVX512DQ__)

constexpr int kLanes = 16;
constexpr const char* kIsaSuffix = "avx512";
struct Vf { __m512 v; };
struct Vd { __m512d v; };  // kLanes / 2 doubles
struct Mask { __mmask16 m; };

inline Vf set1(float a) { return {_mm512_set1_ps(a)}; }
inline Vf load(const float* p) { return {_mm512_loadu_ps(p)}; }
inline void store(float* p, Vf a) { _mm512_storeu_ps(p, a.v); }
inline __mmask16 first_n(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }
// The first n (< kLanes) elements of p, the other lanes `fill`; reads nothing past p + n.
inline Vf load_partial(const float* p, int64_t n, float fill) {
  return {_mm512_mask_loadu_ps(_mm512_set1_ps(fill), first_n(n), p)};
}
inline void store_partial(float* p, int64_t n, Vf a) { _mm512_mask_storeu_ps(p, first_n(n), a.v); }
inline Vf operator+(Vf a, Vf b) { return {_mm512_add_ps(a.v, b.v)}; }
inline Vf operator-(Vf a, Vf b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline Vf operator*(Vf a, Vf b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline Vf operator/(Vf a, Vf b) { return {_mm512_div_ps(a.v, b.v)}; }
inline Vf fmadd(Vf a, Vf b, Vf c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline Vf sqrt(Vf a) { return {_mm512_sqrt_ps(a.v)}; }
// max/min(a, b) return b when either is NaN (as the x86 instructions); callers rely on it.
inline Vf max(Vf a, Vf b) { return {_mm512_max_ps(a.v, b.v)}; }
inline Vf min(Vf a, Vf b) { return {_mm512_min_ps(a.v, b.v)}; }
inline Vf abs(Vf a) { return {_mm512_abs_ps(a.v)}; }
inline Vf copysign(Vf mag, Vf sgn) {
  const __m512 s = _mm512_set1_ps(-0.0f);
  return {_mm512_or_ps(_mm512_andnot_ps(s, mag.v), _mm512_and_ps(s, sgn.v))};
}
inline Vf round_nearest(Vf a) { return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
inline Mask operator<(Vf a, Vf b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ)}; }
inline Mask operator>(Vf a, Vf b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_GT_OQ)}; }
inline Mask operator>=(Vf a, Vf b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_GE_OQ)}; }
inline Mask operator==(Vf a, Vf b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_EQ_OQ)}; }
inline Mask is_nan(Vf a) { return {_mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q)}; }
inline Vf select(Mask m, Vf a, Vf b) { return {_mm512_mask_blend_ps(m.m, b.v, a.v)}; }
// 2^n for integral n in [-126, 127].
inline Vf pow2(Vf n) {
  return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127)), 23))};
}
// For normal positive x: (m, e) with x = m 2^e and m in [1, 2).
inline Vf mantissa(Vf x) { return {_mm512_getmant_ps(x.v, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_zero)}; }
inline Vf exponent(Vf x) { return {_mm512_getexp_ps(x.v)}; }
inline void widen(Vf a, Vd& lo, Vd& hi) {
  lo.v = _mm512_cvtps_pd(_mm512_castps512_ps256(a.v));
  hi.v = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a.v), 1)));
}
inline Vd zero_d() { return {_mm512_setzero_pd()}; }
inline Vd operator+(Vd a, Vd b) { return {_mm512_add_pd(a.v, b.v)}; }
inline Vd fmadd(Vd a, Vd b, Vd c) { return {_mm512_fmadd_pd(a.v, b.v, c.v)}; }
inline Vd operator-(Vd a, Vd b) { return {_mm512_sub_pd(a.v, b.v)}; }
inline Vd operator*(Vd a, Vd b) { return {_mm512_mul_pd(a.v, b.v)}; }
inline Vd max(Vd a, Vd b) { return {_mm512_max_pd(a.v, b.v)}; }
inline Vd set1(double a) { return {_mm512_set1_pd(a)}; }
inline Vf narrow(Vd lo, Vd hi) {
  return {_mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo.v)), _mm512_cvtpd_ps(hi.v), 1)};
}
// Index of the first true lane, or -1.
inline int first_set(Mask m) { return m.m ? __builtin_ctz(m.m) : -1; }
inline void store_lanes(float* p, Vf a) { _mm512_storeu_ps(p, a.v); }
inline void store_lanes(double* p, Vd a) { _mm512_storeu_pd(p, a.v); }

#elif defined(__AVX2__) && defined(__FMA__)

constexpr int kLanes = 8;
constexpr const char* kIsaSuffix = "avx2";
struct Vf { __m256 v; };
struct Vd { __m256d v; };
struct Mask { __m256 m; };

inline Vf set1(float a) { return {_mm256_set1_ps(a)}; }
inline Vf load(const float* p) { return {_mm256_loadu_ps(p)}; }
inline void store(float* p, Vf a) { _mm256_storeu_ps(p, a.v); }
inline __m256i first_n(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
// maskload/maskstore touch no memory in the masked-off lanes.
inline Vf load_partial(const float* p, int64_t n, float fill) {
  const __m256i m = first_n(n);
  return {_mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m))};
}
inline void store_partial(float* p, int64_t n, Vf a) { _mm256_maskstore_ps(p, first_n(n), a.v); }
inline Vf operator+(Vf a, Vf b) { return {_mm256_add_ps(a.v, b.v)}; }
inline Vf operator-(Vf a, Vf b) { return {_mm256_sub_ps(a.v, b.v)}; }
inline Vf operator*(Vf a, Vf b) { return {_mm256_mul_ps(a.v, b.v)}; }
inline Vf operator/(Vf a, Vf b) { return {_mm256_div_ps(a.v, b.v)}; }
inline Vf fmadd(Vf a, Vf b, Vf c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
inline Vf sqrt(Vf a) { return {_mm256_sqrt_ps(a.v)}; }
inline Vf max(Vf a, Vf b) { return {_mm256_max_ps(a.v, b.v)}; }
inline Vf min(Vf a, Vf b) { return {_mm256_min_ps(a.v, b.v)}; }
inline Vf abs(Vf a) { return {_mm256_andnot_ps(_mm256_set1_ps(-0.0f), a.v)}; }
inline Vf copysign(Vf mag, Vf sgn) {
  const __m256 s = _mm256_set1_ps(-0.0f);
  return {_mm256_or_ps(_mm256_andnot_ps(s, mag.v), _mm256_and_ps(s, sgn.v))};
}
inline Vf round_nearest(Vf a) { return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
inline Mask operator<(Vf a, Vf b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ)}; }
inline Mask operator>(Vf a, Vf b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_GT_OQ)}; }
inline Mask operator>=(Vf a, Vf b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_GE_OQ)}; }
inline Mask operator==(Vf a, Vf b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_EQ_OQ)}; }
inline Mask is_nan(Vf a) { return {_mm256_cmp_ps(a.v, a.v, _CMP_UNORD_Q)}; }
inline Vf select(Mask m, Vf a, Vf b) { return {_mm256_blendv_ps(b.v, a.v, m.m)}; }
inline Vf pow2(Vf n) {
  return {_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127)), 23))};
}
inline Vf mantissa(Vf x) {
  const __m256i bits = _mm256_castps_si256(x.v);
  return {_mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007FFFFF)),
                                              _mm256_set1_epi32(0x3F800000)))};
}
inline Vf exponent(Vf x) {
  const __m256i e = _mm256_srli_epi32(_mm256_castps_si256(x.v), 23);
  return {_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(e, _mm256_set1_epi32(0xFF)), _mm256_set1_epi32(127)))};
}
inline void widen(Vf a, Vd& lo, Vd& hi) {
  lo.v = _mm256_cvtps_pd(_mm256_castps256_ps128(a.v));
  hi.v = _mm256_cvtps_pd(_mm256_extractf128_ps(a.v, 1));
}
inline Vd zero_d() { return {_mm256_setzero_pd()}; }
inline Vd operator+(Vd a, Vd b) { return {_mm256_add_pd(a.v, b.v)}; }
inline Vd fmadd(Vd a, Vd b, Vd c) { return {_mm256_fmadd_pd(a.v, b.v, c.v)}; }
inline Vd operator-(Vd a, Vd b) { return {_mm256_sub_pd(a.v, b.v)}; }
inline Vd operator*(Vd a, Vd b) { return {_mm256_mul_pd(a.v, b.v)}; }
inline Vd max(Vd a, Vd b) { return {_mm256_max_pd(a.v, b.v)}; }
inline Vd set1(double a) { return {_mm256_set1_pd(a)}; }
inline Vf narrow(Vd lo, Vd hi) {
  return {_mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(lo.v)), _mm256_cvtpd_ps(hi.v), 1)};
}
inline int first_set(Mask m) {
  const int bits = _mm256_movemask_ps(m.m);
  return bits ? __builtin_ctz(static_cast<unsigned>(bits)) : -1;
}
inline void store_lanes(float* p, Vf a) { _mm256_storeu_ps(p, a.v); }
inline void store_lanes(double* p, Vd a) { _mm256_storeu_pd(p, a.v); }

#else

// Portable: one float per "vector", plain C++; this instantiation is the readable
// specification the SIMD ones are tested against. fmadd is a separate multiply and
// add here (a libm fmaf call would be slow without hardware FMA), so results differ
// from the FMA variants by at most one rounding per fmadd.
constexpr int kLanes = 1;
constexpr const char* kIsaSuffix = "portable";
struct Vf { float v; };
struct Vd { double v; };
struct Mask { bool m; };

inline Vf set1(float a) { return {a}; }
inline Vf load(const float* p) { return {*p}; }
inline void store(float* p, Vf a) { *p = a.v; }
inline Vf load_partial(const float* p, int64_t n, float fill) { return {n > 0 ? *p : fill}; }
inline void store_partial(float* p, int64_t n, Vf a) {
  if (n > 0) *p = a.v;
}
inline Vf operator+(Vf a, Vf b) { return {a.v + b.v}; }
inline Vf operator-(Vf a, Vf b) { return {a.v - b.v}; }
inline Vf operator*(Vf a, Vf b) { return {a.v * b.v}; }
inline Vf operator/(Vf a, Vf b) { return {a.v / b.v}; }
inline Vf fmadd(Vf a, Vf b, Vf c) { return {a.v * b.v + c.v}; }
inline Vf sqrt(Vf a) { return {std::sqrt(a.v)}; }
inline Vf max(Vf a, Vf b) { return {a.v > b.v ? a.v : b.v}; }
inline Vf min(Vf a, Vf b) { return {a.v < b.v ? a.v : b.v}; }
inline Vf abs(Vf a) { return {std::fabs(a.v)}; }
inline Vf copysign(Vf mag, Vf sgn) { return {std::copysign(mag.v, sgn.v)}; }
inline Vf round_nearest(Vf a) { return {std::nearbyint(a.v)}; }
inline Mask operator<(Vf a, Vf b) { return {a.v < b.v}; }
inline Mask operator>(Vf a, Vf b) { return {a.v > b.v}; }
inline Mask operator>=(Vf a, Vf b) { return {a.v >= b.v}; }
inline Mask operator==(Vf a, Vf b) { return {a.v == b.v}; }
inline Mask is_nan(Vf a) { return {a.v != a.v}; }
inline Vf select(Mask m, Vf a, Vf b) { return {m.m ? a.v : b.v}; }
inline Vf pow2(Vf n) {
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n.v) + 127) << 23;
  float r;
  std::memcpy(&r, &bits, sizeof r);
  return {r};
}
inline uint32_t bits_of(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}
inline Vf mantissa(Vf x) {
  const uint32_t b = (bits_of(x.v) & 0x007FFFFFu) | 0x3F800000u;
  float r;
  std::memcpy(&r, &b, sizeof r);
  return {r};
}
inline Vf exponent(Vf x) { return {static_cast<float>(static_cast<int32_t>((bits_of(x.v) >> 23) & 0xFF) - 127)}; }
inline void widen(Vf a, Vd& lo, Vd& hi) {
  lo.v = a.v;
  hi.v = 0.0;
}
inline Vd zero_d() { return {0.0}; }
inline Vd operator+(Vd a, Vd b) { return {a.v + b.v}; }
inline Vd fmadd(Vd a, Vd b, Vd c) { return {a.v * b.v + c.v}; }
inline Vd operator-(Vd a, Vd b) { return {a.v - b.v}; }
inline Vd operator*(Vd a, Vd b) { return {a.v * b.v}; }
inline Vd max(Vd a, Vd b) { return {a.v > b.v ? a.v : b.v}; }
inline Vd set1(double a) { return {a}; }
inline Vf narrow(Vd lo, Vd hi) { return {static_cast<float>(lo.v)}; }
inline int first_set(Mask m) { return m.m ? 0 : -1; }
inline void store_lanes(float* p, Vf a) { *p = a.v; }
inline void store_lanes(double* p, Vd a) { *p = a.v; }

#endif

constexpr int kLanesD = kLanes == 1 ? 1 : kLanes / 2;

// The lanes of a double accumulator summed in lane order: a fixed order, so a
// reduction depends on the ISA level only, never on the data's alignment.
inline double sum_lanes(Vd a) {
  double lanes[kLanesD];
  store_lanes(lanes, a);
  double s = 0.0;
  for (int i = 0; i < kLanesD; ++i) s += lanes[i];
  return s;
}

inline float max_lanes(Vf a) {
  float lanes[kLanes];
  store_lanes(lanes, a);
  float m = lanes[0];
  for (int i = 1; i < kLanes; ++i) m = lanes[i] > m ? lanes[i] : m;
  return m;
}

}  // namespace
}  // namespace customml::cpu
