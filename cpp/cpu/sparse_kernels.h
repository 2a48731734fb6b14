#pragma once
// Defines: the bodies of the pruning kernels for the ISA this file is compiled for
// (cpu/simd.h): apply_mask_kernel and bias_activation for every level, and with AVX2 or
// AVX-512 sparse_table(), the CSR and N:M products that turn sparsity into speed:
//   - a tile of at least kGatherMaxRows rows is transposed into scratch, so each nonzero
//     is one broadcast times contiguous vectors of batch lanes (CSR, and N:M with its
//     slot index decoded to an input row);
//   - fewer rows (batch-1 inference): CSR gathers x at 16 (8) indices per instruction;
//     N:M vectorizes over 16 (8) outputs and picks each output's input from the group's
//     m inputs with one permute.
// Internal linkage only (see simd.h): each ISA file includes this under its own flags.

#include <cstdint>

#include "activation.h"
#include "backend.h"
#include "cpu/simd.h"
#include "cpu/vmath.h"

namespace customml::cpu {
namespace {

inline int64_t nm_groups(const NmMatrix& w) { return (w.in + w.m - 1) / w.m; }

// param, keep: (n) -> param[i] = 0 where keep[i] == 0; a plain loop the compiler
// vectorizes (a byte compare widened to a blend) at each file's ISA.
void apply_mask_kernel(float* param, const uint8_t* keep, int64_t n) {
  for (int64_t i = 0; i < n; ++i) param[i] = keep[i] ? param[i] : 0.0f;
}

inline Vf activate(Vf z, Activation act) {
  switch (act) {
    case Activation::identity: return z;
    // max returns its second operand for NaN and for +-0: relu(NaN) = 0 and relu(-0) = +0,
    // as the dense epilogue's z > 0 ? z : 0.
    case Activation::relu: return max(z, set1(0.0f));
    case Activation::sigmoid: return vsigmoid(z);
    case Activation::tanh: return vtanh(z);
    case Activation::gelu: return vgelu(z);
  }
  return z;
}

// y (n) = act(y + b) (b may be null), with the dense epilogue's functions.
void bias_activation(float* y, const float* b, int64_t n, Activation act) {
  const int64_t full = n - n % kLanes;
  for (int64_t i = 0; i < full; i += kLanes) store(y + i, activate(b ? load(y + i) + load(b + i) : load(y + i), act));
  if (full < n) {
    const int64_t tail = n - full;
    const Vf z = b ? load_partial(y + full, tail, 0.0f) + load_partial(b + full, tail, 0.0f)
                   : load_partial(y + full, tail, 0.0f);
    store_partial(y + full, tail, activate(z, act));
  }
}

#if defined(__AVX512F__) || defined(__AVX2__)

// Below this many rows a tile skips the transposition (it costs as much as the product
// at batch 1): CSR gathers, N:M permutes.
constexpr int64_t kGatherMaxRows = 3;
constexpr int kTile = 64;  // = kSparseTileRows: the batch lanes of the transposed x
constexpr int kMaxVectors = kTile / kLanes;

#if defined(__AVX512F__)
struct Vi { __m512i v; };
inline Vi load_index(const int32_t* p, int64_t n) {
  return {n >= kLanes ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi32(first_n(n), p)};
}
// base[idx[l]] for the first n lanes, 0 in the others (which read nothing).
inline Vf gather(const float* base, Vi idx, int64_t n) {
  const __mmask16 m = n >= kLanes ? static_cast<__mmask16>(0xFFFF) : first_n(n);
  return {_mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx.v, base, 4)};
}
inline Vi strided_index(int32_t stride) {
  return {_mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                             _mm512_set1_epi32(stride))};
}
inline float hsum(Vf a) { return _mm512_reduce_add_ps(a.v); }
// Lane l: table[idx[l]], idx < kLanes (the n:m slot's row within its group).
inline Vi widen_bytes(const uint8_t* p) { return {_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))}; }
inline Vf permute(Vf table, Vi idx) { return {_mm512_permutexvar_ps(idx.v, table.v)}; }
#else
struct Vi { __m256i v; };
inline Vi load_index(const int32_t* p, int64_t n) {
  return {n >= kLanes ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)) : _mm256_maskload_epi32(p, first_n(n))};
}
inline Vf gather(const float* base, Vi idx, int64_t n) {
  const __m256 m = _mm256_castsi256_ps(n >= kLanes ? _mm256_set1_epi32(-1) : first_n(n));
  return {_mm256_mask_i32gather_ps(_mm256_setzero_ps(), base, idx.v, m, 4)};
}
inline Vi strided_index(int32_t stride) {
  return {_mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(stride))};
}
inline float hsum(Vf a) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}
inline Vi widen_bytes(const uint8_t* p) { return {_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)))}; }
inline Vf permute(Vf table, Vi idx) { return {_mm256_permutevar8x32_ps(table.v, idx.v)}; }
#endif

inline Vf load_n(const float* p, int64_t n) { return n >= kLanes ? load(p) : load_partial(p, n, 0.0f); }
inline void store_n(float* p, int64_t n, Vf a) {
  if (n >= kLanes) store(p, a);
  else store_partial(p, n, a);
}
// The slot indices of n (< kLanes) outputs, read without touching the bytes past them.
inline Vi widen_bytes_n(const uint8_t* p, int64_t n) {
  if (n >= kLanes) return widen_bytes(p);
  uint8_t tmp[kLanes] = {};
  for (int64_t i = 0; i < n; ++i) tmp[i] = p[i];
  return widen_bytes(tmp);
}

// dst (cols, kTile) = src (rows, cols)^T for rows <= kTile, lanes past rows zero: one
// strided gather per vector of lanes (a scalar loop where the stride overflows int32).
void transpose_to_lanes(float* dst, const float* src, int64_t rows, int64_t cols) {
  const int vectors = static_cast<int>((rows + kLanes - 1) / kLanes);
  if (cols * kLanes <= INT32_MAX) {
    const Vi idx = strided_index(static_cast<int32_t>(cols));
    for (int64_t c = 0; c < cols; ++c)
      for (int v = 0; v < vectors; ++v)
        store(dst + c * kTile + v * kLanes, gather(src + v * kLanes * cols + c, idx, rows - v * kLanes));
  } else {
    for (int64_t c = 0; c < cols; ++c)
      for (int64_t r = 0; r < vectors * kLanes; ++r) dst[c * kTile + r] = r < rows ? src[r * cols + c] : 0.0f;
  }
}

// y[r, j0 + c] = src[c, r] (src: (cols, kTile)) for r < rows: the transposition back.
void transpose_from_lanes(float* y, int64_t ldy, const float* src, int64_t rows, int64_t cols) {
  const Vi idx = strided_index(kTile);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; c += kLanes) store_n(y + r * ldy + c, cols - c, gather(src + c * kTile + r, idx, cols - c));
}

// One output's dot products over V vectors of batch lanes: acc[v] += w_k xt[row_k, v],
// in S interleaved streams (S = 2 when V vectors alone cannot hide the FMA latency),
// then act(sum + b) into yt. Next(k) gives the k-th (row, value) of the output.
template <int V, class Entry>
inline void lanes_dot(float* yt, const float* xt, int64_t count, Entry entry, float bias, Activation act) {
  constexpr int S = V * kLanes >= kTile ? 1 : 2;
  Vf acc[S][V];
  for (int s = 0; s < S; ++s)
    for (int v = 0; v < V; ++v) acc[s][v] = set1(0.0f);
  int64_t k = 0;
  for (; k + S <= count; k += S)
    for (int s = 0; s < S; ++s) {
      int64_t row;
      float value;
      entry(k + s, row, value);
      const Vf wv = set1(value);
      const float* xr = xt + row * kTile;
      for (int v = 0; v < V; ++v) acc[s][v] = fmadd(wv, load(xr + v * kLanes), acc[s][v]);
    }
  for (; k < count; ++k) {
    int64_t row;
    float value;
    entry(k, row, value);
    const Vf wv = set1(value);
    const float* xr = xt + row * kTile;
    for (int v = 0; v < V; ++v) acc[0][v] = fmadd(wv, load(xr + v * kLanes), acc[0][v]);
  }
  for (int v = 0; v < V; ++v) {
    Vf sum = acc[0][v];
    for (int s = 1; s < S; ++s) sum = sum + acc[s][v];
    store(yt + v * kLanes, activate(sum + set1(bias), act));
  }
}

// The transposed path: x tile -> xt, each output's lanes_dot -> yt, yt -> y.
template <int V, class Entries>
void lanes_product(float* y, const float* x, int64_t in, int64_t out, const float* b, int64_t rows, int64_t j0,
                   int64_t j1, Activation act, float* scratch, Entries entries) {
  float* xt = scratch;
  float* yt = scratch + in * kTile;
  transpose_to_lanes(xt, x, rows, in);
  for (int64_t j = j0; j < j1; ++j) entries(j, [&](int64_t count, auto entry) {
      lanes_dot<V>(yt + (j - j0) * kTile, xt, count, entry, b ? b[j] : 0.0f, act);
    });
  transpose_from_lanes(y + j0, out, yt, rows, j1 - j0);
}

template <class Entries>
void lanes_dispatch(float* y, const float* x, int64_t in, int64_t out, const float* b, int64_t rows, int64_t j0,
                    int64_t j1, Activation act, float* scratch, Entries entries) {
  const int64_t vectors = (rows + kLanes - 1) / kLanes;
  switch (vectors) {
#define CUSTOMML_LANES_CASE(V) \
  case V: return lanes_product<V>(y, x, in, out, b, rows, j0, j1, act, scratch, entries);
    CUSTOMML_LANES_CASE(1)
    CUSTOMML_LANES_CASE(2)
    CUSTOMML_LANES_CASE(3)
    CUSTOMML_LANES_CASE(4)
#if !defined(__AVX512F__)
    CUSTOMML_LANES_CASE(5)
    CUSTOMML_LANES_CASE(6)
    CUSTOMML_LANES_CASE(7)
    CUSTOMML_LANES_CASE(8)
#endif
#undef CUSTOMML_LANES_CASE
  }
}

// CSR: rows < kGatherMaxRows gather x at each output's indices (two accumulators for
// alternate vectors of nonzeros, then a horizontal sum); larger tiles go through lanes.
void spmm_simd(float* y, const float* x, const CsrMatrix& w, const float* b, int64_t rows, int64_t j0, int64_t j1,
               Activation act, float* scratch) {
  if (rows >= kGatherMaxRows) {
    lanes_dispatch(y, x, w.in, w.out, b, rows, j0, j1, act, scratch, [&](int64_t j, auto&& body) {
      const int32_t* idx = w.index + w.offsets[j];
      const float* val = w.values + w.offsets[j];
      body(static_cast<int64_t>(w.offsets[j + 1] - w.offsets[j]), [idx, val](int64_t k, int64_t& row, float& value) {
        row = idx[k];
        value = val[k];
      });
    });
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * w.in;
    float* yr = y + r * w.out;
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t begin = w.offsets[j], end = w.offsets[j + 1];
      Vf acc0 = set1(0.0f), acc1 = set1(0.0f);
      int64_t k = begin;
      for (; k + 2 * kLanes <= end; k += 2 * kLanes) {
        acc0 = fmadd(load(w.values + k), gather(xr, load_index(w.index + k, kLanes), kLanes), acc0);
        acc1 = fmadd(load(w.values + k + kLanes), gather(xr, load_index(w.index + k + kLanes, kLanes), kLanes), acc1);
      }
      for (; k < end; k += kLanes) {
        const int64_t n = end - k;
        acc0 = fmadd(load_n(w.values + k, n), gather(xr, load_index(w.index + k, n), n), acc0);
      }
      yr[j] = hsum(acc0 + acc1);
    }
    bias_activation(yr + j0, b ? b + j0 : nullptr, j1 - j0, act);
  }
}

// N:M, few rows: R rows x V vectors of outputs per block; each slot's values and indices
// are loaded once for the R rows, and each row picks its inputs from its group's m
// inputs with a permute (m <= kLanes) or a gather.
template <int R, int V, bool Permute>
void nm_rows(float* y, const float* x, const NmMatrix& w, const float* b, int64_t j0, int64_t j1, Activation act) {
  const int64_t groups = nm_groups(w);
  for (int64_t jb = j0; jb < j1; jb += V * kLanes) {
    Vf acc[R][V];
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < V; ++v) acc[r][v] = set1(0.0f);
    int64_t cnt[V];
    for (int v = 0; v < V; ++v) cnt[v] = j1 - jb - v * kLanes;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t first = g * w.m, size = w.in - first < w.m ? w.in - first : w.m;
      Vf table[R];
      if (Permute)
        for (int r = 0; r < R; ++r) table[r] = load_n(x + r * w.in + first, size);
      for (int s = 0; s < w.n; ++s) {
        const int64_t slot = (g * w.n + s) * w.out + jb;
        for (int v = 0; v < V; ++v) {
          if (cnt[v] <= 0) break;
          const Vf value = load_n(w.values + slot + v * kLanes, cnt[v]);
          const Vi idx = widen_bytes_n(w.index + slot + v * kLanes, cnt[v]);
          for (int r = 0; r < R; ++r) {
            const Vf xv = Permute ? permute(table[r], idx) : gather(x + r * w.in + first, idx, cnt[v]);
            acc[r][v] = fmadd(value, xv, acc[r][v]);
          }
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < V; ++v)
        if (cnt[v] > 0) store_n(y + r * w.out + jb + v * kLanes, cnt[v], acc[r][v]);
  }
  for (int r = 0; r < R; ++r) bias_activation(y + r * w.out + j0, b ? b + j0 : nullptr, j1 - j0, act);
}

template <bool Permute>
void nm_all_rows(float* y, const float* x, const NmMatrix& w, const float* b, int64_t rows, int64_t j0, int64_t j1,
                 Activation act) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) nm_rows<4, 2, Permute>(y + r * w.out, x + r * w.in, w, b, j0, j1, act);
  for (; r < rows; ++r) nm_rows<1, 4, Permute>(y + r * w.out, x + r * w.in, w, b, j0, j1, act);
}

void nmmm_simd(float* y, const float* x, const NmMatrix& w, const float* b, int64_t rows, int64_t j0, int64_t j1,
               Activation act, float* scratch) {
  if (w.m <= kLanes) nm_all_rows<true>(y, x, w, b, rows, j0, j1, act);
  else nm_all_rows<false>(y, x, w, b, rows, j0, j1, act);
}

#endif

}  // namespace
}  // namespace customml::cpu
