#pragma once
// Defines: Backend (memory plus one method per op, on raw pointers of valid input),
// the op configuration structs, and backend_for(device).

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "activation.h"
#include "tensor.h"

namespace customml {

// A half-open range [begin, end) of a flat parameter buffer that takes no weight
// decay (biases, by default). Segments are sorted and disjoint (ops.cpp checks).
struct Segment {
  int64_t begin = 0;
  int64_t end = 0;
};

struct SgdConfig {
  float lr = 0.01f;
  float momentum = 0.0f;
  bool nesterov = false;
  float weight_decay = 0.0f;  // L2 added to the gradient, as torch.optim.SGD
};

struct AdamConfig {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  bool decoupled = false;  // AdamW: p -= lr * wd * p, instead of L2 on the gradient
  bool amsgrad = false;
  int64_t step = 1;  // 1-based count of updates including this one (bias correction)
};

// The number format a dense layer's GEMM products use: fp32 everywhere; tf32, bf16 and
// fp16 on tensor cores (operands rounded to the format, accumulation in float32, weights
// kept in float32) where a backend supports them.
enum class Precision { fp32, tf32, bf16, fp16 };

inline const char* precision_name(Precision p) {
  switch (p) {
    case Precision::fp32: return "fp32";
    case Precision::tf32: return "tf32";
    case Precision::bf16: return "bf16";
    case Precision::fp16: return "fp16";
  }
  return "?";
}

inline Precision parse_precision(const std::string& s) {
  for (Precision p : {Precision::fp32, Precision::tf32, Precision::bf16, Precision::fp16})
    if (s == precision_name(p)) return p;
  throw std::invalid_argument("precision must be fp32, tf32, bf16 or fp16, got '" + s + "'");
}

struct DenseShape {
  int64_t batch = 0, in = 0, out = 0;
  Precision precision = Precision::fp32;  // of the GEMM products
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;
  virtual bool supports(Precision p) const { return p == Precision::fp32; }

  // Memory. Where it is host-addressable (cpu, cuda-emulated) the executor reads and
  // writes device buffers directly; elsewhere it stages through copies.
  virtual bool host_addressable() const { return true; }
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* p) = 0;
  virtual void copy_to_device(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void copy_to_host(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void fill_zero(void* dst, size_t bytes) = 0;

  // x: (batch, in)  w: (in, out)  b: (out) -> y: (batch, out) = act(x w + b);
  // z: (batch, out) pre-activation, written only if non-null.
  virtual void dense_forward(float* y, float* z, const float* x, const float* w, const float* b,
                             DenseShape s, Activation act) = 0;
  // dy, y, z: (batch, out)  x: (batch, in)  w: (in, out) -> dx: (batch, in) (skipped if
  // null), dw: (in, out), db: (out). dz: (batch, out) workspace; may alias dy, which is
  // then overwritten. z is read only for activations that need it (gelu).
  virtual void dense_backward(float* dx, float* dw, float* db, float* dz, const float* dy,
                              const float* x, const float* w, const float* y, const float* z,
                              DenseShape s, Activation act) = 0;

  // logits: (batch, classes)  labels: (batch)  class_weights: (classes) or null
  // -> grad: (batch, classes) or null; returns the weighted mean loss.
  virtual double softmax_cross_entropy(float* grad, const float* logits, const int32_t* labels,
                                       const float* class_weights, int64_t batch, int64_t classes,
                                       float label_smoothing) = 0;
  // logits, targets: (n) -> grad: (n) or null; returns the mean loss.
  virtual double binary_cross_entropy_with_logits(float* grad, const float* logits,
                                                  const float* targets, int64_t n) = 0;
  // pred, target: (n) -> grad: (n) or null; returns the mean squared error.
  virtual double mse(float* grad, const float* pred, const float* target, int64_t n) = 0;
  // logits: (batch, classes)  labels: (batch) -> rows whose first maximal logit is the
  // label; with classes == 1, rows where (logit > 0) == (label != 0).
  virtual int64_t count_correct(const float* logits, const int32_t* labels, int64_t batch,
                                int64_t classes) = 0;

  // logits: (batch, k)  labels: (batch) -> counts: (classes, classes) += one per row at
  // [label, predicted], classes = k (prediction: first maximal logit) or 2 when k == 1
  // (prediction: logit > 0). Integer sums: exact in any order.
  virtual void confusion_matrix_update(int64_t* counts, const float* logits, const int32_t* labels, int64_t batch,
                                       int64_t k) = 0;
  // pred, target: (batch, outputs)  shift: (outputs) -> stats: (4, outputs) float64 += per
  // column the sums of |pred - target|, (pred - target)^2, target - shift and
  // (target - shift)^2, each term in float64, rows added in order. The shift (a typical
  // target) keeps the variance from cancelling when it is small next to the mean.
  virtual void regression_stats_update(double* stats, const float* pred, const float* target, const double* shift,
                                       int64_t batch, int64_t outputs) = 0;

  // x: (n) -> y: (n); inverted dropout, keep mask from Philox(seed, stream, index).
  // May run in place (y == x); backward is the same function applied to dy.
  virtual void dropout(float* y, const float* x, int64_t n, float rate, uint64_t seed,
                       uint64_t stream) = 0;

  // One pass over flat buffers of n elements, in place.
  virtual void sgd_update(float* param, float* velocity, const float* grad, int64_t n,
                          const Segment* no_decay, int64_t n_no_decay, const SgdConfig& c) = 0;
  virtual void adam_update(float* param, float* m, float* v, float* vmax, const float* grad,
                           int64_t n, const Segment* no_decay, int64_t n_no_decay,
                           const AdamConfig& c) = 0;
  // grad: (n), scaled in place so its L2 norm is at most max_norm; returns the norm
  // before scaling.
  virtual double clip_by_global_norm(float* grad, int64_t n, float max_norm) = 0;
  // x: (n) *= coef, each product in double then rounded (coef may be tiny or huge).
  virtual void scale(float* x, int64_t n, double coef) = 0;
  // param: (n), a Dense kernel -> grad: (n) += l1 sign(param) + 2 l2 param, skipped if
  // null; returns the penalty l1 sum |param| + l2 sum param^2 (Keras' l1_l2).
  virtual double l1_l2_penalty(float* grad, const float* param, int64_t n, float l1, float l2) = 0;
};

// Device memory of float32 (or int32) elements that grows on demand and is reused:
// the executor's activations, gradients and staging buffers.
template <class T>
class Buffer {
 public:
  explicit Buffer(Backend* backend = nullptr) : backend_(backend) {}
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : backend_(o.backend_), data_(o.data_), size_(o.size_) {
    o.data_ = nullptr;
    o.size_ = 0;
  }
  ~Buffer() {
    if (data_) backend_->deallocate(data_);
  }
  // Capacity for at least n elements; contents are not preserved when it grows.
  T* reserve(size_t n) {
    if (n > size_) {
      if (data_) backend_->deallocate(data_);
      data_ = nullptr;
      size_ = 0;
      data_ = static_cast<T*>(backend_->allocate(n * sizeof(T)));
      size_ = n;
    }
    return data_;
  }
  T* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  Backend* backend_;
  T* data_ = nullptr;
  size_t size_ = 0;
};

// The backend of a device: "cpu" always; "cuda" only in a CUDA build with a usable GPU.
Backend& backend_for(const Device& device);

// The "cuda-emulated" device (cuda/emulated_backend.cpp); throws when the build has no
// SIMT emulation.
Backend& emulated_cuda_backend();
bool simt_emulation_compiled();

// Whether the CUDA backend is built and usable, and why not; from cuda/.
bool cuda_compiled();
bool cuda_available();
std::string cuda_unavailable_reason();
Backend& cuda_backend(int index);

}  // namespace customml
