#pragma once
// Defines: Vf / Vd / Mask, the float32 and float64 vectors every elementwise kernel is
// written over, for the ISA this file is compiled for: AVX-512 (16 floats), AVX2 + FMA
// (8 floats) or portable (1 float, plain C++).
//
// Internal linkage only, and no standard-library templates (see gemm_driver.h and
// docs/decisions.md): each ISA file includes this header under its own flags, and an
// out-of-line copy built for AVX-512 must never be what the portable path calls.

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace customml::cpu {
namespace {

#if defined(__AVX512F__) && defined(__AVX512DQ__)

constexpr int kLanes = 16;
constexpr const char* kIsaSuffix = "avx512";
struct Vf {
  __m512 v;
};
struct Vd {
  __m512d v;
};  // kLanes / 2 doubles
struct Mask {
  __mmask16 m;
};

inline Vf set1(float a) { return {_mm512_set1_ps(a)}; }
inline Vf lane_index() { return {_mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)}; }
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
// act::relu: a where !(a <= 0), so NaN stays NaN, else +0 (-0 included).
inline Vf relu(Vf a) { return {_mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a.v, _mm512_setzero_ps(), _CMP_NLE_UQ), a.v)}; }
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
// y 2^n for integral n in [-150, 128], rounded once (subnormal and overflowing
// results included).
inline Vf ldexp(Vf y, Vf n) { return {_mm512_scalef_ps(y.v, n.v)}; }
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

inline void store_lanes(float* p, Vf a) { _mm512_storeu_ps(p, a.v); }
inline void store_lanes(double* p, Vd a) { _mm512_storeu_pd(p, a.v); }

// uint32 lanes, for Philox and the finite check.
struct Vu {
  __m512i v;
};
inline Vu set1_u(uint32_t a) { return {_mm512_set1_epi32(static_cast<int>(a))}; }
inline Vu load_u(const uint32_t* p) { return {_mm512_loadu_si512(p)}; }
inline Vu operator^(Vu a, Vu b) { return {_mm512_xor_si512(a.v, b.v)}; }
inline Vu operator&(Vu a, Vu b) { return {_mm512_and_si512(a.v, b.v)}; }
inline Vu operator|(Vu a, Vu b) { return {_mm512_or_si512(a.v, b.v)}; }
inline Vu operator+(Vu a, Vu b) { return {_mm512_add_epi32(a.v, b.v)}; }
inline Vu bits(Vf a) { return {_mm512_castps_si512(a.v)}; }  // the float's bits, unchanged
inline bool any_top_bit(Vu a) { return _mm512_movepi32_mask(a.v) != 0; }
// The high and low words of a m, per lane: vpmuludq multiplies the even lanes, so the
// odd ones are shifted down for a second multiply and the halves blended back.
inline void mulhilo(Vu a, uint32_t m, Vu& hi, Vu& lo) {
  const __m512i vm = _mm512_set1_epi32(static_cast<int>(m));
  const __m512i even = _mm512_mul_epu32(a.v, vm);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a.v, 32), vm);
  hi.v = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  lo.v = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}
// (bits >> 8) 2^-24: exact, as uniform_from_bits in random.h.
inline Vf uniform(Vu bits) {
  return {_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(bits.v, 8)), _mm512_set1_ps(1.0f / 16777216.0f))};
}
// Lane i of a, b, c, d (Philox words 0..3 of block i) to element 4 i + word: the four
// results hold elements 0-15, 16-31, 32-47, 48-63.
inline void interleave4(Vf& a, Vf& b, Vf& c, Vf& d) {
  const __m512 t0 = _mm512_unpacklo_ps(a.v, b.v), t1 = _mm512_unpackhi_ps(a.v, b.v);
  const __m512 t2 = _mm512_unpacklo_ps(c.v, d.v), t3 = _mm512_unpackhi_ps(c.v, d.v);
  // per 128-bit lane L: s0 = block 4L, s1 = 4L + 1, s2 = 4L + 2, s3 = 4L + 3
  const __m512 s0 = _mm512_shuffle_ps(t0, t2, 0x44), s1 = _mm512_shuffle_ps(t0, t2, 0xEE);
  const __m512 s2 = _mm512_shuffle_ps(t1, t3, 0x44), s3 = _mm512_shuffle_ps(t1, t3, 0xEE);
  // then a 4 x 4 transpose of the 128-bit lanes
  const __m512 u0 = _mm512_shuffle_f32x4(s0, s1, 0x44), u1 = _mm512_shuffle_f32x4(s2, s3, 0x44);
  const __m512 u2 = _mm512_shuffle_f32x4(s0, s1, 0xEE), u3 = _mm512_shuffle_f32x4(s2, s3, 0xEE);
  a.v = _mm512_shuffle_f32x4(u0, u1, 0x88);
  b.v = _mm512_shuffle_f32x4(u0, u1, 0xDD);
  c.v = _mm512_shuffle_f32x4(u2, u3, 0x88);
  d.v = _mm512_shuffle_f32x4(u2, u3, 0xDD);
}

#elif defined(__AVX2__) && defined(__FMA__)

constexpr int kLanes = 8;
constexpr const char* kIsaSuffix = "avx2";
struct Vf {
  __m256 v;
};
struct Vd {
  __m256d v;
};
struct Mask {
  __m256 m;
};

inline Vf set1(float a) { return {_mm256_set1_ps(a)}; }
inline Vf lane_index() { return {_mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7)}; }
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
inline Vf relu(Vf a) { return {_mm256_and_ps(_mm256_cmp_ps(a.v, _mm256_setzero_ps(), _CMP_NLE_UQ), a.v)}; }
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
// 2^n for integral n in [-126, 127].
inline Vf pow2(Vf n) {
  return {
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127)), 23))};
}
// y 2^n for integral n in [-150, 128] as two normal factors: the first product is
// exact, the second rounds once (subnormal results included), and 2^128 y overflows.
inline Vf ldexp(Vf y, Vf n) {
  const Vf n1 = round_nearest(n * set1(0.5f));
  return y * pow2(n1) * pow2(n - n1);
}
inline Vf mantissa(Vf x) {
  const __m256i bits = _mm256_castps_si256(x.v);
  return {_mm256_castsi256_ps(
      _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007FFFFF)), _mm256_set1_epi32(0x3F800000)))};
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

inline void store_lanes(float* p, Vf a) { _mm256_storeu_ps(p, a.v); }
inline void store_lanes(double* p, Vd a) { _mm256_storeu_pd(p, a.v); }

// uint32 lanes, for Philox and the finite check.
struct Vu {
  __m256i v;
};
inline Vu set1_u(uint32_t a) { return {_mm256_set1_epi32(static_cast<int>(a))}; }
inline Vu load_u(const uint32_t* p) { return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))}; }
inline Vu operator^(Vu a, Vu b) { return {_mm256_xor_si256(a.v, b.v)}; }
inline Vu operator&(Vu a, Vu b) { return {_mm256_and_si256(a.v, b.v)}; }
inline Vu operator|(Vu a, Vu b) { return {_mm256_or_si256(a.v, b.v)}; }
inline Vu operator+(Vu a, Vu b) { return {_mm256_add_epi32(a.v, b.v)}; }
inline Vu bits(Vf a) { return {_mm256_castps_si256(a.v)}; }
inline bool any_top_bit(Vu a) { return _mm256_movemask_ps(_mm256_castsi256_ps(a.v)) != 0; }
inline void mulhilo(Vu a, uint32_t m, Vu& hi, Vu& lo) {
  const __m256i vm = _mm256_set1_epi32(static_cast<int>(m));
  const __m256i even = _mm256_mul_epu32(a.v, vm);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a.v, 32), vm);
  hi.v = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  lo.v = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}
inline Vf uniform(Vu bits) {
  return {_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(bits.v, 8)), _mm256_set1_ps(1.0f / 16777216.0f))};
}
// Lane i of a, b, c, d to element 4 i + word: elements 0-7, 8-15, 16-23, 24-31.
inline void interleave4(Vf& a, Vf& b, Vf& c, Vf& d) {
  const __m256 t0 = _mm256_unpacklo_ps(a.v, b.v), t1 = _mm256_unpackhi_ps(a.v, b.v);
  const __m256 t2 = _mm256_unpacklo_ps(c.v, d.v), t3 = _mm256_unpackhi_ps(c.v, d.v);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  a.v = _mm256_permute2f128_ps(s0, s1, 0x20);
  b.v = _mm256_permute2f128_ps(s2, s3, 0x20);
  c.v = _mm256_permute2f128_ps(s0, s1, 0x31);
  d.v = _mm256_permute2f128_ps(s2, s3, 0x31);
}

#else

// Portable: one float per "vector", plain C++; this instantiation is the readable
// specification the SIMD ones are tested against. fmadd is a separate multiply and
// add here (a libm fmaf call would be slow without hardware FMA), so results differ
// from the FMA variants by at most one rounding per fmadd.
constexpr int kLanes = 1;
constexpr const char* kIsaSuffix = "portable";
struct Vf {
  float v;
};
struct Vd {
  double v;
};
struct Mask {
  bool m;
};

inline Vf set1(float a) { return {a}; }
inline Vf lane_index() { return {0.0f}; }
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
inline Vf relu(Vf a) { return {a.v <= 0.0f ? 0.0f : a.v}; }
inline Vf abs(Vf a) { return {std::fabs(a.v)}; }
inline Vf copysign(Vf mag, Vf sgn) { return {std::copysign(mag.v, sgn.v)}; }
// Round to nearest even for |a| < 2^22 by adding and removing 1.5 2^23 (no libm call:
// nearbyintf is one only where SSE4.1 is absent, i.e. in this portable build).
inline Vf round_nearest(Vf a) {
  const float shifter = 12582912.0f;
  return {(a.v + shifter) - shifter};
}
inline Mask operator<(Vf a, Vf b) { return {a.v < b.v}; }
inline Mask operator>(Vf a, Vf b) { return {a.v > b.v}; }
inline Mask operator>=(Vf a, Vf b) { return {a.v >= b.v}; }
inline Mask operator==(Vf a, Vf b) { return {a.v == b.v}; }
inline Mask is_nan(Vf a) { return {a.v != a.v}; }
inline Vf select(Mask m, Vf a, Vf b) { return {m.m ? a.v : b.v}; }
// 2^n for integral n in [-126, 127]; 1 for a NaN n (the exponent of a NaN y in
// ldexp below, which then stays NaN), since converting NaN to an integer is undefined.
inline Vf pow2(Vf n) {
  const int32_t k = n.v == n.v ? static_cast<int32_t>(n.v) : 0;
  const uint32_t bits = static_cast<uint32_t>(k + 127) << 23;
  float r;
  std::memcpy(&r, &bits, sizeof r);
  return {r};
}
// y 2^n for integral n in [-150, 128] as two normal factors: the first product is
// exact, the second rounds once (subnormal results included), and 2^128 y overflows.
inline Vf ldexp(Vf y, Vf n) {
  const Vf n1 = round_nearest(n * set1(0.5f));
  return y * pow2(n1) * pow2(n - n1);
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

inline void store_lanes(float* p, Vf a) { *p = a.v; }
inline void store_lanes(double* p, Vd a) { *p = a.v; }

// uint32 "lanes", for the finite check (the SIMD levels' Vu also serves Philox).
struct Vu {
  uint32_t v;
};
inline Vu set1_u(uint32_t a) { return {a}; }
inline Vu operator&(Vu a, Vu b) { return {a.v & b.v}; }
inline Vu operator|(Vu a, Vu b) { return {a.v | b.v}; }
inline Vu operator+(Vu a, Vu b) { return {a.v + b.v}; }
inline Vu bits(Vf a) { return {bits_of(a.v)}; }
inline bool any_top_bit(Vu a) { return (a.v >> 31) != 0; }

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

inline float min_lanes(Vf a) {
  float lanes[kLanes];
  store_lanes(lanes, a);
  float m = lanes[0];
  for (int i = 1; i < kLanes; ++i) m = lanes[i] < m ? lanes[i] : m;
  return m;
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
