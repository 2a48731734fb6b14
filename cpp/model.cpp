#include "model.h"

#include "cpu/gemm_bf16.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

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

Model::Model(int64_t input_dim, std::vector<LayerSpec> layers, Backend* backend)
    : backend_(backend),
      input_dim_(input_dim),
      layers_(std::move(layers)),
      params_(backend),
      half_params_(backend),
      half_rows_device_(backend),
      affine_(backend) {
  if (input_dim < 1) throw std::invalid_argument("[Network] input_dim must be >= 1, got " + std::to_string(input_dim));
  if (layers_.empty()) throw std::invalid_argument("[Network] needs at least one layer");
  int64_t width = input_dim;
  max_width_ = input_dim;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const LayerSpec& s = layers_[l];
    affine_offsets_.push_back(-1);
    if (s.kind == LayerSpec::Kind::affine) {
      if (l > 0 && layers_[l - 1].kind != LayerSpec::Kind::affine)
        throw std::invalid_argument(
            "[Network] layer " + std::to_string(l) +
            ": preprocessing (affine) layers must come first, before any dense or dropout layer");
      check_affine(l, s.scale.data(), s.scale.size(), s.shift.data(), s.shift.size());
      affine_offsets_.back() = affine_floats_;
      affine_floats_ += 2 * input_dim;
      weight_offsets_.push_back(-1);
      bias_offsets_.push_back(-1);
    } else if (s.kind == LayerSpec::Kind::dense) {
      if (s.units < 1)
        throw std::invalid_argument("[Network] layer " + std::to_string(l) + ": units must be >= 1, got " +
                                    std::to_string(s.units));
      if (!(std::isfinite(s.l1) && s.l1 >= 0.0f && std::isfinite(s.l2) && s.l2 >= 0.0f))
        throw std::invalid_argument("[Network] layer " + std::to_string(l) +
                                    ": kernel regularizer l1 and l2 must be finite and >= 0, got " +
                                    std::to_string(s.l1) + " and " + std::to_string(s.l2));
      regularized_ = regularized_ || s.l1 > 0.0f || s.l2 > 0.0f;
      weight_offsets_.push_back(num_params_);
      num_params_ += width * s.units;
      bias_offsets_.push_back(num_params_);
      num_params_ += s.units;
      width = s.units;
    } else {
      if (!(s.rate >= 0.0f && s.rate < 1.0f))
        throw std::invalid_argument("[Network] layer " + std::to_string(l) + ": dropout rate must be in [0, 1), got " +
                                    std::to_string(s.rate));
      weight_offsets_.push_back(-1);
      bias_offsets_.push_back(-1);
    }
    widths_.push_back(width);
    max_width_ = width > max_width_ ? width : max_width_;
  }
  width = input_dim;
  for (size_t l = 0; l < layers_.size(); ++l) {
    if (layers_[l].kind == LayerSpec::Kind::dense) {
      dense_.push_back(std::make_unique<DenseLayerState>(backend_, width, layers_[l].units));
      width = layers_[l].units;
    } else {
      dense_.emplace_back();
    }
  }
  // The 16-bit twin: the parameters' layout, but for the kernels that would not be
  // copyable there (rows not a multiple of 8 wide, or a start not 16-byte aligned: a kernel
  // after a bias of such a width), which follow it, 16-byte aligned, in rows half_ld apart
  // (HalfRows).
  half_size_ = half_ld(num_params_);
  for (size_t l = 0; l < layers_.size(); ++l) {
    half_weight_offsets_.push_back(weight_offsets_[l]);
    if (!dense_[l] || (half_ld(dense_[l]->out) == dense_[l]->out && weight_offsets_[l] % 8 == 0)) continue;
    const int64_t begin = weight_offsets_[l], out = dense_[l]->out;
    half_rows_.push_back({begin, begin + dense_[l]->in * out, out, half_ld(out), half_size_});
    half_weight_offsets_.back() = half_size_;
    half_size_ += dense_[l]->in * half_ld(out);
  }
  affine_.reserve(static_cast<size_t>(affine_floats_));
  for (size_t l = 0; l < layers_.size(); ++l)
    if (affine_offsets_[l] >= 0) upload_affine(l, layers_[l].scale.data(), layers_[l].shift.data());
  params_.reserve(static_cast<size_t>(num_params_));
  backend_->fill_zero(params_.data(), sizeof(float) * static_cast<size_t>(num_params_));
}

void Model::check_affine(size_t layer, const float* scale, size_t n_scale, const float* shift, size_t n_shift) const {
  const std::string pre = "[Network] layer " + std::to_string(layer) + ": ";
  if (n_scale != static_cast<size_t>(input_dim_) || n_shift != static_cast<size_t>(input_dim_))
    throw std::invalid_argument(pre + "affine scale and shift need " + std::to_string(input_dim_) +
                                " values each (one per input feature), got " + std::to_string(n_scale) + " and " +
                                std::to_string(n_shift));
  for (size_t i = 0; i < n_scale; ++i)
    if (!(std::isfinite(scale[i]) && std::isfinite(shift[i])))
      throw std::invalid_argument(pre + "affine scale and shift must be finite (feature " + std::to_string(i) + ")");
}

void Model::upload_affine(size_t layer, const float* scale, const float* shift) {
  const size_t n = static_cast<size_t>(input_dim_);
  float* dst = affine_.data() + affine_offsets_[layer];
  backend_->copy_to_device(dst, scale, sizeof(float) * n);
  backend_->copy_to_device(dst + n, shift, sizeof(float) * n);
}

void Model::set_affine(int64_t layer, const float* scale, const float* shift) {
  if (layer < 0 || layer >= static_cast<int64_t>(layers_.size()) ||
      layers_[static_cast<size_t>(layer)].kind != LayerSpec::Kind::affine)
    throw std::invalid_argument("[Network] layer " + std::to_string(layer) + " is not an affine layer");
  const size_t l = static_cast<size_t>(layer), n = static_cast<size_t>(input_dim_);
  check_affine(l, scale, n, shift, n);
  layers_[l].scale.assign(scale, scale + n);
  layers_[l].shift.assign(shift, shift + n);
  upload_affine(l, scale, shift);
}

namespace {
void check_layer(int64_t layer, size_t layers) {
  if (layer < 0 || layer >= static_cast<int64_t>(layers))
    throw std::out_of_range("[Network] layer " + std::to_string(layer) + " is outside [0, " + std::to_string(layers) +
                            ")");
}

void check_param_range(int64_t offset, int64_t n, int64_t num_params) {
  if (offset < 0 || n < 0 || offset + n > num_params)
    throw std::out_of_range("[Network] parameter range [" + std::to_string(offset) + ", " + std::to_string(offset + n) +
                            ") is outside [0, " + std::to_string(num_params) + ")");
}
}  // namespace

void Model::set_trainable(int64_t layer, bool trainable) {
  check_layer(layer, layers_.size());
  layers_[static_cast<size_t>(layer)].trainable = trainable;
}

bool Model::trainable(int64_t layer) const {
  check_layer(layer, layers_.size());
  return layers_[static_cast<size_t>(layer)].trainable;
}

void Model::read_params(float* dst, int64_t offset, int64_t n) const {
  check_param_range(offset, n, num_params_);
  backend_->copy_to_host(dst, params_.data() + offset, sizeof(float) * static_cast<size_t>(n));
}

void Model::write_params(const float* src, int64_t offset, int64_t n) {
  check_param_range(offset, n, num_params_);
  backend_->copy_to_device(params_.data() + offset, src, sizeof(float) * static_cast<size_t>(n));
  apply_masks();
  round_bf16_layers();
  refresh_half(offset, n);
}

void Model::set_half_format(Precision format) {
  if (!half_operands(format)) {
    half_params_.release();
    half_rows_device_.release();
    half_format_ = Precision::fp32;
    return;
  }
  half_params_.reserve(static_cast<size_t>(std::max<int64_t>(half_size_, 1)));
  backend_->fill_zero(half_params_.data(), sizeof(uint16_t) * static_cast<size_t>(half_size_));  // the pads
  if (!half_rows_.empty()) {
    half_rows_device_.reserve(half_rows_.size());
    backend_->copy_to_device(half_rows_device_.data(), half_rows_.data(), sizeof(HalfRows) * half_rows_.size());
  }
  half_format_ = format;
  refresh_half(0, num_params_);
}

void round_half_twin(Backend& backend, uint16_t* twin, const float* params, int64_t offset, int64_t n,
                     const std::vector<HalfRows>& rows, Precision format) {
  const int64_t end = offset + n;
  for (const HalfRows& r : rows) {  // sorted by begin
    if (r.end <= offset || r.begin >= end) continue;
    if (offset < r.begin) backend.round_to_half(twin + offset, params + offset, r.begin - offset, 1, 1, format);
    backend.round_to_half(twin + r.dst, params + r.begin, r.end - r.begin, r.cols, r.ld, format);
    offset = r.end;
  }
  if (offset < end) backend.round_to_half(twin + offset, params + offset, end - offset, 1, 1, format);
}

void Model::refresh_half(int64_t offset, int64_t n) {
  if (half_params_.data() && n > 0)
    round_half_twin(*backend_, half_params_.data(), params_.data(), offset, n, half_rows_, half_format_);
}

// bf16 layers exist only on devices with a bf16 product, whose memory the host addresses
// (set_bf16 checks): rounded in place.
void Model::round_bf16_layers() {
  for (size_t l = 0; l < dense_.size(); ++l) {
    if (!dense_[l] || !dense_[l]->bf16) continue;
    float* w = params_.data() + weight_offsets_[l];
    for (int64_t i = 0, n = dense_[l]->in * dense_[l]->out; i < n; ++i)
      w[i] = cpu::bf16_to_float(cpu::bf16_from_float(w[i]));
  }
}

void Model::set_bf16(int64_t layer, bool on) {
  const char* op = "set_bf16";
  DenseLayerState& d = dense(op, layer);
  if (on && (backend_->dense_bf16_packed_bytes(1, 1) == 0 || !backend_->host_addressable()))
    throw std::invalid_argument(std::string("[") + op + "] bf16 Dense layers are not supported on device '" +
                                backend_->name() + "' (they run on the CPU)");
  if (on && d.quant)
    throw std::invalid_argument(std::string("[") + op + "] layer " + std::to_string(layer) + " is int8");
  d.bf16 = on;
  round_bf16_layers();
}

const DenseLayerState& Model::dense(const char* op, int64_t layer) const {
  if (layer < 0 || layer >= static_cast<int64_t>(layers_.size()))
    throw std::out_of_range(std::string("[") + op + "] layer " + std::to_string(layer) + " is outside [0, " +
                            std::to_string(layers_.size()) + ")");
  if (!dense_[static_cast<size_t>(layer)])
    throw std::invalid_argument(std::string("[") + op + "] layer " + std::to_string(layer) + " is not a Dense layer");
  return *dense_[static_cast<size_t>(layer)];
}

DenseLayerState& Model::dense(const char* op, int64_t layer) {
  return const_cast<DenseLayerState&>(static_cast<const Model*>(this)->dense(op, layer));
}

void Model::set_mask(int64_t layer, const uint8_t* keep) {
  DenseLayerState& d = dense("set_mask", layer);
  const size_t n = static_cast<size_t>(d.in * d.out);
  d.keep.reserve(n);
  backend_->copy_to_device(d.keep.data(), keep, n);
  d.masked = true;
  backend_->apply_mask(params_.data() + weight_offsets_[static_cast<size_t>(layer)], d.keep.data(), d.in * d.out);
  refresh_half(weight_offsets_[static_cast<size_t>(layer)], d.in * d.out);
}

void Model::apply_masks() {
  for (size_t l = 0; l < dense_.size(); ++l)
    if (dense_[l] && dense_[l]->masked) {
      backend_->apply_mask(params_.data() + weight_offsets_[l], dense_[l]->keep.data(), dense_[l]->in * dense_[l]->out);
      refresh_half(weight_offsets_[l], dense_[l]->in * dense_[l]->out);
    }
}

void Model::set_sparse_format(int64_t layer, SparseFormat format, int64_t max_batch, int n, int m, int64_t min_batch) {
  if (max_batch < 0)
    throw std::invalid_argument("[set_sparse_format] max_batch must be >= 0, got " + std::to_string(max_batch));
  if (min_batch < 1)
    throw std::invalid_argument("[set_sparse_format] min_batch must be >= 1, got " + std::to_string(min_batch));
  if (!(m >= 1 && m <= 255 && n >= 1 && n <= m))
    throw std::invalid_argument("[set_sparse_format] N:M needs 1 <= n <= m <= 255, got n=" + std::to_string(n) +
                                " m=" + std::to_string(m));
  DenseLayerState& d = dense("set_sparse_format", layer);
  d.format = format;
  d.max_batch = format == SparseFormat::dense ? 0 : max_batch;
  d.min_batch = format == SparseFormat::dense ? 1 : min_batch;
  d.nm_n = n;
  d.nm_m = m;
}

void Model::set_quantization(int64_t layer, const int8_t* w_q, const float* w_scale, bool per_channel, float in_scale,
                             int32_t in_zero) {
  const char* op = "set_quantization";
  DenseLayerState& d = dense(op, layer);
  const int64_t n = d.in * d.out;
  const int64_t scales = per_channel ? d.out : 1;
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
    throw std::invalid_argument(std::string("[") + op + "] in_zero must be in [0, 255], got " +
                                std::to_string(in_zero));
  if (d.in > kGemmS8MaxK)
    throw std::invalid_argument(std::string("[") + op + "] a layer of " + std::to_string(d.in) +
                                " inputs exceeds gemm_s8's limit of " + std::to_string(kGemmS8MaxK));
  auto q = std::make_unique<QuantizedLayer>();
  q->w_q.assign(w_q, w_q + n);
  q->w_scale.assign(w_scale, w_scale + scales);
  q->per_channel = per_channel;
  q->in_scale = in_scale > 0.0f ? in_scale : 0.0f;
  q->in_zero = in_scale > 0.0f ? in_zero : 0;
  std::vector<float> w(static_cast<size_t>(n));
  for (int64_t i = 0; i < d.in; ++i)
    for (int64_t j = 0; j < d.out; ++j)
      w[static_cast<size_t>(i * d.out + j)] = q->w_scale[static_cast<size_t>(per_channel ? j : 0)] *
                                              static_cast<float>(q->w_q[static_cast<size_t>(i * d.out + j)]);
  backend_->copy_to_device(params_.data() + weight_offsets_[static_cast<size_t>(layer)], w.data(),
                           sizeof(float) * w.size());
  refresh_half(weight_offsets_[static_cast<size_t>(layer)], n);
  d.quant = std::move(q);
}

bool Model::any_quantized() const {
  for (const auto& d : dense_)
    if (d && (d->quant || d->bf16)) return true;
  return false;
}

}  // namespace customml
