#include "network.h"

#include <stdexcept>
#include <string>

#include "cpu/elementwise.h"

namespace customml {

using Exclusive = std::unique_lock<std::shared_mutex>;
using Shared = std::shared_lock<std::shared_mutex>;

Network::Network(int64_t input_dim, std::vector<LayerSpec> layers, const Device& device)
    : device_(device),
      backend_(&backend_for(device)),
      model_(input_dim, std::move(layers), backend_),
      trainer_(model_) {}

Network::~Network() { delete spare_.load(); }

void Network::read_params(float* dst, int64_t offset, int64_t n) const {
  Shared lock(mutex_);
  model_.read_params(dst, offset, n);
}

void Network::write_params(const float* src, int64_t offset, int64_t n) {
  Exclusive lock(mutex_);
  model_.write_params(src, offset, n);
  invalidate_plan();
}

void Network::begin_update() {
  std::lock_guard<std::mutex> guard(plan_mutex_);
  ++updates_;
}

void Network::end_update() {
  {
    std::lock_guard<std::mutex> guard(plan_mutex_);
    if (updates_ == 0) throw std::logic_error("[end_update] no update is open");
    --updates_;
  }
  updated_.notify_all();
}

void Network::set_trainable(int64_t layer, bool trainable) {
  Exclusive lock(mutex_);
  model_.set_trainable(layer, trainable);
  trainer_.plan_updates();
}

bool Network::trainable(int64_t layer) const {
  Shared lock(mutex_);
  return model_.trainable(layer);
}

void Network::set_affine(int64_t layer, const float* scale, const float* shift) {
  Exclusive lock(mutex_);
  model_.set_affine(layer, scale, shift);
  invalidate_plan();
}

void Network::compile(const LossConfig& loss, const OptimizerConfig& opt, Precision precision) {
  Exclusive lock(mutex_);
  trainer_.compile(loss, opt, precision);
  invalidate_plan();  // the plan's GEMMs run in the compiled precision
}

void Network::set_loss_scale(double scale, int64_t good_steps) {
  Exclusive lock(mutex_);
  trainer_.set_loss_scale(scale, good_steps);
}

void Network::set_learning_rate(float lr) {
  Exclusive lock(mutex_);
  trainer_.set_learning_rate(lr);
}

void Network::set_cuda_graph(bool on) {
  Exclusive lock(mutex_);
  trainer_.set_cuda_graph(on);
}

bool Network::cuda_graph() const {
  Shared lock(mutex_);
  return trainer_.cuda_graph();
}

int64_t Network::cuda_graph_replays() const {
  Shared lock(mutex_);
  return trainer_.cuda_graph_replays();
}

int64_t Network::cuda_graph_recordings() const {
  Shared lock(mutex_);
  return trainer_.cuda_graph_recordings();
}

float Network::learning_rate() const {
  Shared lock(mutex_);
  return trainer_.learning_rate();
}

int Network::state_slots() const { return trainer_.state_slots(); }

void Network::read_state(float* dst, int slot, int64_t offset, int64_t n) const {
  Shared lock(mutex_);
  trainer_.read_state(dst, slot, offset, n);
}

void Network::write_state(const float* src, int slot, int64_t offset, int64_t n) {
  Exclusive lock(mutex_);
  trainer_.write_state(src, slot, offset, n);
}

void Network::set_step(int64_t step) {
  Exclusive lock(mutex_);
  trainer_.set_step(step);
}

void Network::train_batch(const float* x, const void* y, const float* sample_weight, int64_t n, const int64_t* index,
                          int64_t b, const float* soft_targets) {
  Exclusive lock(mutex_);
  trainer_.train_batch(x, y, sample_weight, n, index, b, soft_targets);
  invalidate_plan();
}

void Network::compute_gradients(const float* x, const void* y, const float* sample_weight, int64_t n,
                                const int64_t* index, int64_t b, const BatchShare& share) {
  Exclusive lock(mutex_);
  trainer_.compute_gradients(x, y, sample_weight, n, index, b, share);
}

void Network::apply_gradients(int64_t b) {
  Exclusive lock(mutex_);
  trainer_.apply_gradients(b);
  invalidate_plan();
}

void Network::read_gradients(float* dst) const {
  Shared lock(mutex_);
  backend_->copy_to_host(dst, trainer_.gradients(), sizeof(float) * static_cast<size_t>(model_.num_params()));
}

std::vector<double> Network::read_norm_slots() const {
  Shared lock(mutex_);
  std::vector<double> slots(static_cast<size_t>(trainer_.norm_slot_count()));
  if (!slots.empty()) backend_->copy_to_host(slots.data(), trainer_.norm_slots(), sizeof(double) * slots.size());
  return slots;
}

void Network::write_gradients(const float* src) {
  Exclusive lock(mutex_);
  backend_->copy_to_device(trainer_.gradients(), src, sizeof(float) * static_cast<size_t>(model_.num_params()));
}

void Network::evaluate(const float* x, const void* y, int64_t n, int64_t batch_size, const float* soft_targets) {
  Exclusive lock(mutex_);
  // Holding mutex_ exclusively, this thread alone could publish a plan. Inside a
  // transaction evaluate keeps the plan of the weights before it, as predict does (the
  // Python caller serializes evaluate with transactions, so one is always published).
  bool rebuild = plan_stale_.load(std::memory_order_acquire);
  if (rebuild) {
    std::lock_guard<std::mutex> guard(plan_mutex_);
    rebuild = updates_ == 0 || !plan_.current();
  }
  if (rebuild) build_plan();
  trainer_.evaluate(*plan_.current(), x, y, n, batch_size, soft_targets);
}

void Network::check_inputs(const char* op, const Tensor& x, const Tensor* y, const Tensor* sample_weight) const {
  trainer_.check_inputs(op, x, y, sample_weight);
}

MetricCounters Network::metrics() const {
  Shared lock(mutex_);
  return trainer_.metrics().counters();
}

void Network::reset_metrics() {
  Exclusive lock(mutex_);
  trainer_.metrics().reset();
}

void Network::set_metric_stats(const MetricStats& stats) {
  Exclusive lock(mutex_);
  trainer_.choose_metrics(stats);
}

std::vector<int64_t> Network::confusion_matrix() const {
  Shared lock(mutex_);
  return trainer_.metrics().confusion_matrix();
}

std::vector<double> Network::regression_stats() const {
  Shared lock(mutex_);
  return trainer_.metrics().regression_stats();
}

std::vector<double> Network::regression_shift() const {
  Shared lock(mutex_);
  return trainer_.metrics().regression_shift();
}

double Network::roc_auc() {
  Exclusive lock(mutex_);
  return trainer_.metrics().roc_auc();
}

void Network::roc_scores(std::vector<float>* logits, std::vector<int32_t>* labels) const {
  Shared lock(mutex_);
  trainer_.metrics().read_scores(logits, labels);
}

// ---- Pruning, quantization and QAT: the model's and the trainer's, under the lock ----

void Network::set_mask(int64_t layer, const uint8_t* keep) {
  Exclusive lock(mutex_);
  model_.set_mask(layer, keep);
  invalidate_plan();
}

void Network::clear_mask(int64_t layer) {
  Exclusive lock(mutex_);
  model_.dense("clear_mask", layer).masked = false;
}

bool Network::masked(int64_t layer) const {
  Shared lock(mutex_);
  return model_.dense("masked", layer).masked;
}

void Network::set_sparse_format(int64_t layer, SparseFormat format, int64_t max_batch, int n, int m,
                                int64_t min_batch) {
  Exclusive lock(mutex_);
  model_.set_sparse_format(layer, format, max_batch, n, m, min_batch);
  invalidate_plan();
}

SparseFormat Network::sparse_format(int64_t layer) const {
  Shared lock(mutex_);
  return model_.dense("sparse_format", layer).format;
}

int64_t Network::sparse_max_batch(int64_t layer) const {
  Shared lock(mutex_);
  return model_.dense("sparse_max_batch", layer).max_batch;
}

int64_t Network::sparse_min_batch(int64_t layer) const {
  Shared lock(mutex_);
  return model_.dense("sparse_min_batch", layer).min_batch;
}

void Network::set_quantization(int64_t layer, const int8_t* w_q, const float* w_scale, bool per_channel, float in_scale,
                               int32_t in_zero) {
  Exclusive lock(mutex_);
  model_.set_quantization(layer, w_q, w_scale, per_channel, in_scale, in_zero);
  invalidate_plan();
}

void Network::clear_quantization(int64_t layer) {
  Exclusive lock(mutex_);
  model_.dense("clear_quantization", layer).quant.reset();
  invalidate_plan();
}

void Network::set_bf16(int64_t layer, bool on) {
  Exclusive lock(mutex_);
  model_.set_bf16(layer, on);
  invalidate_plan();
}

bool Network::bf16(int64_t layer) const {
  Shared lock(mutex_);
  return model_.dense("bf16", layer).bf16;
}

const QuantizedLayer* Network::quantization(int64_t layer) const {
  Shared lock(mutex_);
  return model_.dense("quantization", layer).quant.get();
}

std::pair<int64_t, int64_t> Network::dense_shape(int64_t layer) const {
  const DenseLayerState& d = model_.dense("dense_shape", layer);
  return {d.in, d.out};
}

void Network::set_fake_quantization(int64_t layer, bool per_channel, bool inputs, float momentum) {
  Exclusive lock(mutex_);
  trainer_.set_fake_quantization(layer, per_channel, inputs, momentum);
}

void Network::clear_fake_quantization(int64_t layer) {
  Exclusive lock(mutex_);
  trainer_.clear_fake_quantization(layer);
}

std::pair<double, double> Network::fake_input_range(int64_t layer) const {
  Shared lock(mutex_);
  return trainer_.fake_input_range(layer);
}

// ---- Inference: the published plan, rebuilt after a weight change ----

void Network::build_plan() const {
  // Taken out of publication first, and rebuilt in place once no prediction holds it: its
  // device memory is reused, so a warm rebuild allocates nothing.
  std::unique_ptr<InferencePlan> plan = plan_.publish(nullptr);
  if (!plan) plan = std::make_unique<InferencePlan>(backend_, model_.layers().size());
  plan->build(model_, trainer_.precision(), ++plan_generation_);
  plan_.publish(std::move(plan));
  plan_stale_.store(false, std::memory_order_release);
}

void Network::ensure_plan() const {
  while (plan_stale_.load(std::memory_order_acquire)) {
    {
      Shared lock(mutex_);
      std::lock_guard<std::mutex> guard(plan_mutex_);
      if (!plan_stale_.load(std::memory_order_acquire)) return;
      if (updates_ == 0) {
        build_plan();
        return;
      }
      // Inside a transaction: the published plan holds the whole weight set before it.
      if (plan_.current()) return;
    }
    // No plan yet: wait for the transaction's end without holding mutex_, which its
    // writes take (and plan_mutex_ is only ever taken after mutex_, never before).
    std::unique_lock<std::mutex> guard(plan_mutex_);
    updated_.wait(guard, [&] { return updates_ == 0; });
  }
}

Published<InferencePlan>::Reader Network::read_plan() const {
  for (;;) {
    ensure_plan();
    Published<InferencePlan>::Reader plan = plan_.read();
    if (plan.get()) return plan;
    // A builder has it out of publication, and the plan is still marked stale until it is
    // back: the next ensure_plan waits for that builder's locks.
  }
}

void Network::prepare() const { ensure_plan(); }

int64_t Network::inference_bytes() const { return static_cast<int64_t>(read_plan()->bytes()); }

std::unique_ptr<InferenceWorkspace> Network::acquire_workspace() const {
  if (InferenceWorkspace* ws = spare_.exchange(nullptr, std::memory_order_acquire))
    return std::unique_ptr<InferenceWorkspace>(ws);
  {
    std::lock_guard lock(pool_mutex_);
    if (!pool_.empty()) {
      auto ws = std::move(pool_.back());
      pool_.pop_back();
      return ws;
    }
  }
  return std::make_unique<InferenceWorkspace>(backend_, model_.layers().size());
}

void Network::release_workspace(std::unique_ptr<InferenceWorkspace> ws) const {
  InferenceWorkspace* empty = nullptr;
  if (spare_.compare_exchange_strong(empty, ws.get(), std::memory_order_release, std::memory_order_relaxed)) {
    static_cast<void>(ws.release());  // spare_ owns it now
    return;
  }
  std::lock_guard lock(pool_mutex_);
  pool_.push_back(std::move(ws));
}

const float* Network::forward_replayed(const InferencePlan& plan, InferenceWorkspace& ws, int64_t b) const {
  const uint16_t* input16 = plan.half_input() ? ws.input16.data() : nullptr;
  auto direct = [&] { return plan.forward(ws, ws.input.data(), b, nullptr, input16); };
  if (!graphs_usable_.load(std::memory_order_relaxed)) return direct();
  InferenceWorkspace::Graph& g = ws.graphs[b];  // a new row count's node: once per recording
  if (g.handle) {
    backend_->replay_graph(g.handle);
    return g.output;
  }
  // A row count's first pass runs directly, as a training step with a new key does: what
  // the device does once (the split-K GEMMs' workspace is allocated at its first use) is
  // done outside any capture, which would refuse it and turn graphs off for good.
  if (!g.warm) {
    g.warm = true;
    return direct();
  }
  const float* output = nullptr;
  void* graph = backend_->capture_graph([&] { output = direct(); });
  if (!graph) {
    graphs_usable_.store(false, std::memory_order_relaxed);
    return output;  // the body ran directly
  }
  g.handle = graph;
  g.output = output;
  backend_->replay_graph(graph);
  return output;
}

void Network::predict(float* out, const float* x, int64_t n, int64_t batch_size) const {
  if (batch_size < 1) throw std::invalid_argument("[predict] batch_size must be >= 1");
  // No lock: the published plan is immutable, and a builder rebuilds it only after this
  // call has let go of it.
  const Published<InferencePlan>::Reader plan = read_plan();
  std::unique_ptr<InferenceWorkspace> ws = acquire_workspace();
  // Graphs of another plan are stale, and so is the row count they were recorded at: this
  // plan's buffers (its staged input's format among them) may move below it.
  if (ws->graph_generation != plan->generation()) {
    ws->clear_graphs();
    ws->graph_generation = plan->generation();
    ws->graph_rows = 0;
  }
  const int64_t rows = n < batch_size ? n : batch_size;
  plan->reserve(*ws, rows);
  const int64_t input_dim = model_.input_dim(), out_dim = model_.output_dim();
  if (backend_->host_addressable()) {
    // Contiguous batches of the caller's x are read in place: nothing is staged.
    for (int64_t start = 0; start < n; start += batch_size) {
      const int64_t b = n - start < batch_size ? n - start : batch_size;
      plan->forward(*ws, x + start * input_dim, b, out + start * out_dim);
    }
  } else {
    // Where the plan reads the input only in 16 bits, the host rounds each batch (the
    // device's bits) and that copy alone crosses: half the bytes.
    const bool half = plan->half_input();
    const size_t values = static_cast<size_t>(rows * input_dim),
                 values16 = static_cast<size_t>(rows * half_ld(input_dim));
    if (half) {
      ws->input16.reserve(values16);
      if (ws->host_input16.size() < values16) ws->host_input16.resize(values16);
    } else {
      ws->input.reserve(values);
    }
    // More rows than the workspace's graphs were recorded at may have moved its buffers.
    if (rows > ws->graph_rows) {
      ws->clear_graphs();
      ws->graph_rows = rows;
    }
    for (int64_t start = 0; start < n; start += batch_size) {
      const int64_t b = n - start < batch_size ? n - start : batch_size;
      const size_t batch_values = static_cast<size_t>(b * input_dim);
      if (half) {  // rows half_ld apart, as every 16-bit copy (the pads not written: no GEMM reads them)
        for (int64_t i = 0; i < b; ++i)
          cpu::elementwise().round_to_half(ws->host_input16.data() + i * half_ld(input_dim),
                                           x + (start + i) * input_dim, input_dim,
                                           plan->precision() == Precision::bf16);
        backend_->copy_to_device(ws->input16.data(), ws->host_input16.data(),
                                 sizeof(uint16_t) * static_cast<size_t>(b * half_ld(input_dim)));
      } else {
        backend_->copy_to_device(ws->input.data(), x + start * input_dim, sizeof(float) * batch_values);
      }
      const float* y = forward_replayed(*plan, *ws, b);
      backend_->copy_to_host(out + start * out_dim, y, sizeof(float) * static_cast<size_t>(b * out_dim));
    }
  }
  release_workspace(std::move(ws));
}

}  // namespace customml
