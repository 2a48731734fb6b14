// The sparse products' Tensor-level ops: CSR (raw and packed) and N:M.

#include "ops.h"

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "ops_checks.h"

namespace customml::ops {

using namespace detail;

namespace {

// The elements of an index array as host memory: the array itself on the CPU (the
// sparse ops check every index on every call, so no copy), a copy elsewhere.
template <class T>
class HostView {
 public:
  explicit HostView(const Tensor& t) {
    if (t.device().kind == DeviceKind::cpu) {
      data_ = t.ptr<T>();
    } else {
      copy_ = host_values<T>(t);
      data_ = copy_.data();
    }
  }
  const T* data() const { return data_; }

 private:
  const T* data_ = nullptr;
  std::vector<T> copy_;
};

// The optional bias of the sparse products: (out) f32 on x's device.
void check_sparse_bias(const char* op, const Tensor* b, const Tensor& x, const Tensor& y, int64_t out) {
  if (!b) return;
  check(op, "bias", *b, DType::f32, 1);
  check_shape(op, "bias", *b, {out});
  check_device(op, "bias", *b, x);
  check_no_overlap(op, "out", y, "bias", *b);
}

// The CSR of W^T for `in` inputs: offsets (out + 1) i32, index (nnz) i32, values (nnz)
// f32 on one device, offsets[0] = 0, non-decreasing to nnz, each output's inputs strictly
// ascending inside [0, in): what the kernels trust to stay inside x and values. First the
// arrays' dtypes, sizes and devices, then (check_csr_structure) their contents.
void check_csr_arrays(const char* op, const Tensor& offsets, const Tensor& index, const Tensor& values) {
  check(op, "offsets", offsets, DType::i32, 1);
  check(op, "index", index, DType::i32, 1);
  check(op, "values", values, DType::f32, 1);
  const int64_t out = offsets.dim(0) - 1;
  if (out < 1) fail(op, "offsets has " + std::to_string(out + 1) + " entries; it needs out + 1 >= 2");
  check_same_shape(op, "values", values, "index", index);
  check_device(op, "index", index, offsets);
  check_device(op, "values", values, offsets);
}

// The structure of arrays check_csr_arrays accepted.
void check_csr_structure(const char* op, const Tensor& offsets, const Tensor& index, int64_t in) {
  const int64_t out = offsets.dim(0) - 1, nnz = index.dim(0);
  const HostView<int32_t> off(offsets);
  const int32_t* o = off.data();
  if (o[0] != 0) fail(op, "offsets[0] = " + std::to_string(o[0]) + "; it must be 0");
  for (int64_t j = 0; j < out; ++j)
    if (o[j + 1] < o[j])
      fail(op, "offsets decrease at " + std::to_string(j + 1) + " (" + std::to_string(o[j]) + " then " +
                   std::to_string(o[j + 1]) + "); they must be non-decreasing");
  if (o[out] != nnz)
    fail(op, "offsets[" + std::to_string(out) + "] = " + std::to_string(o[out]) + " but index and values have " +
                 std::to_string(nnz) + " entries");
  const HostView<int32_t> idx_view(index);
  const int32_t* idx = idx_view.data();
  // Every call checks every index, so cheaply: one branch-free pass that vectorizes
  // counts the descents (idx[k] <= idx[k - 1]), which may only sit where a run starts;
  // with each run strictly ascending, its first and last entries bound all the others.
  // A slow pass runs only to name the culprit.
  uint32_t descents = 0;
  for (int64_t k = 1; k < nnz; ++k) descents += idx[k] <= idx[k - 1];
  uint32_t allowed = 0;
  bool inside = true;
  for (int64_t j = 0; j < out; ++j) {
    if (o[j + 1] == o[j]) continue;
    inside &= idx[o[j]] >= 0 && idx[o[j + 1] - 1] < in;
    if (o[j] > 0) allowed += idx[o[j]] <= idx[o[j] - 1];
  }
  const bool ok = inside && descents == allowed;
  if (!ok) {
    for (int64_t j = 0; j < out; ++j)
      for (int64_t k = o[j]; k < o[j + 1]; ++k) {
        if (idx[k] < 0 || idx[k] >= in)
          fail(op, "index[" + std::to_string(k) + "] = " + std::to_string(idx[k]) + " is outside [0, " +
                       std::to_string(in) + ") (x has " + std::to_string(in) + " columns)");
        if (k > o[j] && idx[k] <= idx[k - 1])
          fail(op, "index[" + std::to_string(k) + "] = " + std::to_string(idx[k]) + " follows " +
                       std::to_string(idx[k - 1]) + " in output " + std::to_string(j) +
                       "; each output's inputs must be strictly ascending");
      }
  }
}

CsrMatrix csr_of(const Tensor& offsets, const Tensor& index, const Tensor& values, int64_t in) {
  return {offsets.ptr<int32_t>(), index.ptr<int32_t>(), f32(values), in, offsets.dim(0) - 1, index.dim(0)};
}

// x, y and bias of a sparse product with `in` inputs and `out` outputs.
void check_sparse_io(const char* op, const Tensor& y, const Tensor& x, const Tensor* b, int64_t in, int64_t out) {
  check(op, "x", x, DType::f32, 2);
  check(op, "out", y, DType::f32, 2);
  if (x.dim(1) != in)
    fail(op, "x has " + std::to_string(x.dim(1)) + " columns but the weight has " + std::to_string(in) + " inputs");
  check_shape(op, "out", y, {x.dim(0), out});
  check_device(op, "out", y, x);
  check_no_overlap(op, "out", y, "x", x);
  check_sparse_bias(op, b, x, y, out);
}

}  // namespace

void sparse_dense_forward(const Tensor& y, const Tensor& x, const Tensor& offsets, const Tensor& index,
                          const Tensor& values, const Tensor* b, Activation act) {
  const char* op = "sparse_dense_forward";
  check(op, "x", x, DType::f32, 2);
  const int64_t in = x.dim(1);
  if (in == 0) fail(op, "x has 0 columns; the layer needs at least one input");
  check_csr_arrays(op, offsets, index, values);
  check_sparse_io(op, y, x, b, in, offsets.dim(0) - 1);
  for (const auto& [n, t] : {std::pair{"offsets", &offsets}, {"index", &index}, {"values", &values}}) {
    check_device(op, n, *t, x);
    check_no_overlap(op, "out", y, n, *t);
  }
  // The structure, on every call (sparse_pack checks it once).
  check_csr_structure(op, offsets, index, in);
  backend_for(x.device())
      .sparse_dense_forward(f32(y), f32(x), csr_of(offsets, index, values, in), b ? f32(*b) : nullptr, x.dim(0), act);
}

std::shared_ptr<PackedCsr> sparse_pack(const Tensor& offsets, const Tensor& index, const Tensor& values, int64_t in) {
  const char* op = "sparse_pack";
  if (in < 1) fail(op, "in_features must be >= 1, got " + std::to_string(in));
  if (in > INT32_MAX) fail(op, "in_features must fit int32 (the index dtype), got " + std::to_string(in));
  check_csr_arrays(op, offsets, index, values);
  check_csr_structure(op, offsets, index, in);
  Backend& be = backend_for(offsets.device());
  auto packed = std::make_shared<PackedCsr>(be);
  const HostView<int32_t> host_offsets(offsets), host_index(index);
  const HostView<float> host_values(values);
  packed->fill({host_offsets.data(), host_index.data(), host_values.data(), in, offsets.dim(0) - 1, index.dim(0)});
  return packed;
}

void sparse_dense_forward(const Tensor& y, const Tensor& x, const PackedCsr& w, const Tensor* b, Activation act) {
  const char* op = "sparse_dense_forward";
  if (!(w.device() == x.device()))
    fail(op, "weight is packed for " + w.device().name() + " but x is on " + x.device().name());
  check_sparse_io(op, y, x, b, w.in(), w.out());
  Backend& be = backend_for(x.device());
  if (!(w.packed() && be.sparse_dense_forward_packed(f32(y), f32(x), w.packed(), b ? f32(*b) : nullptr, x.dim(0), act)))
    be.sparse_dense_forward(f32(y), f32(x), w.matrix(), b ? f32(*b) : nullptr, x.dim(0), act);
}

void nm_dense_forward(const Tensor& y, const Tensor& x, const Tensor& values, const Tensor& index, const Tensor* b,
                      Activation act, int n, int m) {
  const char* op = "nm_dense_forward";
  if (!(m >= 1 && m <= 256)) fail(op, "m must be in [1, 256] (a slot's row is a uint8), got " + std::to_string(m));
  if (!(n >= 1 && n <= m)) fail(op, "n must be in [1, m = " + std::to_string(m) + "], got " + std::to_string(n));
  check(op, "x", x, DType::f32, 2);
  check(op, "values", values, DType::f32, 2);
  check(op, "index", index, DType::u8, 2);
  check(op, "out", y, DType::f32, 2);
  const int64_t in = x.dim(1), out = values.dim(1);
  if (in == 0) fail(op, "x has 0 columns; the layer needs at least one input");
  if (out == 0) fail(op, "values has 0 columns; the layer needs at least one output");
  const int64_t groups = (in + m - 1) / m;
  if (values.dim(0) != groups * n)
    fail(op, "values has " + std::to_string(values.dim(0)) +
                 " rows, expected ceil(in / m) n = " + std::to_string(groups * n) + " for in = " + std::to_string(in) +
                 ", " + std::to_string(n) + ":" + std::to_string(m));
  check_same_shape(op, "index", index, "values", values);
  check_shape(op, "out", y, {x.dim(0), out});
  for (const auto& [nm, t] : {std::pair{"values", &values}, {"index", &index}, {"out", &y}})
    check_device(op, nm, *t, x);
  for (const auto& [nm, t] : {std::pair{"x", &x}, {"values", &values}, {"index", &index}})
    check_no_overlap(op, "out", y, nm, *t);
  check_sparse_bias(op, b, x, y, out);

  // Every slot's row must lie in its group (the last group has in - (groups - 1) m rows),
  // or the kernel would read past x: one vectorizable pass, then one to name the culprit.
  const HostView<uint8_t> idx_view(index);
  const uint8_t* idx = idx_view.data();
  const int64_t last_size = in - (groups - 1) * m, full = (groups - 1) * n * out, total = groups * n * out;
  uint8_t full_max = 0, last_max = 0;
  for (int64_t k = 0; k < full; ++k) full_max = idx[k] > full_max ? idx[k] : full_max;
  for (int64_t k = full; k < total; ++k) last_max = idx[k] > last_max ? idx[k] : last_max;
  const bool ok = full_max < m && last_max < last_size;
  if (!ok)
    for (int64_t k = 0; k < total; ++k) {
      const int64_t g = k / (n * out), size = g == groups - 1 ? last_size : m;
      if (idx[k] >= size)
        fail(op, "index[" + std::to_string(k / out) + ", " + std::to_string(k % out) + "] = " + std::to_string(idx[k]) +
                     " is outside its group of " + std::to_string(size) + " rows");
    }
  NmMatrix w;
  w.values = f32(values);
  w.index = index.ptr<uint8_t>();
  w.in = in;
  w.out = out;
  w.n = n;
  w.m = m;
  backend_for(x.device()).nm_dense_forward(f32(y), f32(x), w, b ? f32(*b) : nullptr, x.dim(0), act);
}

}  // namespace customml::ops
