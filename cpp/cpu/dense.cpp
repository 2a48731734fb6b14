// Dense layer forward and backward on the CPU: three GEMMs with strided operands
// (no materialized transposes) and the bias + activation fused into the epilogue.

#include "cpu/cpu_backend.h"
#include "cpu/gemm.h"

#include <cstring>

namespace customml::cpu {

// x: (batch, in)  w: (in, out)  b: (out) -> y: (batch, out), z: (batch, out) optional
namespace {

// y = act(x w + b) with x, w and y row-major and contiguous: what both forward entry points compute.
GemmArgs forward_args(float* y, const float* x, const float* w, const float* b, DenseShape s, Activation act) {
  GemmArgs g;
  g.m = s.batch;
  g.n = s.out;
  g.k = s.in;
  g.a = x;
  g.a_rs = s.in;
  g.a_cs = 1;
  g.b = w;
  g.b_rs = s.out;
  g.b_cs = 1;
  g.c = y;
  g.ldc = s.out;
  g.bias = b;
  g.act = act;
  return g;
}

}  // namespace

void CpuBackend::dense_forward(float* y, float* z, const float* x, const float* w, const float* b, DenseShape s,
                               Activation act) {
  GemmArgs g = forward_args(y, x, w, b, s, act);
  g.preact = z;
  gemm_f32(g);
}

// A 64-byte header (the NR packed for) keeps the floats after it 64-byte aligned.
constexpr size_t kPackedHeader = 64;

size_t CpuBackend::dense_packed_bytes(int64_t in, int64_t out) {
  return kPackedHeader + sizeof(float) * static_cast<size_t>(gemm_f32_packed_floats(in, out));
}

void CpuBackend::dense_pack(void* packed, const float* w, int64_t in, int64_t out) {
  auto* bytes = static_cast<unsigned char*>(packed);
  const int nr = gemm_f32_pack_b(reinterpret_cast<float*>(bytes + kPackedHeader), w, in, out);
  std::memcpy(bytes, &nr, sizeof nr);
}

void CpuBackend::dense_forward_packed(float* y, const float* x, const float* w, const void* packed, const float* b,
                                      DenseShape s, Activation act, bool reverse_columns) {
  const auto* bytes = static_cast<const unsigned char*>(packed);
  GemmArgs g = forward_args(y, x, w, b, s, act);
  std::memcpy(&g.packed_nr, bytes, sizeof g.packed_nr);
  g.packed_b = reinterpret_cast<const float*>(bytes + kPackedHeader);
  g.reverse_columns = reverse_columns;
  gemm_f32(g);
}

// dy, y, z: (batch, out)  x: (batch, in)  w: (in, out) -> dx (batch, in), dw (in, out), db (out)
void CpuBackend::dense_backward(float* dx, float* dw, float* db, float* dz, const float* dy, const float* x,
                                const float* w, const float* y, const float* z, DenseShape s, Activation act) {
  // dz = dy * act'(.) and db = sum over the batch of dz, accumulated in row order
  // (deterministic), in one pass over the rows while each is in L1. Every loop is
  // branch-free so it vectorizes: relu's mask is data (about half the units of a layer
  // are active), and a branch on it mispredicts at random.
  if (dw)  // db and dw are null for a frozen layer
    for (int64_t j = 0; j < s.out; ++j) db[j] = 0.0f;
  for (int64_t r = 0; r < s.batch; ++r) {
    const int64_t o = r * s.out;
    float* dz_row = dz + o;
    const float* dy_row = dy + o;
    if (act == Activation::identity) {
      if (dz != dy)
        for (int64_t j = 0; j < s.out; ++j) dz_row[j] = dy_row[j];
    } else if (act == Activation::relu) {
      // dy read unconditionally: a load under the condition would keep the loop scalar.
      for (int64_t j = 0; j < s.out; ++j) {
        const float g = dy_row[j];
        dz_row[j] = y[o + j] <= 0.0f ? 0.0f : g;  // act::backward's relu
      }
    } else {
      for (int64_t j = 0; j < s.out; ++j) dz_row[j] = act::backward(act, dy_row[j], y[o + j], z ? z[o + j] : 0.0f);
    }
    if (dw)
      for (int64_t j = 0; j < s.out; ++j) db[j] += dz_row[j];
  }
  if (dw) {
    // dw (in, out) = x^T (in, batch) . dz (batch, out)
    GemmArgs gw;
    gw.m = s.in;
    gw.n = s.out;
    gw.k = s.batch;
    gw.a = x;
    gw.a_rs = 1;
    gw.a_cs = s.in;
    gw.b = dz;
    gw.b_rs = s.out;
    gw.b_cs = 1;
    gw.c = dw;
    gw.ldc = s.out;
    gemm_f32(gw);
  }
  if (!dx) return;
  // dx (batch, in) = dz (batch, out) . w^T (out, in)
  GemmArgs gx;
  gx.m = s.batch;
  gx.n = s.in;
  gx.k = s.out;
  gx.a = dz;
  gx.a_rs = s.out;
  gx.a_cs = 1;
  gx.b = w;
  gx.b_rs = 1;
  gx.b_cs = s.out;
  gx.c = dx;
  gx.ldc = s.in;
  gemm_f32(gx);
}

}  // namespace customml::cpu
