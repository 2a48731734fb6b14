#pragma once
// Defines: InferenceWorkspace (the buffers of one inference batch) and InferencePlan, a
// model prepared for inference (DESIGN decision 5): its own copy of the weights, packed for
// the device's GEMM where it has a layout, int8 layers packed for gemm_s8, sparse layers in
// their format, the preprocessing folded into the first Dense layer where that is exact
// enough. Immutable while published, so any number of threads run it at once while the
// model it came from changes; after a weight change the Network rebuilds the plan that
// readers have let go of, in place (its device memory reused), and publishes it.

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "backend.h"
#include "model.h"
#include "packed_weights.h"

namespace customml {

struct InferenceWorkspace {
  InferenceWorkspace(Backend* be, size_t n_layers);
  ~InferenceWorkspace() { clear_graphs(); }
  InferenceWorkspace(const InferenceWorkspace&) = delete;
  InferenceWorkspace& operator=(const InferenceWorkspace&) = delete;
  void clear_graphs();

  Backend* backend;
  Buffer<float> input;  // (rows, input_dim): a batch staged on devices the host cannot address
  // the batch staged in 16 bits instead (InferencePlan::half_input), and its host rounding
  Buffer<uint16_t> input16;
  std::vector<uint16_t> host_input16;
  std::vector<Buffer<float>> act;  // act[l]: (rows, width_l), layer l's output
  // act16[l]: Dense layer l's output in bf16 / fp16 (those plans only, where the next layer
  // is a Dense one reading it): that layer's A as the tensor cores read it (HalfOperands)
  std::vector<Buffer<uint16_t>> act16;
  // Int8: quantized activations (rows, max_width) ping-ponging between layers, and the
  // per-row scales and zero points of dynamic quantization (rows).
  Buffer<uint8_t> q_a, q_b;
  Buffer<float> q_scale;
  Buffer<int32_t> q_zero;
  // Passes run with this workspace: odd ones visit the packed layers' columns last to
  // first (Backend::dense_forward_packed), so that the weights a pass read last, still in
  // L2, are what the next pass reads first.
  uint64_t passes = 0;
  // Inference graphs by batch rows, with the output each leaves its result in; valid for
  // the plan (by generation) and the row capacity they were recorded at (a new plan or a
  // grown buffer moves what they point to). warm: a pass at these rows ran directly (the
  // next one is recorded; Network::forward_replayed).
  struct Graph {
    void* handle = nullptr;
    const float* output = nullptr;
    bool warm = false;
  };
  std::map<int64_t, Graph> graphs;
  uint64_t graph_generation = 0;
  int64_t graph_rows = 0;
};

class InferencePlan {
 public:
  InferencePlan(Backend* backend, size_t n_layers);
  ~InferencePlan();
  InferencePlan(const InferencePlan&) = delete;
  InferencePlan& operator=(const InferencePlan&) = delete;
  // Prepares the model's current weights, formats and quantization, with Dense products
  // in `precision`; generation tells builds apart (graphs are recorded for one). Device
  // memory of earlier builds is reused, so a warm rebuild allocates none.
  void build(const Model& model, Precision precision, uint64_t generation);
  uint64_t generation() const { return generation_; }

  // Grows ws to hold batches of `rows` rows (no-op once it does).
  void reserve(InferenceWorkspace& ws, int64_t rows) const;
  // input: (b, input_dim) on the device -> the output (b, output_dim), in ws or, when
  // given, in out (the last layer writes straight into it). input16: input rounded to the
  // plan's precision's format (bf16 / fp16 plans), which a first Dense layer multiplying
  // the input as it is reads instead of rounding it; may be null.
  const float* forward(InferenceWorkspace& ws, const float* input, int64_t b, float* out,
                       const uint16_t* input16 = nullptr) const;
  Precision precision() const { return precision_; }
  // Whether forward reads the input only through input16, which the caller then stages
  // instead of the floats (rounded as the device would: cpp/half_round.h): the first layer,
  // dropouts aside, is a plain Dense one whose launch the device says reads x's 16-bit
  // copy (Backend::dense_half_reads), so its loop converts nothing and half the bytes cross.
  bool half_input() const { return half_input_; }
  // The memory its buffers hold (capacities: what it has allocated, on its device).
  size_t bytes() const;

 private:
  // A Dense layer as inference runs it.
  struct Layer;
  bool fold_preprocessing(Layer& p, size_t l, const Model& model);
  void prepare_int8(Layer& p, const QuantizedLayer& q);
  void prepare_sparse(Layer& p, size_t l);
  void prepare_bf16(Layer& p, size_t l);
  // The layer-by-layer float forward (training's arithmetic, without dropout), for models
  // with nothing prepared: a device without a packed GEMM layout and no int8 or sparse layer.
  const float* forward_plain(InferenceWorkspace& ws, const float* input, int64_t b, float* out,
                             const uint16_t* input16) const;
  const float* forward_prepared(InferenceWorkspace& ws, const float* input, int64_t b, float* out,
                                const uint16_t* input16) const;
  // Whether Dense layer l's output is read as it is by a Dense layer above it (dropout, the
  // identity here, between): then, in bf16 / fp16 plans, its epilogue writes a 16-bit copy.
  bool feeds_dense(size_t l) const;
  // Dense layer l's kernel in 16 bits (bf16 / fp16 plans), else null.
  const uint16_t* half_kernel(size_t l) const {
    return half_params_.data() ? half_params_.data() + half_weight_offsets_[l] : nullptr;
  }

  Backend* backend_;
  uint64_t generation_ = 0;
  Precision precision_ = Precision::fp32;
  int64_t input_dim_ = 0, max_width_ = 0;
  std::vector<LayerSpec::Kind> kinds_;
  std::vector<Activation> activations_;
  std::vector<int64_t> widths_, weight_offsets_, bias_offsets_, affine_offsets_;
  Buffer<float> params_, affine_;  // copies of the model's
  // bf16 / fp16 plans: params_ rounded to the precision (HalfOperands::w), once per build
  Buffer<uint16_t> half_params_;
  std::vector<int64_t> half_weight_offsets_;  // Model::half_weight_offset's
  bool prepared_ = false;                     // forward_prepared, else forward_plain
  bool half_input_ = false;
  bool quantized_ = false;
  std::vector<std::unique_ptr<Layer>> layers_;  // null but for Dense layers once prepared
};

}  // namespace customml
