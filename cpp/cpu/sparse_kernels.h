#pragma once
// Defines: the bodies of the sparse products for the ISA this file is compiled for
// (cpu/simd.h): bias_activation for every level, and with AVX2 or AVX-512
// sparse_dense_simd and nm_dense_simd, the CSR and N:M products that turn sparsity into speed:
//   - a tile of kGatherMaxRows rows or more (CSR), more than kNmPermuteMaxRows (N:M), is
//     transposed into scratch, so each stored weight is one broadcast times contiguous
//     vectors of batch lanes (N:M with its slot index decoded to an input row);
//   - fewer rows (batch-1 inference): CSR gathers x at 16 (8) indices per instruction;
//     N:M vectorizes over outputs and picks each output's input from its group's m
//     inputs with one permute. (A model on AVX-512 runs the packed layout of
//     cpu/sparse_packed.h there instead; these paths serve AVX2 and the raw ops.)
// Internal linkage only (see simd.h): each ISA file includes this under its own flags.

#include <cstdint>

#include "activation.h"
#include "backend.h"
#include "cpu/simd.h"
#include "cpu/sparse.h"
#include "cpu/vmath.h"

namespace customml::cpu {
namespace {

inline int64_t nm_groups(const NmMatrix& w) { return (w.in + w.m - 1) / w.m; }

inline Vf activate(Vf z, Activation act) {
  switch (act) {
    case Activation::identity: return z;
    case Activation::relu: return relu(z);
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

// Below this many rows a tile skips the transposition: CSR gathers (the transposition
// costs as much as the product at batch 1, about as much as gathering twice at batch 2).
constexpr int64_t kGatherMaxRows = 3;
// N:M permutes its inputs from registers for up to this many rows: each row reads every
// slot row of the format, which the transposed path reads once per 4 outputs for 64 rows;
// measured on 784 -> 256 (Zen 4) the two cross between 12 and 16 rows.
constexpr int64_t kNmPermuteMaxRows = 15;
constexpr int kTile = static_cast<int>(kSparseTileRows);  // the batch lanes of the transposed x
// The transposed path's scratch: x (in, kTile) and y (outputs, kTile), transposed.
inline int64_t lanes_scratch_floats(int64_t in, int64_t outputs) { return (in + outputs) * kTile; }

#if defined(__AVX512F__)
struct Vi {
  __m512i v;
};
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
// Lane l of the result: the sum of the lanes of a[kReduceSlot[l]] (a 4 x 4 transpose of
// 128-bit lanes, then of floats within them, adding halves at each step).
constexpr int kReduceSlot[kLanes] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};
inline Vf reduce_lanes(const Vf* a) {
  __m512 c[8], d[4], e[2];
  for (int i = 0; i < 8; ++i)
    c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i].v, a[2 * i + 1].v, 0x44),
                         _mm512_shuffle_f32x4(a[2 * i].v, a[2 * i + 1].v, 0xEE));
  for (int i = 0; i < 4; ++i)
    d[i] = _mm512_add_ps(_mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1], 0xDD));
  for (int i = 0; i < 2; ++i)
    e[i] =
        _mm512_add_ps(_mm512_shuffle_ps(d[2 * i], d[2 * i + 1], 0x44), _mm512_shuffle_ps(d[2 * i], d[2 * i + 1], 0xEE));
  return {_mm512_add_ps(_mm512_shuffle_ps(e[0], e[1], 0x88), _mm512_shuffle_ps(e[0], e[1], 0xDD))};
}
// Lane l: table[idx[l]], idx < kLanes (the n:m slot's row within its group).
inline Vi widen_bytes(const uint8_t* p) {
  return {_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))};
}
inline Vf permute(Vf table, Vi idx) { return {_mm512_permutexvar_ps(idx.v, table.v)}; }
#else
struct Vi {
  __m256i v;
};
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
// Lane l of the result: the sum of the lanes of a[kReduceSlot[l]].
constexpr int kReduceSlot[kLanes] = {0, 2, 4, 6, 1, 3, 5, 7};
inline Vf reduce_lanes(const Vf* a) {
  __m256 c[4], d[2];
  for (int i = 0; i < 4; ++i)
    c[i] = _mm256_add_ps(_mm256_permute2f128_ps(a[2 * i].v, a[2 * i + 1].v, 0x20),
                         _mm256_permute2f128_ps(a[2 * i].v, a[2 * i + 1].v, 0x31));
  for (int i = 0; i < 2; ++i)
    d[i] =
        _mm256_add_ps(_mm256_shuffle_ps(c[2 * i], c[2 * i + 1], 0x44), _mm256_shuffle_ps(c[2 * i], c[2 * i + 1], 0xEE));
  return {_mm256_add_ps(_mm256_shuffle_ps(d[0], d[1], 0x88), _mm256_shuffle_ps(d[0], d[1], 0xDD))};
}
inline Vi widen_bytes(const uint8_t* p) {
  return {_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)))};
}
inline Vf permute(Vf table, Vi idx) { return {_mm256_permutevar8x32_ps(table.v, idx.v)}; }
#endif

inline Vf load_n(const float* p, int64_t n) { return n >= kLanes ? load(p) : load_partial(p, n, 0.0f); }
inline void store_n(float* p, int64_t n, Vf a) {
  if (n >= kLanes)
    store(p, a);
  else
    store_partial(p, n, a);
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
    for (int64_t c = 0; c < cols; c += kLanes)
      store_n(y + r * ldy + c, cols - c, gather(src + c * kTile + r, idx, cols - c));
}

// The (input row, value) pairs of one CSR output in summation order.
struct CsrCursor {
  const int32_t* index;
  const float* values;
  void next(int64_t& row, float& value) {
    row = *index++;
    value = *values++;
  }
};
// One output over V vectors of batch lanes: acc[v] += w_k xt[row_k, v] over its count
// pairs, in S interleaved streams (S = 2 when V vectors alone cannot hide the FMA
// latency), then act(sum + b) into yt.
template <int V, class Cursor>
inline void lanes_dot(float* yt, const float* xt, int64_t count, Cursor c, float bias, Activation act) {
  constexpr int S = V * kLanes >= kTile ? 1 : 2;
  Vf acc[S][V];
  for (int s = 0; s < S; ++s)
    for (int v = 0; v < V; ++v) acc[s][v] = set1(0.0f);
  int64_t k = 0;
  for (; k + S <= count; k += S)
    for (int s = 0; s < S; ++s) {
      int64_t row;
      float value;
      c.next(row, value);
      const Vf wv = set1(value);
      const float* xr = xt + row * kTile;
      for (int v = 0; v < V; ++v) acc[s][v] = fmadd(wv, load(xr + v * kLanes), acc[s][v]);
    }
  for (; k < count; ++k) {
    int64_t row;
    float value;
    c.next(row, value);
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
// cursor(j) gives output j's (count, cursor).
template <int V, class Cursors>
void lanes_product(float* y, const float* x, int64_t in, int64_t out, const float* b, int64_t rows, int64_t j0,
                   int64_t j1, Activation act, float* scratch, Cursors cursor) {
  float* xt = scratch;
  float* yt = scratch + in * kTile;
  transpose_to_lanes(xt, x, rows, in);
  for (int64_t j = j0; j < j1; ++j) {
    int64_t count;
    const auto c = cursor(j, count);
    lanes_dot<V>(yt + (j - j0) * kTile, xt, count, c, b ? b[j] : 0.0f, act);
  }
  transpose_from_lanes(y + j0, out, yt, rows, j1 - j0);
}

template <class Cursors>
void lanes_dispatch(float* y, const float* x, int64_t in, int64_t out, const float* b, int64_t rows, int64_t j0,
                    int64_t j1, Activation act, float* scratch, Cursors cursor) {
  const int64_t vectors = (rows + kLanes - 1) / kLanes;
  switch (vectors) {
#define CUSTOMML_LANES_CASE(V) \
  case V: return lanes_product<V>(y, x, in, out, b, rows, j0, j1, act, scratch, cursor);
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

// One output's gathered dot product: two accumulators for alternate vectors of nonzeros.
inline Vf gather_dot(const float* xr, const int32_t* index, const float* values, int64_t count) {
  Vf acc0 = set1(0.0f), acc1 = set1(0.0f);
  int64_t k = 0;
  for (; k + 2 * kLanes <= count; k += 2 * kLanes) {
    acc0 = fmadd(load(values + k), gather(xr, load_index(index + k, kLanes), kLanes), acc0);
    acc1 = fmadd(load(values + k + kLanes), gather(xr, load_index(index + k + kLanes, kLanes), kLanes), acc1);
  }
  for (; k < count; k += kLanes) {
    const int64_t n = count - k;
    acc0 = fmadd(load_n(values + k, n), gather(xr, load_index(index + k, n), n), acc0);
  }
  return acc0 + acc1;
}

// CSR: tiles of kGatherMaxRows rows or more go through lanes; fewer rows gather x at
// each output's indices, kLanes outputs at a time, whose lane sums reduce_lanes turns
// into one vector for the bias and activation.
void sparse_dense_simd(float* y, const float* x, const CsrMatrix& w, const float* b, int64_t rows, int64_t j0,
                       int64_t j1, Activation act, ScratchFn scratch) {
  if (rows >= kGatherMaxRows) {
    float* tile = scratch(lanes_scratch_floats(w.in, j1 - j0));
    lanes_dispatch(y, x, w.in, w.out, b, rows, j0, j1, act, tile, [&](int64_t j, int64_t& count) {
      count = w.offsets[j + 1] - w.offsets[j];
      return CsrCursor{w.index + w.offsets[j], w.values + w.offsets[j]};
    });
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * w.in;
    float* yr = y + r * w.out;
    for (int64_t jb = j0; jb < j1; jb += kLanes) {
      const int64_t cnt = j1 - jb;
      Vf acc[kLanes];
#pragma GCC unroll 16
      for (int t = 0; t < kLanes; ++t) {
        const int64_t j = jb + t;
        acc[kReduceSlot[t]] =
            t < cnt ? gather_dot(xr, w.index + w.offsets[j], w.values + w.offsets[j], w.offsets[j + 1] - w.offsets[j])
                    : set1(0.0f);
      }
      Vf z = reduce_lanes(acc);
      if (b) z = z + load_n(b + jb, cnt);
      store_n(yr + jb, cnt, activate(z, act));
    }
  }
}

// N:M, one row: V vectors of outputs per block; each slot row's values and indices are
// read once, and each output picks its input from its group's m inputs with a permute
// (m <= kLanes) or a gather.
template <int V, bool Permute>
inline void nm_block(Vf* acc, const float* x, const NmMatrix& w, int64_t jb, const int64_t* cnt, bool full) {
  const int64_t groups = nm_groups(w);
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t first = g * w.m, size = w.in - first < w.m ? w.in - first : w.m;
    const Vf table = Permute ? load_n(x + first, size) : set1(0.0f);
    for (int s = 0; s < w.n; ++s) {
      const int64_t slot = (g * w.n + s) * w.out + jb;
      if (full) {
        for (int v = 0; v < V; ++v) {
          const Vi idx = widen_bytes(w.index + slot + v * kLanes);
          const Vf xv = Permute ? permute(table, idx) : gather(x + first, idx, kLanes);
          acc[v] = fmadd(load(w.values + slot + v * kLanes), xv, acc[v]);
        }
      } else {
        for (int v = 0; v < V && cnt[v] > 0; ++v) {
          const Vi idx = widen_bytes_n(w.index + slot + v * kLanes, cnt[v]);
          const Vf xv = Permute ? permute(table, idx) : gather(x + first, idx, cnt[v]);
          acc[v] = fmadd(load_n(w.values + slot + v * kLanes, cnt[v]), xv, acc[v]);
        }
      }
    }
  }
}

template <int V, bool Permute>
void nm_row(float* y, const float* x, const NmMatrix& w, const float* b, int64_t j0, int64_t j1, Activation act) {
  for (int64_t jb = j0; jb < j1; jb += V * kLanes) {
    Vf acc[V];
    int64_t cnt[V];
    for (int v = 0; v < V; ++v) {
      acc[v] = set1(0.0f);
      cnt[v] = j1 - jb - v * kLanes;
    }
    nm_block<V, Permute>(acc, x, w, jb, cnt, cnt[V - 1] >= kLanes);
    for (int v = 0; v < V; ++v)
      if (cnt[v] > 0) store_n(y + jb + v * kLanes, cnt[v], acc[v]);
  }
  bias_activation(y + j0, b ? b + j0 : nullptr, j1 - j0, act);
}

// N:M through lanes: T adjacent outputs at a time, so each slot's values and indices (a
// row of the format) are read once for all of them; their V vectors of batch lanes each
// accumulate the slot sequence in order. T and V are constants so acc stays in registers.
template <int V, int T>
void nm_lanes_block(float* yt, const float* xt, const NmMatrix& w, const float* b, int64_t jb, Activation act) {
  Vf acc[T][V];
  for (int t = 0; t < T; ++t)
    for (int v = 0; v < V; ++v) acc[t][v] = set1(0.0f);
  const float* values = w.values + jb;
  const uint8_t* index = w.index + jb;
  const int64_t groups = nm_groups(w);
  for (int64_t g = 0; g < groups; ++g) {
    const float* xg = xt + g * w.m * kTile;
    for (int s = 0; s < w.n; ++s, values += w.out, index += w.out)
      for (int t = 0; t < T; ++t) {
        const Vf wv = set1(values[t]);
        const float* xr = xg + index[t] * kTile;
        for (int v = 0; v < V; ++v) acc[t][v] = fmadd(wv, load(xr + v * kLanes), acc[t][v]);
      }
  }
  for (int t = 0; t < T; ++t)
    for (int v = 0; v < V; ++v)
      store(yt + t * kTile + v * kLanes, activate(acc[t][v] + set1(b ? b[jb + t] : 0.0f), act));
}

constexpr int kNmOutputs = 4;

template <int V>
void nm_lanes(float* y, const float* x, const NmMatrix& w, const float* b, int64_t rows, int64_t j0, int64_t j1,
              Activation act, float* scratch) {
  float* xt = scratch;
  float* yt = scratch + w.in * kTile;
  transpose_to_lanes(xt, x, rows, w.in);
  int64_t jb = j0;
  for (; jb + kNmOutputs <= j1; jb += kNmOutputs)
    nm_lanes_block<V, kNmOutputs>(yt + (jb - j0) * kTile, xt, w, b, jb, act);
  for (; jb < j1; ++jb) nm_lanes_block<V, 1>(yt + (jb - j0) * kTile, xt, w, b, jb, act);
  transpose_from_lanes(y + j0, w.out, yt, rows, j1 - j0);
}

// N:M: tiles of more than kNmPermuteMaxRows rows go through nm_lanes; fewer rows
// vectorize over outputs.
void nm_dense_simd(float* y, const float* x, const NmMatrix& w, const float* b, int64_t rows, int64_t j0, int64_t j1,
                   Activation act, ScratchFn scratch) {
  if (rows > kNmPermuteMaxRows) {
    float* tile = scratch(lanes_scratch_floats(w.in, j1 - j0));
    // V = 4 vectors of 16 lanes for a whole AVX-512 tile; AVX2 (16 registers) takes a
    // tile as two halves of 4 vectors of 8 lanes, each half with its own transposition.
    const int64_t vectors = (rows + kLanes - 1) / kLanes;
    for (int64_t r0 = 0, h = 0; r0 < rows; r0 += 4 * kLanes, h += 4) {
      const int64_t part = rows - r0 < 4 * kLanes ? rows - r0 : 4 * kLanes;
      float* yr = y + r0 * w.out;
      const float* xr = x + r0 * w.in;
      switch (vectors - h < 4 ? vectors - h : 4) {
        case 1: nm_lanes<1>(yr, xr, w, b, part, j0, j1, act, tile); break;
        case 2: nm_lanes<2>(yr, xr, w, b, part, j0, j1, act, tile); break;
        case 3: nm_lanes<3>(yr, xr, w, b, part, j0, j1, act, tile); break;
        default: nm_lanes<4>(yr, xr, w, b, part, j0, j1, act, tile); break;
      }
    }
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    if (w.m <= kLanes)
      nm_row<8, true>(y + r * w.out, x + r * w.in, w, b, j0, j1, act);
    else
      nm_row<8, false>(y + r * w.out, x + r * w.in, w, b, j0, j1, act);
  }
}

#endif

}  // namespace
}  // namespace customml::cpu
