// The network executor's inference plan (DESIGN decision 10) and pruning masks: per
// Dense layer a mask enforced after every update, a sparse format (CSR or N:M) built from
// the nonzero weights, or int8 weights packed for gemm_s8; prepared lazily on the first
// inference after a weight change and shared by concurrent predict calls.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "network.h"
#include "network_internal.h"

namespace customml {
const char* sparse_format_name(SparseFormat f) {
  switch (f) {
    case SparseFormat::dense: return "dense";
    case SparseFormat::csr: return "csr";
    case SparseFormat::nm: return "nm";
  }
  return "?";
}

SparseFormat parse_sparse_format(const std::string& name) {
  for (SparseFormat f : {SparseFormat::dense, SparseFormat::csr, SparseFormat::nm})
    if (name == sparse_format_name(f)) return f;
  throw std::invalid_argument("[set_sparse_format] format must be dense, csr or nm, got '" + name + "'");
}

Network::LayerPlan& Network::dense_plan(const char* op, int64_t layer) const {
  if (layer < 0 || layer >= static_cast<int64_t>(layers_.size()))
    throw std::out_of_range(std::string("[") + op + "] layer " + std::to_string(layer) + " is outside [0, " +
                            std::to_string(layers_.size()) + ")");
  if (!plans_[static_cast<size_t>(layer)])
    throw std::invalid_argument(std::string("[") + op + "] layer " + std::to_string(layer) + " is not a Dense layer");
  return *plans_[static_cast<size_t>(layer)];
}

std::pair<int64_t, int64_t> Network::dense_shape(int64_t layer) const {
  const LayerPlan& p = dense_plan("dense_shape", layer);
  return {p.in, p.out};
}

void Network::set_mask(int64_t layer, const uint8_t* keep) {
  std::unique_lock<WriterPreferringLock> lock(mutex_);
  LayerPlan& p = dense_plan("set_mask", layer);
  const size_t n = static_cast<size_t>(p.in * p.out);
  p.keep.reserve(n);
  backend_->copy_to_device(p.keep.data(), keep, n);
  p.masked = true;
  backend_->apply_mask(params_.data() + weight_offsets_[static_cast<size_t>(layer)], p.keep.data(), p.in * p.out);
  invalidate_plan();
}

void Network::clear_mask(int64_t layer) {
  std::unique_lock<WriterPreferringLock> lock(mutex_);
  dense_plan("clear_mask", layer).masked = false;
}

bool Network::masked(int64_t layer) const {
  std::shared_lock<WriterPreferringLock> lock(mutex_);
  return dense_plan("masked", layer).masked;
}

void Network::apply_masks() {
  for (size_t l = 0; l < plans_.size(); ++l)
    if (plans_[l] && plans_[l]->masked)
      backend_->apply_mask(params_.data() + weight_offsets_[l], plans_[l]->keep.data(), plans_[l]->in * plans_[l]->out);
}

void Network::set_sparse_format(int64_t layer, SparseFormat format, int64_t max_batch, int n, int m,
                                int64_t min_batch) {
  if (max_batch < 0)
    throw std::invalid_argument("[set_sparse_format] max_batch must be >= 0, got " + std::to_string(max_batch));
  if (min_batch < 1)
    throw std::invalid_argument("[set_sparse_format] min_batch must be >= 1, got " + std::to_string(min_batch));
  if (!(m >= 1 && m <= 255 && n >= 1 && n <= m))
    throw std::invalid_argument("[set_sparse_format] N:M needs 1 <= n <= m <= 255, got n=" + std::to_string(n) +
                                " m=" + std::to_string(m));
  std::unique_lock<WriterPreferringLock> lock(mutex_);
  LayerPlan& p = dense_plan("set_sparse_format", layer);
  p.format = format;
  p.max_batch = format == SparseFormat::dense ? 0 : max_batch;
  p.min_batch = format == SparseFormat::dense ? 1 : min_batch;
  p.nm_n = n;
  p.nm_m = m;
  invalidate_plan();
}

SparseFormat Network::sparse_format(int64_t layer) const {
  std::shared_lock<WriterPreferringLock> lock(mutex_);
  return dense_plan("sparse_format", layer).format;
}

int64_t Network::sparse_max_batch(int64_t layer) const {
  std::shared_lock<WriterPreferringLock> lock(mutex_);
  return dense_plan("sparse_max_batch", layer).max_batch;
}

int64_t Network::sparse_min_batch(int64_t layer) const {
  std::shared_lock<WriterPreferringLock> lock(mutex_);
  return dense_plan("sparse_min_batch", layer).min_batch;
}

void Network::set_quantization(int64_t layer, const int8_t* w_q, const float* w_scale, bool per_channel,
                               float in_scale, int32_t in_zero) {
  const char* op = "set_quantization";
  std::unique_lock<WriterPreferringLock> lock(mutex_);
  LayerPlan& p = dense_plan(op, layer);
  const int64_t n = p.in * p.out;
  const int64_t scales = per_channel ? p.out : 1;
  for (int64_t i = 0; i < n; ++i)
    if (w_q[i] < -127)
      throw std::invalid_argument(std::string("[") + op + "] w_q must be in [-127, 127], found -128 at " +
                                  std::to_string(i));
  for (int64_t j = 0; j < scales; ++j)
    if (!(std::isfinite(w_scale[j]) && w_scale[j] > 0.0f))
      throw std::invalid_argument(std::string("[") + op + "] w_scale must be finite and > 0, got " +
                                  std::to_string(w_scale[j]) + " at " + std::to_string(j));
  if (!std::isfinite(in_scale))
    throw std::invalid_argument(std::string("[") + op + "] in_scale must be finite (<= 0 for dynamic)");
  if (in_scale > 0.0f && (in_zero < 0 || in_zero > 255))
    throw std::invalid_argument(std::string("[") + op + "] in_zero must be in [0, 255], got " + std::to_string(in_zero));
  if (p.in > kGemmS8MaxK)
    throw std::invalid_argument(std::string("[") + op + "] a layer of " + std::to_string(p.in) +
                                " inputs exceeds gemm_s8's limit of " + std::to_string(kGemmS8MaxK));
  auto q = std::make_unique<QuantizedLayer>();
  q->w_q.assign(w_q, w_q + n);
  q->w_scale.assign(w_scale, w_scale + scales);
  q->per_channel = per_channel;
  q->in_scale = in_scale > 0.0f ? in_scale : 0.0f;
  q->in_zero = in_scale > 0.0f ? in_zero : 0;
  // The float weights become what the codes stand for, so a float forward (training,
  // the file, export) and the int8 plan compute the same function up to rounding.
  std::vector<float> w(static_cast<size_t>(n));
  for (int64_t i = 0; i < p.in; ++i)
    for (int64_t j = 0; j < p.out; ++j)
      w[static_cast<size_t>(i * p.out + j)] =
          q->w_scale[static_cast<size_t>(per_channel ? j : 0)] * static_cast<float>(q->w_q[static_cast<size_t>(i * p.out + j)]);
  backend_->copy_to_device(params_.data() + weight_offsets_[static_cast<size_t>(layer)], w.data(),
                           sizeof(float) * w.size());
  p.quant = std::move(q);
  invalidate_plan();
}

void Network::clear_quantization(int64_t layer) {
  std::unique_lock<WriterPreferringLock> lock(mutex_);
  dense_plan("clear_quantization", layer).quant.reset();
  invalidate_plan();
}

const QuantizedLayer* Network::quantization(int64_t layer) const {
  std::shared_lock<WriterPreferringLock> lock(mutex_);
  return dense_plan("quantization", layer).quant.get();
}

bool Network::planned_forward_needed() const {
  if (packs_dense_ && precision_ == Precision::fp32) return true;
  for (const auto& p : plans_)
    if (p && (p->quant || p->format != SparseFormat::dense)) return true;
  return false;
}

void Network::prepare() const {
  std::shared_lock<WriterPreferringLock> lock(mutex_);
  ensure_plan();
}

void Network::ensure_plan() const {
  if (plan_ready_.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> guard(plan_mutex_);
  if (plan_ready_.load(std::memory_order_relaxed)) return;
  build_plan();
  plan_generation_.fetch_add(1, std::memory_order_relaxed);
  plan_ready_.store(true, std::memory_order_release);
}

namespace {
template <class T>
void upload(Backend* be, Buffer<T>& dst, const std::vector<T>& src) {
  dst.reserve(std::max<size_t>(src.size(), 1));
  if (!src.empty()) be->copy_to_device(dst.data(), src.data(), sizeof(T) * src.size());
}
}  // namespace

// Folding turns sum_i (x_i s_i + t_i) w_ij into sum_i x_i (s_i w_ij) + sum_i t_i w_ij: the
// float32 products x_i s_i w_ij are as large as |x_i s_i| while the preprocessed input is
// |x_i s_i + t_i|, so the rounding error grows with |t_i| (a feature whose mean is many
// standard deviations from 0 cancels catastrophically). Up to this shift, inputs scaled to
// about unit range (pixels, standardized features) lose a few units in the last place.
constexpr double kMaxFoldedShift = 8.0;

// Folds the preprocessing (affine) layers before the first Dense layer `l` into its weights,
// in float64, when that layer runs in float32 dense and every combined shift is at most
// kMaxFoldedShift; false (nothing folded: inference runs them) otherwise.
bool Network::fold_preprocessing(LayerPlan& p, size_t l) const {
  if (p.quant || p.format != SparseFormat::dense) return false;
  const size_t n_in = static_cast<size_t>(p.in), n_out = static_cast<size_t>(p.out);
  std::vector<double> scale(n_in, 1.0), shift(n_in, 0.0);
  bool any = false;
  for (size_t k = 0; k < l; ++k) {
    if (layers_[k].kind != LayerSpec::Kind::affine) continue;  // dropout: the identity here
    any = true;
    for (size_t i = 0; i < n_in; ++i) {
      scale[i] *= layers_[k].scale[i];
      shift[i] = shift[i] * layers_[k].scale[i] + layers_[k].shift[i];
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

void Network::build_plan() const {
  size_t first_dense = plans_.size();
  for (size_t l = 0; l < plans_.size() && first_dense == plans_.size(); ++l)
    if (plans_[l]) first_dense = l;
  for (size_t l = 0; l < plans_.size(); ++l) {
    if (!plans_[l]) continue;
    LayerPlan& p = *plans_[l];
    p.sparse_ready = false;
    p.sparse_packed_ready = false;
    p.dense_ready = false;
    p.folded = l == first_dense && fold_preprocessing(p, l);
    const size_t dense_bytes = backend_->dense_packed_bytes(p.in, p.out);
    if (!p.quant && dense_bytes > 0 && precision_ == Precision::fp32) {
      p.dense_packed.reserve(dense_bytes);
      backend_->dense_pack(p.dense_packed.data(), p.folded ? p.fold_w.data() : params_.data() + weight_offsets_[l],
                           p.in, p.out);
      p.dense_ready = true;
    }
    if (p.quant) {
      const QuantizedLayer& q = *p.quant;
      Buffer<int8_t> staged(backend_);
      upload(backend_, staged, q.w_q);
      p.packed.reserve(backend_->gemm_s8_packed_bytes(p.in, p.out));
      backend_->gemm_s8_pack(p.packed.data(), staged.data(), p.in, p.out);
      upload(backend_, p.w_scale, q.w_scale);
      upload(backend_, p.in_scale, std::vector<float>{q.in_scale});
      upload(backend_, p.in_zero, std::vector<int32_t>{q.in_zero});
      continue;
    }
    if (p.format == SparseFormat::dense || p.max_batch < p.min_batch) continue;
    std::vector<float> w(static_cast<size_t>(p.in * p.out));
    backend_->copy_to_host(w.data(), params_.data() + weight_offsets_[l], sizeof(float) * w.size());
    // CSR of W^T: per output unit, its nonzero inputs in ascending order (the csr format,
    // and what either format packs from).
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
    if (p.format == SparseFormat::csr) {
      p.nnz = static_cast<int64_t>(values.size());
      upload(backend_, p.csr_offsets, offsets);
      upload(backend_, p.csr_index, index);
      upload(backend_, p.csr_values, values);
    } else {
      // N:M: per column and group of m rows, its nonzeros in row order; a group with more
      // than n nonzeros (weights changed without the N:M mask) leaves the layer dense.
      const int64_t groups = (p.in + p.nm_m - 1) / p.nm_m;
      std::vector<float> nm_values(static_cast<size_t>(groups * p.nm_n * p.out), 0.0f);
      std::vector<uint8_t> nm_index(nm_values.size(), 0);
      bool fits = true;
      for (int64_t g = 0; g < groups && fits; ++g)
        for (int64_t j = 0; j < p.out && fits; ++j) {
          int64_t slot = 0;
          for (int64_t r = 0; r < p.nm_m && g * p.nm_m + r < p.in; ++r) {
            const float v = w[static_cast<size_t>((g * p.nm_m + r) * p.out + j)];
            if (v == 0.0f) continue;
            if (slot == p.nm_n) {
              fits = false;
              break;
            }
            const size_t at = static_cast<size_t>((g * p.nm_n + slot) * p.out + j);
            nm_values[at] = v;
            nm_index[at] = static_cast<uint8_t>(r);
            ++slot;
          }
        }
      if (!fits) continue;
      upload(backend_, p.nm_values, nm_values);
      upload(backend_, p.nm_index, nm_index);
    }
    // Both formats add each output's nonzeros in ascending input order, as the packed
    // layout does, so the small-batch kernel computes what the format's kernel would.
    const CsrMatrix host{offsets.data(), index.data(), values.data(), p.in, p.out, static_cast<int64_t>(values.size())};
    const size_t packed_bytes = backend_->sparse_packed_bytes(host);
    if (packed_bytes > 0) {
      backend_->sparse_pack(p.sparse_packed.reserve(packed_bytes), host);
      p.sparse_packed_ready = true;
    }
    p.sparse_ready = true;
  }
}

const float* Network::forward_planned(Workspace& ws, const float* input, int64_t b, float* out) const {
  ensure_plan();
  const bool reverse_columns = (ws.planned_passes++ & 1) != 0;
  const float* cur = input;
  // When the previous int8 layer requantized its output for this one, cur_q holds it.
  const uint8_t* cur_q = nullptr;
  int64_t width = input_dim_;
  const size_t last = layers_.size() - 1;
  // Preprocessing folded into the first Dense layer is skipped.
  bool folded = false;
  for (const auto& p : plans_)
    if (p) {
      folded = p->folded;
      break;
    }
  for (size_t l = 0; l < layers_.size(); ++l) {
    const LayerSpec& s = layers_[l];
    float* dst = (out && l == last) ? out : ws.act[l].data();
    if (s.kind == LayerSpec::Kind::affine) {
      if (folded) continue;
      const float* scale = affine_.data() + affine_offsets_[l];
      backend_->feature_affine(dst, cur, scale, scale + width, b, width);
      cur = dst;
      continue;
    }
    if (s.kind != LayerSpec::Kind::dense) {
      // Dropout at inference is the identity.
      if (dst == out) {
        std::memcpy(dst, cur, sizeof(float) * static_cast<size_t>(b * width));
        cur = dst;
      }
      continue;
    }
    const LayerPlan& p = *plans_[l];
    const float* w = p.folded ? p.fold_w.data() : params_.data() + weight_offsets_[l];
    const float* bias = p.folded ? p.fold_b.data() : params_.data() + bias_offsets_[l];
    if (p.quant) {
      const bool is_static = p.quant->is_static();
      GemmS8Epilogue e;
      e.w_scale = p.w_scale.data();
      e.w_per_channel = p.quant->per_channel;
      e.bias = bias;
      e.act = s.activation;
      uint8_t* a = (cur_q == ws.q_a.data()) ? ws.q_b.data() : ws.q_a.data();
      if (cur_q == nullptr) {
        if (is_static) {
          backend_->quantize(a, DType::u8, cur, p.in_scale.data(), p.in_zero.data(), b, width, QuantAxis::tensor);
        } else {
          backend_->quantize_rows_dynamic(a, ws.q_scale.data(), ws.q_zero.data(), cur, b, width);
        }
        cur_q = a;
        a = (cur_q == ws.q_a.data()) ? ws.q_b.data() : ws.q_a.data();
      }
      e.a_scale = is_static ? p.in_scale.data() : ws.q_scale.data();
      e.a_zero = is_static ? p.in_zero.data() : ws.q_zero.data();
      e.a_per_row = !is_static;
      // The next Dense layer (dropout passes through): a static int8 one takes this
      // output requantized to its input encoding, straight from the epilogue.
      const LayerPlan* next = nullptr;
      for (size_t k = l + 1; k < layers_.size(); ++k)
        if (layers_[k].kind == LayerSpec::Kind::dense) {
          next = plans_[k].get();
          break;
        }
      if (next && next->quant && next->quant->is_static()) {
        e.out_scale = next->quant->in_scale;
        e.out_zero = next->quant->in_zero;
        backend_->gemm_s8(nullptr, a, nullptr, cur_q, p.packed.data(), {b, width, s.units}, e);
        cur_q = a;
      } else {
        backend_->gemm_s8(dst, nullptr, nullptr, cur_q, p.packed.data(), {b, width, s.units}, e);
        cur_q = nullptr;
        cur = dst;
      }
    } else {
      const bool sparse = p.sparse_ready && b >= p.min_batch && b <= p.max_batch;
      // The small-batch layout first, for the batches the device serves from it.
      const bool served =
          sparse && p.sparse_packed_ready &&
          backend_->sparse_dense_forward_packed(dst, cur, p.sparse_packed.data(), bias, b, s.activation);
      if (!served) {
        if (sparse && p.format == SparseFormat::csr) {
          backend_->sparse_dense_forward(dst, cur, p.csr(), bias, b, s.activation);
        } else if (sparse && p.format == SparseFormat::nm) {
          NmMatrix m;
          m.values = p.nm_values.data();
          m.index = p.nm_index.data();
          m.in = p.in;
          m.out = p.out;
          m.n = static_cast<int>(p.nm_n);
          m.m = static_cast<int>(p.nm_m);
          backend_->nm_dense_forward(dst, cur, m, bias, b, s.activation);
        } else if (p.dense_ready) {
          backend_->dense_forward_packed(dst, cur, w, p.dense_packed.data(), bias, {b, width, s.units, precision_},
                                         s.activation, reverse_columns);
        } else {
          backend_->dense_forward(dst, nullptr, cur, w, bias, {b, width, s.units, precision_}, s.activation);
        }
      }
      cur = dst;
    }
    width = s.units;
  }
  return cur;
}

const float* Network::forward_replayed(Workspace& ws, int64_t b) const {
  if (!graphs_usable_.load(std::memory_order_relaxed)) return forward(ws, ws.input.data(), b, false, nullptr);
  // Plan building copies and allocates, which a capture cannot hold: it happens first.
  ensure_plan();
  const uint64_t generation = plan_generation_.load(std::memory_order_relaxed);
  if (ws.graph_generation != generation) {
    ws.clear_graphs();
    ws.graph_generation = generation;
  }
  auto it = ws.graphs.find(b);
  if (it != ws.graphs.end()) {
    backend_->replay_graph(it->second.handle);
    return it->second.output;
  }
  const float* output = nullptr;
  void* graph = backend_->capture_graph([&] { output = forward(ws, ws.input.data(), b, false, nullptr); });
  if (!graph) {
    graphs_usable_.store(false, std::memory_order_relaxed);
    return output;  // the body ran directly
  }
  ws.graphs[b] = {graph, output};
  backend_->replay_graph(graph);
  return output;
}

}  // namespace customml
