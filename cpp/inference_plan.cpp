// The inference plan (DESIGN decisions 5 and 10): per Dense layer its weights packed for
// the device's GEMM, a sparse format (CSR or N:M) built from the nonzero weights, or int8
// weights packed for gemm_s8; built from a model once after each weight change and run by
// any number of threads.

#include "inference_plan.h"

#include "cpu/gemm_bf16.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace customml {

InferenceWorkspace::InferenceWorkspace(Backend* be, size_t n_layers)
    : backend(be), input(be), input16(be), q_a(be), q_b(be), q_scale(be), q_zero(be) {
  for (size_t l = 0; l < n_layers; ++l) {
    act.emplace_back(be);
    act16.emplace_back(be);
  }
}

void InferenceWorkspace::clear_graphs() {
  for (auto& [rows, g] : graphs)
    if (g.handle) backend->destroy_graph(g.handle);
  graphs.clear();
}

struct InferencePlan::Layer {
  Layer(Backend* be, int64_t in_, int64_t out_)
      : in(in_),
        out(out_),
        dense_packed(be),
        fold_w(be),
        fold_b(be),
        w_scale(be),
        in_scale(be),
        in_zero(be),
        nm_values(be),
        nm_index(be),
        nm_packed(be),
        bf16_packed(be) {}
  // What a build starts from: the layer's format, nothing prepared yet (the buffers stay).
  void reset(const DenseLayerState& d) {
    format = d.format;
    min_batch = d.min_batch;
    max_batch = d.max_batch;
    nm_n = d.nm_n;
    nm_m = d.nm_m;
    dense_ready = folded = quantized = sparse_ready = nm_packed_ready = bf16_ready = false;
  }
  int64_t in, out;
  SparseFormat format = SparseFormat::dense;
  int64_t min_batch = 1, max_batch = 0, nm_n = 2, nm_m = 4;
  // Float weights in the device's GEMM layout, where it has one.
  Buffer<uint8_t> dense_packed;
  bool dense_ready = false;
  // The first Dense layer with the preprocessing layers before it folded in: (x s + t) W + b
  // = x (diag(s) W) + (t W + b); inference then skips them. Float layers only.
  Buffer<float> fold_w, fold_b;
  bool folded = false;
  // Int8: the codes packed for gemm_s8, their scales and the static input encoding.
  bool quantized = false;
  std::shared_ptr<ops::PackedS8> s8;
  bool per_channel = true, is_static = false;
  float in_scale_value = 0.0f;
  int32_t in_zero_value = 0;
  Buffer<float> w_scale, in_scale;
  Buffer<int32_t> in_zero;
  // Sparse: the format's nonzeros (CSR, with its small-batch layout where the device has
  // one; or N:M, with the same small-batch layout built from its CSR).
  bool sparse_ready = false;
  std::shared_ptr<ops::PackedCsr> csr;
  Buffer<float> nm_values;
  Buffer<uint8_t> nm_index;
  Buffer<uint8_t> nm_packed;
  bool nm_packed_ready = false;
  // bf16: the weights packed for dense_forward_bf16.
  Buffer<uint8_t> bf16_packed;
  bool bf16_ready = false;
  const void* small_batch_packed() const {
    if (format == SparseFormat::csr) return csr->packed();
    return nm_packed_ready ? nm_packed.data() : nullptr;
  }
};

namespace {
template <class T>
void upload(Backend* be, Buffer<T>& dst, const std::vector<T>& src) {
  dst.reserve(std::max<size_t>(src.size(), 1));
  if (!src.empty()) be->copy_to_device(dst.data(), src.data(), sizeof(T) * src.size());
}

// Stands for the input's 16-bit copy in the Backend::dense_half_reads query: aligned as
// every allocation is; only its address is read.
alignas(256) const uint16_t kStandIn[8] = {};
}  // namespace

InferencePlan::InferencePlan(Backend* backend, size_t n_layers)
    : backend_(backend), params_(backend), affine_(backend), half_params_(backend), layers_(n_layers) {}

void InferencePlan::build(const Model& model, Precision precision, uint64_t generation) {
  generation_ = generation;
  precision_ = precision;
  input_dim_ = model.input_dim();
  max_width_ = model.max_width();
  widths_ = model.widths();
  weight_offsets_ = model.weight_offsets();
  bias_offsets_ = model.bias_offsets();
  const std::vector<LayerSpec>& specs = model.layers();
  kinds_.clear();
  activations_.clear();
  affine_offsets_.clear();
  for (size_t l = 0; l < specs.size(); ++l) {
    kinds_.push_back(specs[l].kind);
    activations_.push_back(specs[l].activation);
    affine_offsets_.push_back(model.affine_offset(l));
  }
  // The plan's own copies: a prediction reads one whole weight set while the model changes.
  const size_t n_params = static_cast<size_t>(model.num_params());
  params_.reserve(std::max<size_t>(n_params, 1));
  backend_->copy_on_device(params_.data(), model.params(), sizeof(float) * n_params);
  if (half_operands(precision)) {  // in the model's twin's layout (Model::half_params)
    half_weight_offsets_ = model.half_weight_offsets();
    const size_t n_half = static_cast<size_t>(model.half_size());
    half_params_.reserve(std::max<size_t>(n_half, 1));
    backend_->fill_zero(half_params_.data(), sizeof(uint16_t) * n_half);  // the pads
    round_half_twin(*backend_, half_params_.data(), params_.data(), 0, static_cast<int64_t>(n_params),
                    model.half_rows(), precision);
  } else {
    half_params_.release();
  }
  const size_t n_affine = static_cast<size_t>(model.affine_floats());
  affine_.reserve(std::max<size_t>(n_affine, 1));
  backend_->copy_on_device(affine_.data(), model.affine(), sizeof(float) * n_affine);

  // The first layer, dropouts aside, a Dense one that dense_forward runs (no int8, bf16 or
  // sparse format) reading the input's 16-bit copy.
  half_input_ = false;
  size_t f = 0;
  while (f < specs.size() && specs[f].kind == LayerSpec::Kind::dropout) ++f;
  if (half_operands(precision) && f < specs.size() && specs[f].kind == LayerSpec::Kind::dense) {
    const DenseLayerState* d = model.dense_state(f);
    if (!d || (!d->quant && !d->bf16 && d->format == SparseFormat::dense))
      half_input_ = backend_
                        ->dense_half_reads({1, input_dim_, widths_[f], precision, {half_kernel(f), kStandIn}}, false,
                                           false, false)
                        .x;
  }
  const bool packs_dense = backend_->dense_packed_bytes(1, 1) > 0;
  prepared_ = packs_dense && precision == Precision::fp32;
  quantized_ = false;
  for (size_t l = 0; l < specs.size(); ++l) {
    const DenseLayerState* d = model.dense_state(l);
    if (d && (d->quant || d->bf16 || d->format != SparseFormat::dense)) prepared_ = true;
    quantized_ = quantized_ || (d && d->quant);
  }
  if (!prepared_) return;
  bool first = true;
  for (size_t l = 0; l < specs.size(); ++l) {
    const DenseLayerState* d = model.dense_state(l);
    if (!d) continue;
    if (!layers_[l]) layers_[l] = std::make_unique<Layer>(backend_, d->in, d->out);
    Layer& p = *layers_[l];
    p.reset(*d);
    p.folded = first && !d->quant && !d->bf16 && fold_preprocessing(p, l, model);
    first = false;
    const size_t dense_bytes = backend_->dense_packed_bytes(p.in, p.out);
    if (d->bf16) {
      prepare_bf16(p, l);
      continue;
    }
    if (!d->quant && dense_bytes > 0 && precision == Precision::fp32) {
      p.dense_packed.reserve(dense_bytes);
      backend_->dense_pack(p.dense_packed.data(), p.folded ? p.fold_w.data() : params_.data() + weight_offsets_[l],
                           p.in, p.out);
      p.dense_ready = true;
    }
    if (d->quant) {
      prepare_int8(p, *d->quant);
    } else if (p.format != SparseFormat::dense && p.max_batch >= p.min_batch) {
      prepare_sparse(p, l);
    }
  }
}

void InferencePlan::prepare_int8(Layer& p, const QuantizedLayer& q) {
  // gemm_s8_pack reads the codes from device memory: staged for this build only.
  Buffer<int8_t> staged(backend_);
  upload(backend_, staged, q.w_q);
  if (!p.s8) p.s8 = std::make_shared<ops::PackedS8>(*backend_, p.in, p.out);
  backend_->gemm_s8_pack(p.s8->data(), staged.data(), p.in, p.out);
  upload(backend_, p.w_scale, q.w_scale);
  upload(backend_, p.in_scale, std::vector<float>{q.in_scale});
  upload(backend_, p.in_zero, std::vector<int32_t>{q.in_zero});
  p.per_channel = q.per_channel;
  p.is_static = q.is_static();
  p.in_scale_value = q.in_scale;
  p.in_zero_value = q.in_zero;
  p.quantized = true;
}

// The plan's copy of a bf16 layer's weights holds bf16 values (Model::set_bf16): their bits,
// packed for the device's bf16 product (which Model::set_bf16 checked it has).
void InferencePlan::prepare_bf16(Layer& p, size_t l) {
  const size_t n = static_cast<size_t>(p.in * p.out);
  std::vector<float> w(n);
  backend_->copy_to_host(w.data(), params_.data() + weight_offsets_[l], sizeof(float) * n);
  std::vector<uint16_t> bits(n);
  for (size_t i = 0; i < n; ++i) bits[i] = cpu::bf16_from_float(w[i]);
  Buffer<uint16_t> staged(backend_);
  upload(backend_, staged, bits);
  p.bf16_packed.reserve(backend_->dense_bf16_packed_bytes(p.in, p.out));
  backend_->dense_bf16_pack(p.bf16_packed.data(), staged.data(), p.in, p.out);
  p.bf16_ready = true;
}

InferencePlan::~InferencePlan() = default;

// Folding turns sum_i (x_i s_i + t_i) w_ij into sum_i x_i (s_i w_ij) + sum_i t_i w_ij: the
// float32 products x_i s_i w_ij are as large as |x_i s_i| while the preprocessed input is
// |x_i s_i + t_i|, so the rounding error grows with |t_i| (a feature whose mean is many
// standard deviations from 0 cancels catastrophically). Up to this shift, inputs scaled to
// about unit range (pixels, standardized features) lose a few units in the last place.
constexpr double kMaxFoldedShift = 8.0;

// Folds the preprocessing (affine) layers before the first Dense layer `l` into its weights,
// in float64, when that layer runs in float32 dense and every combined shift is at most
// kMaxFoldedShift; false (nothing folded: inference runs them) otherwise.
bool InferencePlan::fold_preprocessing(Layer& p, size_t l, const Model& model) {
  if (p.format != SparseFormat::dense) return false;
  const std::vector<LayerSpec>& specs = model.layers();
  const size_t n_in = static_cast<size_t>(p.in), n_out = static_cast<size_t>(p.out);
  std::vector<double> scale(n_in, 1.0), shift(n_in, 0.0);
  bool any = false;
  for (size_t k = 0; k < l; ++k) {
    if (specs[k].kind != LayerSpec::Kind::affine) continue;  // dropout: the identity here
    any = true;
    for (size_t i = 0; i < n_in; ++i) {
      scale[i] *= specs[k].scale[i];
      shift[i] = shift[i] * specs[k].scale[i] + specs[k].shift[i];
    }
  }
  if (!any) return false;
  for (size_t i = 0; i < n_in; ++i)
    if (!(std::fabs(shift[i]) <= kMaxFoldedShift)) return false;
  std::vector<float> w(n_in * n_out), b(n_out);
  backend_->copy_to_host(w.data(), params_.data() + weight_offsets_[l], sizeof(float) * w.size());
  backend_->copy_to_host(b.data(), params_.data() + bias_offsets_[l], sizeof(float) * b.size());
  std::vector<double> bias(b.begin(), b.end());
  for (size_t i = 0; i < n_in; ++i)
    for (size_t j = 0; j < n_out; ++j) {
      bias[j] += shift[i] * w[i * n_out + j];
      w[i * n_out + j] = static_cast<float>(scale[i] * w[i * n_out + j]);
    }
  for (size_t j = 0; j < n_out; ++j) b[j] = static_cast<float>(bias[j]);
  upload(backend_, p.fold_w, w);
  upload(backend_, p.fold_b, b);
  return true;
}

void InferencePlan::prepare_sparse(Layer& p, size_t l) {
  std::vector<float> w(static_cast<size_t>(p.in * p.out));
  backend_->copy_to_host(w.data(), params_.data() + weight_offsets_[l], sizeof(float) * w.size());
  // CSR of W^T: per output unit, its nonzero inputs in ascending order (the csr format,
  // and what either format's small-batch layout packs from).
  std::vector<int32_t> offsets(static_cast<size_t>(p.out + 1), 0), index;
  std::vector<float> values;
  for (int64_t j = 0; j < p.out; ++j) {
    for (int64_t i = 0; i < p.in; ++i) {
      const float v = w[static_cast<size_t>(i * p.out + j)];
      if (v != 0.0f) {
        index.push_back(static_cast<int32_t>(i));
        values.push_back(v);
      }
    }
    offsets[static_cast<size_t>(j + 1)] = static_cast<int32_t>(index.size());
  }
  const CsrMatrix host{offsets.data(), index.data(), values.data(), p.in, p.out, static_cast<int64_t>(values.size())};
  if (p.format == SparseFormat::csr) {
    if (!p.csr) p.csr = std::make_shared<ops::PackedCsr>(*backend_);
    p.csr->fill(host);
    p.sparse_ready = true;
    return;
  }
  // N:M: per column and group of m rows, its nonzeros in row order; a group with more
  // than n nonzeros (weights changed without the N:M mask) leaves the layer dense.
  const int64_t groups = (p.in + p.nm_m - 1) / p.nm_m;
  std::vector<float> nm_values(static_cast<size_t>(groups * p.nm_n * p.out), 0.0f);
  std::vector<uint8_t> nm_index(nm_values.size(), 0);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t j = 0; j < p.out; ++j) {
      int64_t slot = 0;
      for (int64_t r = 0; r < p.nm_m && g * p.nm_m + r < p.in; ++r) {
        const float v = w[static_cast<size_t>((g * p.nm_m + r) * p.out + j)];
        if (v == 0.0f) continue;
        if (slot == p.nm_n) return;
        const size_t at = static_cast<size_t>((g * p.nm_n + slot) * p.out + j);
        nm_values[at] = v;
        nm_index[at] = static_cast<uint8_t>(r);
        ++slot;
      }
    }
  upload(backend_, p.nm_values, nm_values);
  upload(backend_, p.nm_index, nm_index);
  // Both formats add each output's nonzeros in ascending input order, as the small-batch
  // layout does, so it computes what the format's kernel would.
  const size_t packed_bytes = backend_->sparse_packed_bytes(host);
  if (packed_bytes > 0) {
    backend_->sparse_pack(p.nm_packed.reserve(packed_bytes), host);
    p.nm_packed_ready = true;
  }
  p.sparse_ready = true;
}

void InferencePlan::reserve(InferenceWorkspace& ws, int64_t rows) const {
  const size_t r = static_cast<size_t>(rows);
  for (size_t l = 0; l < widths_.size(); ++l) {
    ws.act[l].reserve(r * static_cast<size_t>(widths_[l]));
    if (half_operands(precision_) && feeds_dense(l))
      ws.act16[l].reserve(r * static_cast<size_t>(half_ld(widths_[l])));
    else
      ws.act16[l].release();  // none at the other precisions, also after a rebuild
  }
  if (!quantized_) return;
  ws.q_a.reserve(r * static_cast<size_t>(max_width_));
  ws.q_b.reserve(r * static_cast<size_t>(max_width_));
  ws.q_scale.reserve(r);
  ws.q_zero.reserve(r);
}

size_t InferencePlan::bytes() const {
  auto held = [](const auto& buffer) { return buffer.size() * sizeof(*buffer.data()); };
  size_t total = held(params_) + held(affine_) + held(half_params_);
  for (const auto& p : layers_) {
    if (!p) continue;
    total += held(p->dense_packed) + held(p->fold_w) + held(p->fold_b) + held(p->w_scale) + held(p->in_scale) +
             held(p->in_zero) + held(p->nm_values) + held(p->nm_index) + held(p->nm_packed) + held(p->bf16_packed);
    if (p->s8) total += p->s8->nbytes();
    if (p->csr) total += p->csr->bytes();
  }
  return total;
}

bool InferencePlan::feeds_dense(size_t l) const {
  if (kinds_[l] != LayerSpec::Kind::dense) return false;
  for (size_t k = l + 1; k < kinds_.size(); ++k)
    if (kinds_[k] != LayerSpec::Kind::dropout) return kinds_[k] == LayerSpec::Kind::dense;
  return false;
}

const float* InferencePlan::forward(InferenceWorkspace& ws, const float* input, int64_t b, float* out,
                                    const uint16_t* input16) const {
  if (!half_operands(precision_)) input16 = nullptr;
  return prepared_ ? forward_prepared(ws, input, b, out, input16) : forward_plain(ws, input, b, out, input16);
}

const float* InferencePlan::forward_plain(InferenceWorkspace& ws, const float* input, int64_t b, float* out,
                                          const uint16_t* input16) const {
  const float* cur = input;
  const uint16_t* cur16 = input16;  // cur in 16 bits, or null
  int64_t width = input_dim_;
  const size_t last = kinds_.size() - 1;
  for (size_t l = 0; l < kinds_.size(); ++l) {
    float* dst = (out && l == last) ? out : ws.act[l].data();
    uint16_t* dst16 = nullptr;
    if (kinds_[l] == LayerSpec::Kind::affine) {
      const float* scale = affine_.data() + affine_offsets_[l];
      backend_->feature_affine(dst, cur, scale, scale + width, b, width);
    } else if (kinds_[l] == LayerSpec::Kind::dense) {
      dst16 = ws.act16[l].data();  // null unless a Dense layer reads it (reserve)
      backend_->dense_forward(dst, nullptr, cur, params_.data() + weight_offsets_[l], params_.data() + bias_offsets_[l],
                              {b, width, widths_[l], precision_, {half_kernel(l), cur16, dst16}}, activations_[l]);
      width = widths_[l];
    } else if (dst == out) {
      std::memcpy(dst, cur, sizeof(float) * static_cast<size_t>(b * width));
    } else {
      continue;  // dropout at inference is the identity: pass cur (and cur16) through
    }
    cur = dst;
    cur16 = dst16;
  }
  return cur;
}

const float* InferencePlan::forward_prepared(InferenceWorkspace& ws, const float* input, int64_t b, float* out,
                                             const uint16_t* input16) const {
  const bool reverse_columns = (ws.passes++ & 1) != 0;
  const float* cur = input;
  const uint16_t* cur16 = input16;  // cur in 16 bits, or null
  // When the previous int8 layer requantized its output for this one, cur_q holds it.
  const uint8_t* cur_q = nullptr;
  // The float input (width `coded_width`) of the int8 layers since cur_q was last null: a
  // row of it with a NaN or an infinity has no code, so that row of their float output is
  // made NaN (the model's input, or a float layer's output that overflowed).
  const float* coded = nullptr;
  int64_t coded_width = 0;
  int64_t width = input_dim_;
  const size_t last = kinds_.size() - 1;
  // Preprocessing folded into the first Dense layer is skipped.
  bool folded = false;
  for (const auto& p : layers_)
    if (p) {
      folded = p->folded;
      break;
    }
  for (size_t l = 0; l < kinds_.size(); ++l) {
    float* dst = (out && l == last) ? out : ws.act[l].data();
    if (kinds_[l] == LayerSpec::Kind::affine) {
      if (folded) continue;
      const float* scale = affine_.data() + affine_offsets_[l];
      backend_->feature_affine(dst, cur, scale, scale + width, b, width);
      cur = dst;
      cur16 = nullptr;
      continue;
    }
    if (kinds_[l] != LayerSpec::Kind::dense) {
      // Dropout at inference is the identity.
      if (dst == out) {
        std::memcpy(dst, cur, sizeof(float) * static_cast<size_t>(b * width));
        cur = dst;
      }
      continue;
    }
    const Layer& p = *layers_[l];
    const Activation act = activations_[l];
    const int64_t units = widths_[l];
    const float* w = p.folded ? p.fold_w.data() : params_.data() + weight_offsets_[l];
    const float* bias = p.folded ? p.fold_b.data() : params_.data() + bias_offsets_[l];
    const uint16_t* in16 = cur16;
    cur16 = nullptr;  // unless the plain product below writes its output's copy
    if (p.quantized) {
      GemmS8Epilogue e;
      e.w_scale = p.w_scale.data();
      e.w_per_channel = p.per_channel;
      e.bias = bias;
      e.act = act;
      uint8_t* a = (cur_q == ws.q_a.data()) ? ws.q_b.data() : ws.q_a.data();
      if (cur_q == nullptr) {
        coded = cur;
        coded_width = width;
        if (p.is_static) {
          backend_->quantize(a, DType::u8, cur, p.in_scale.data(), p.in_zero.data(), b, width, QuantAxis::tensor);
        } else {
          backend_->quantize_rows_dynamic(a, ws.q_scale.data(), ws.q_zero.data(), cur, b, width);
        }
        cur_q = a;
        a = (cur_q == ws.q_a.data()) ? ws.q_b.data() : ws.q_a.data();
      }
      e.a_scale = p.is_static ? p.in_scale.data() : ws.q_scale.data();
      e.a_zero = p.is_static ? p.in_zero.data() : ws.q_zero.data();
      e.a_per_row = !p.is_static;
      // The next Dense layer (dropout passes through): a static int8 one takes this
      // output requantized to its input encoding, straight from the epilogue.
      const Layer* next = nullptr;
      for (size_t k = l + 1; k < kinds_.size(); ++k)
        if (kinds_[k] == LayerSpec::Kind::dense) {
          next = layers_[k].get();
          break;
        }
      if (next && next->quantized && next->is_static) {
        e.out_scale = next->in_scale_value;
        e.out_zero = next->in_zero_value;
        backend_->gemm_s8(nullptr, a, nullptr, cur_q, p.s8->data(), {b, width, units}, e);
        cur_q = a;
      } else {
        backend_->gemm_s8(dst, nullptr, nullptr, cur_q, p.s8->data(), {b, width, units}, e);
        backend_->nan_rows_of_nonfinite(dst, coded, b, coded_width, units);
        cur_q = nullptr;
        cur = dst;
      }
    } else {
      if (p.bf16_ready) {
        backend_->dense_forward_bf16(dst, cur, p.bf16_packed.data(), bias, {b, width, units}, act);
        cur = dst;
        width = units;
        continue;
      }
      const bool sparse = p.sparse_ready && b >= p.min_batch && b <= p.max_batch;
      const void* small_batch = sparse ? p.small_batch_packed() : nullptr;
      // The small-batch layout first, for the batches the device serves from it.
      const bool served = small_batch && backend_->sparse_dense_forward_packed(dst, cur, small_batch, bias, b, act);
      if (!served) {
        if (sparse && p.format == SparseFormat::csr) {
          backend_->sparse_dense_forward(dst, cur, p.csr->matrix(), bias, b, act);
        } else if (sparse && p.format == SparseFormat::nm) {
          NmMatrix m;
          m.values = p.nm_values.data();
          m.index = p.nm_index.data();
          m.in = p.in;
          m.out = p.out;
          m.n = static_cast<int>(p.nm_n);
          m.m = static_cast<int>(p.nm_m);
          backend_->nm_dense_forward(dst, cur, m, bias, b, act);
        } else if (p.dense_ready) {
          backend_->dense_forward_packed(dst, cur, w, p.dense_packed.data(), bias, {b, width, units, precision_}, act,
                                         reverse_columns);
        } else {
          // a folded layer's kernel has no 16-bit copy; its input is the model's, as staged
          uint16_t* dst16 = ws.act16[l].data();  // null unless a Dense layer reads it (reserve)
          backend_->dense_forward(dst, nullptr, cur, w, bias,
                                  {b, width, units, precision_, {p.folded ? nullptr : half_kernel(l), in16, dst16}},
                                  act);
          cur16 = dst16;
        }
      }
      cur = dst;
    }
    width = units;
  }
  return cur;
}

}  // namespace customml
