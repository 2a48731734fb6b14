#pragma once
// Defines: Network::Workspace (the buffers of one batch) and Network::LayerPlan (a Dense
// layer's mask, inference format and prepared data), shared by network.cpp and
// network_plan.cpp.

#include <map>
#include <memory>
#include <vector>

#include "network.h"

namespace customml {

// Buffers for one batch of up to `rows` rows. Device buffers are host-addressable on
// the cpu backend, so batches are gathered straight into them.
struct Network::Workspace {
  explicit Workspace(Backend* be, size_t n_layers)
      : backend(be), input(be), grad_a(be), grad_b(be), targets(be), labels(be), row_weights(be), q_a(be), q_b(be), q_scale(be),
        q_zero(be) {
    for (size_t l = 0; l < n_layers; ++l) {
      act.emplace_back(be);
      preact.emplace_back(be);
    }
    layer_in.resize(n_layers);
    layer_w.resize(n_layers);
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  ~Workspace() { clear_graphs(); }
  void clear_graphs() {
    for (auto& [rows_, g] : graphs) backend->destroy_graph(g.handle);
    graphs.clear();
  }
  Backend* backend;
  int64_t rows = 0;
  Buffer<float> input;               // (rows, input_dim)
  std::vector<Buffer<float>> act;    // act[l]: (rows, width_l), layer l's output
  std::vector<Buffer<float>> preact; // preact[l]: (rows, width_l), training gelu layers only
  Buffer<float> grad_a, grad_b;      // (rows, max_width): backward ping-pong
  Buffer<float> targets;             // (rows, output_dim): mse and binary cross-entropy
  Buffer<int32_t> labels;            // (rows): classification labels
  Buffer<float> row_weights;         // (rows): the batch's sample weights, when fit has them
  // Host staging of a batch for devices whose memory the host cannot address.
  std::vector<float> host_input, host_targets, host_row_weights;
  std::vector<int32_t> host_labels;
  // layer_in[l]: what layer l read in the last forward pass (a pass-through dropout
  // leaves its own act buffer unwritten, so backward must not assume act[l - 1]).
  std::vector<const float*> layer_in;
  // layer_w[l]: the kernel Dense layer l multiplied by in the last training forward pass:
  // its own, or its fake-quantized copy under quantization-aware training.
  std::vector<const float*> layer_w;
  // Int8 inference: quantized activations (rows, max_width) ping-ponging between layers,
  // and the per-row scales and zero points of dynamic quantization (rows).
  Buffer<uint8_t> q_a, q_b;
  Buffer<float> q_scale;
  Buffer<int32_t> q_zero;
  // Planned forward passes run with this workspace: odd ones visit the packed layers'
  // columns last to first (Backend::dense_forward_packed), so that the weights a pass
  // read last, still in L2, are what the next pass reads first.
  uint64_t planned_passes = 0;
  // Inference graphs of this workspace by batch rows, with the output each leaves its
  // result in; valid for the plan generation and the row capacity they were recorded at
  // (a rebuilt plan or a grown buffer moves what they point to).
  struct Graph {
    void* handle = nullptr;
    const float* output = nullptr;
  };
  std::map<int64_t, Graph> graphs;
  uint64_t graph_generation = 0;
  int64_t graph_rows = 0;
};

// Quantization-aware training of one Dense layer (cpp/network_qat.cpp): what the training
// forward pass multiplies by instead of the float weights and inputs.
struct FakeQuant {
  explicit FakeQuant(Backend* be)
      : w(be), w_codes(be), w_scale(be), x(be), x_codes(be), x_scale(be), x_zero(be) {}
  bool per_channel = true;
  bool inputs = true;      // fake-quantize the layer's input too (static uint8)
  float momentum = 0.9f;   // of the moving averages of the input range
  bool range_set = false;  // lo / hi hold a first batch's range
  double lo = 0.0, hi = 0.0;
  Buffer<float> w;          // (in, out): dequantize(quantize(weights))
  Buffer<int8_t> w_codes;   // (in, out)
  Buffer<float> w_scale;    // (out) or (1)
  Buffer<float> x;          // (rows, in): dequantize(quantize(input))
  Buffer<uint8_t> x_codes;  // (rows, in)
  Buffer<float> x_scale;    // (1)
  Buffer<int32_t> x_zero;   // (1)
  std::vector<float> host;  // staging of weights or inputs for the ranges, on the host
};

struct Network::LayerPlan {
  LayerPlan(Backend* be, int64_t in_, int64_t out_)
      : in(in_), out(out_), keep(be), dense_packed(be), fold_w(be), fold_b(be), packed(be), w_scale(be), in_scale(be), in_zero(be), csr_offsets(be),
        csr_index(be), csr_values(be), sparse_packed(be), nm_values(be), nm_index(be) {}
  int64_t in, out;
  bool masked = false;
  Buffer<uint8_t> keep;  // (in, out), on the device
  SparseFormat format = SparseFormat::dense;
  int64_t min_batch = 1, max_batch = 0;
  int64_t nm_n = 2, nm_m = 4;
  std::unique_ptr<QuantizedLayer> quant;
  // Prepared by build_plan: float weights in the device's GEMM layout (where it has one),
  // int8 weights packed for gemm_s8, the sparse formats.
  Buffer<uint8_t> dense_packed;
  bool dense_ready = false;
  // The first Dense layer with the preprocessing layers before it folded in (x s + t) W + b
  // = x (diag(s) W) + (t W + b): inference then skips them. Float layers only.
  Buffer<float> fold_w, fold_b;
  bool folded = false;
  Buffer<uint8_t> packed;
  Buffer<float> w_scale, in_scale;
  Buffer<int32_t> in_zero;
  bool sparse_ready = false;
  Buffer<int32_t> csr_offsets, csr_index;
  Buffer<float> csr_values;
  int64_t nnz = 0;
  // The CSR of W^T in device memory, as build_plan made it.
  CsrMatrix csr() const { return {csr_offsets.data(), csr_index.data(), csr_values.data(), in, out, nnz}; }
  Buffer<float> nm_values;
  Buffer<uint8_t> nm_index;
  // Either format's nonzeros in the device's own small-batch layout, where it has one.
  Buffer<uint8_t> sparse_packed;
  bool sparse_packed_ready = false;
  std::unique_ptr<FakeQuant> fake;  // quantization-aware training, when set
};

}  // namespace customml
