// The bf16 Tensor-level op: dense_forward_bf16, a Dense layer with bf16 weights.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ops.h"
#include "ops_checks.h"

namespace customml::ops {

using namespace detail;

void dense_forward_bf16(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor* b, Activation act) {
  const char* op = "dense_forward_bf16";
  check(op, "x", x, DType::f32, 2);
  check(op, "weight", w, DType::bf16, 2);
  if (b) check(op, "bias", *b, DType::f32, 1);
  check(op, "out", y, DType::f32, 2);
  check_x_against_weight(op, x, w);
  if (b) check_shape(op, "bias", *b, {w.dim(1)});
  check_shape(op, "out", y, {x.dim(0), w.dim(1)});
  check_device(op, "weight", w, x);
  check_device(op, "out", y, x);
  if (b) check_device(op, "bias", *b, x);
  check_no_overlap(op, "out", y, "x", x);
  check_no_overlap(op, "out", y, "weight", w);
  if (b) check_no_overlap(op, "out", y, "bias", *b);
  Backend& be = backend_for(x.device());
  const size_t bytes = be.dense_bf16_packed_bytes(w.dim(0), w.dim(1));
  if (bytes == 0)
    fail(op, "bf16 weights are not supported on device '" + be.name() + "' (bf16 Dense layers run on the CPU)");
  // Packed for this call alone: a model packs once, in its inference plan.
  std::vector<uint32_t> packed((bytes + 3) / 4);
  be.dense_bf16_pack(packed.data(), w.ptr<const uint16_t>(), w.dim(0), w.dim(1));
  be.dense_forward_bf16(y.ptr<float>(), x.ptr<const float>(), packed.data(), b ? b->ptr<const float>() : nullptr,
                        {x.dim(0), x.dim(1), w.dim(1)}, act);
}

}  // namespace customml::ops
