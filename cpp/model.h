#pragma once
// Defines: LayerSpec, SparseFormat, QuantizedLayer and Model, what a network is: its layers,
// its flat parameters on the device, the preprocessing constants, and per Dense layer the
// pruning mask, the inference format and the int8 codes. No locking: the Network that owns
// it gives writers exclusive access.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend.h"
#include "private_api.h"

namespace customml {

struct LayerSpec {
  // affine: y = x * scale + shift per feature (the preprocessing layers Normalization and
  // Rescaling); only at the start of the model, before any dense or dropout layer.
  enum class Kind { dense, dropout, affine };
  Kind kind = Kind::dense;
  int64_t units = 0;  // dense: output width
  Activation activation = Activation::identity;
  float rate = 0.0f;  // dropout
  // dense: L1 / L2 penalty on the kernel (Keras' l1_l2): the loss gains
  // l1 sum |w| + l2 sum w^2 and the kernel gradient l1 sign(w) + 2 l2 w; biases none.
  float l1 = 0.0f, l2 = 0.0f;
  // dense: false freezes the layer (Keras' trainable): its parameters are never updated
  // and its weight gradients never computed.
  bool trainable = true;
  std::vector<float> scale, shift;  // affine: (input_dim) each
};

enum class SparseFormat { dense, csr, nm };
CUSTOMML_PRIVATE_API const char* sparse_format_name(SparseFormat f);
CUSTOMML_PRIVATE_API SparseFormat parse_sparse_format(const std::string& name);

// What set_quantization stored for a layer, on the host (the file's copy).
struct QuantizedLayer {
  std::vector<int8_t> w_q;     // (in, out)
  std::vector<float> w_scale;  // (out) or (1)
  bool per_channel = true;
  float in_scale = 0.0f;  // <= 0: dynamic, per row
  int32_t in_zero = 0;
  bool is_static() const { return in_scale > 0.0f; }
};

// A Dense layer's pruning mask and how inference runs it, beside its weights.
struct DenseLayerState {
  DenseLayerState(Backend* be, int64_t in_, int64_t out_) : in(in_), out(out_), keep(be) {}
  int64_t in, out;
  bool masked = false;
  Buffer<uint8_t> keep;  // (in, out), on the device
  // The sparse format for batches of min_batch to max_batch rows (others run dense).
  SparseFormat format = SparseFormat::dense;
  int64_t min_batch = 1, max_batch = 0;
  int64_t nm_n = 2, nm_m = 4;
  std::unique_ptr<QuantizedLayer> quant;
  // bf16 weights (customml.quantize.bf16): the float weights are kept rounded to bf16 values
  // (every write rounds them again), and inference multiplies them as bf16.
  bool bf16 = false;
};

// twin (the parameters' 16-bit copy, Model::half_params) = params [offset, offset + n)
// rounded to format: at their own offsets, and the padded kernels' rows (rows) that the range
// meets whole. Model's and InferencePlan's copies.
void round_half_twin(Backend& backend, uint16_t* twin, const float* params, int64_t offset, int64_t n,
                     const std::vector<HalfRows>& rows, Precision format);

class Model {
 public:
  Model(int64_t input_dim, std::vector<LayerSpec> layers, Backend* backend);

  Backend* backend() const { return backend_; }
  int64_t input_dim() const { return input_dim_; }
  int64_t output_dim() const { return widths_.back(); }
  int64_t num_params() const { return num_params_; }
  int64_t max_width() const { return max_width_; }
  const std::vector<LayerSpec>& layers() const { return layers_; }
  // widths[l] = output width of layer l; per layer the offsets of its weight (in, out) and
  // bias (out) in the flat parameters, -1 for layers without parameters.
  const std::vector<int64_t>& widths() const { return widths_; }
  const std::vector<int64_t>& weight_offsets() const { return weight_offsets_; }
  const std::vector<int64_t>& bias_offsets() const { return bias_offsets_; }
  bool regularized() const { return regularized_; }

  // The flat parameters (num_params floats) on the device.
  float* params() const { return params_.data(); }
  // The affine layers' scale and shift, back to back (2 input_dim floats each, at
  // affine_offset(l); -1 for other layers), on the device.
  const float* affine() const { return affine_.data(); }
  int64_t affine_offset(size_t l) const { return affine_offsets_[l]; }
  int64_t affine_floats() const { return affine_floats_; }

  // Copies between the caller's memory and [offset, offset + n) of the parameters; a write
  // re-applies the masks.
  void read_params(float* dst, int64_t offset, int64_t n) const;
  void write_params(const float* src, int64_t offset, int64_t n);
  void set_trainable(int64_t layer, bool trainable);
  bool trainable(int64_t layer) const;
  // An affine layer's scale and shift, (input_dim) each, finite.
  void set_affine(int64_t layer, const float* scale, const float* shift);

  // Dense layer `layer`'s state; op names the caller in the error for any other layer.
  DenseLayerState& dense(const char* op, int64_t layer);
  const DenseLayerState& dense(const char* op, int64_t layer) const;
  // dense(l) for a layer known to be Dense, null for the others.
  const DenseLayerState* dense_state(size_t l) const { return dense_[l].get(); }
  DenseLayerState* dense_state(size_t l) { return dense_[l].get(); }

  // keep: (in, out), 1 where a weight stays; the pruned weights are zeroed now and after
  // every optimizer update (apply_masks).
  void set_mask(int64_t layer, const uint8_t* keep);
  void apply_masks();
  void set_sparse_format(int64_t layer, SparseFormat format, int64_t max_batch, int n, int m, int64_t min_batch);
  // The layer's float weights become scale * w_q, so a float forward (training, the file,
  // export) and the int8 plan compute the same function up to rounding.
  void set_quantization(int64_t layer, const int8_t* w_q, const float* w_scale, bool per_channel, float in_scale,
                        int32_t in_zero);
  // Stores Dense layer `layer`'s weights as bf16 (on: rounded now and after every write,
  // to nearest even as cpu/gemm_bf16.h's bf16_from_float) or as float32 again (off: the
  // values stay). On devices with a bf16 product only; not for an int8 layer.
  void set_bf16(int64_t layer, bool on);
  // Whether any layer is int8 or bf16: such a model does not train.
  bool any_quantized() const;

  // The parameters' 16-bit twin (bf16 or fp16, as bits), which the tensor-core GEMMs read at
  // those precisions (HalfOperands): half_size() values, each parameter at its own offset but
  // for the kernels whose rows are not a multiple of 8 wide or whose offset is not one of 8,
  // which follow the parameters' span, 16-byte aligned, in rows half_ld apart, the pads zero
  // (half_rows(): the 10-wide top layer's rows 16 apart, so that cp.async copies them); Dense
  // layer l's kernel at half_weight_offset(l).
  // Kept for format bf16 or fp16 (rounded now), released for any other. Every write to the
  // parameters keeps it current: this class's own, and the optimizer's update, which writes
  // it beside each parameter (UpdateScalars::half, with half_rows_device()). Null while
  // there is none.
  void set_half_format(Precision format);
  uint16_t* half_params() const { return half_params_.data(); }
  Precision half_format() const { return half_format_; }
  int64_t half_size() const { return half_size_; }
  int64_t half_weight_offset(size_t l) const { return half_weight_offsets_[l]; }
  const std::vector<int64_t>& half_weight_offsets() const { return half_weight_offsets_; }
  const std::vector<HalfRows>& half_rows() const { return half_rows_; }
  const HalfRows* half_rows_device() const { return half_rows_device_.data(); }

 private:
  void check_affine(size_t layer, const float* scale, size_t n_scale, const float* shift, size_t n_shift) const;
  void upload_affine(size_t layer, const float* scale, const float* shift);
  void round_bf16_layers();
  // The twin of [offset, offset + n) from the parameters, where there is one.
  void refresh_half(int64_t offset, int64_t n);

  Backend* backend_;
  int64_t input_dim_;
  std::vector<LayerSpec> layers_;
  std::vector<int64_t> widths_;
  std::vector<int64_t> weight_offsets_, bias_offsets_;
  int64_t num_params_ = 0;
  int64_t max_width_ = 0;
  bool regularized_ = false;
  Buffer<float> params_;
  Buffer<uint16_t> half_params_;
  Precision half_format_ = Precision::fp32;  // bf16 or fp16 while half_params_ is held
  int64_t half_size_ = 0;
  std::vector<int64_t> half_weight_offsets_;
  std::vector<HalfRows> half_rows_;
  Buffer<HalfRows> half_rows_device_;  // half_rows_ on the device, while half_params_ is held
  Buffer<float> affine_;
  std::vector<int64_t> affine_offsets_;
  int64_t affine_floats_ = 0;
  std::vector<std::unique_ptr<DenseLayerState>> dense_;  // per layer; null but for Dense layers
};

}  // namespace customml
