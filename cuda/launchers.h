#pragma once
// Defines: DeviceContext (a device's stream and reusable scratch) and the launcher of
// every op: host functions with the Backend op's arguments that size the grids, start
// the kernels of cuda/*.cuh through launch(), and finish reductions on the host.
// Implemented in cuda/<family>.cu; compiled by nvcc (namespace cuda) and, for the
// emulated device, by the host compiler (namespace cuda_emulated).

#include <cstdint>
#include <mutex>
#include <vector>

#include "backend.h"
#include "cuda/launch.h"

namespace customml::CUSTOMML_CUDA_NS {

struct DeviceContext {
  explicit DeviceContext(Backend* device) : memory(device), partials(device), counts(device), segments(device) {}
  Backend* memory;  // allocation and host <-> device copies
  // Every launch goes to stream, which a thread recording an inference graph redirects
  // to its capture stream for the duration (StreamRedirect): other threads' work on the
  // device keeps going to the main stream and is never swept into the graph.
  struct StreamSlot {
    Stream main = nullptr;
    StreamSlot& operator=(Stream s) {
      main = s;
      return *this;
    }
    operator Stream() const { return redirect ? redirect : main; }
    static inline thread_local Stream redirect = nullptr;
  } stream;
  // Scratch of the reductions and the optimizers' segment table, reused by every call;
  // the mutex serializes the ops that use it.
  std::mutex scratch_mutex;
  Buffer<double> partials;
  Buffer<int64_t> counts;
  Buffer<Segment> segments;
  std::vector<double> host_partials;
  std::vector<int64_t> host_counts;
  std::vector<Segment> uploaded_segments;  // what `segments` holds on the device (device_segments)
};

// Sends this thread's launches through ctx.stream to s until destroyed.
class StreamRedirect {
 public:
  explicit StreamRedirect(Stream s) { DeviceContext::StreamSlot::redirect = s; }
  ~StreamRedirect() { DeviceContext::StreamSlot::redirect = nullptr; }
  StreamRedirect(const StreamRedirect&) = delete;
  StreamRedirect& operator=(const StreamRedirect&) = delete;
};

void dense_forward(DeviceContext& ctx, float* y, float* z, const float* x, const float* w, const float* b,
                   DenseShape s, Activation act);
void dense_backward(DeviceContext& ctx, float* dx, float* dw, float* db, float* dz, const float* dy, const float* x,
                    const float* w, const float* y, const float* z, DenseShape s, Activation act);
double softmax_cross_entropy(DeviceContext& ctx, float* grad, const float* logits, const int32_t* labels,
                             const float* class_weights, const float* row_weights, int64_t batch, int64_t classes,
                             float label_smoothing);
int64_t count_correct(DeviceContext& ctx, const float* logits, const int32_t* labels, int64_t batch, int64_t classes);
void confusion_matrix_update(DeviceContext& ctx, int64_t* counts, const float* logits, const int32_t* labels,
                             int64_t batch, int64_t k);
void regression_stats_update(DeviceContext& ctx, double* stats, const float* pred, const float* target,
                             const double* shift, int64_t batch, int64_t outputs);
double binary_cross_entropy_with_logits(DeviceContext& ctx, float* grad, const float* logits, const float* targets,
                                        const float* row_weights, int64_t rows, int64_t cols);
double mse(DeviceContext& ctx, float* grad, const float* pred, const float* target, const float* row_weights,
           int64_t rows, int64_t cols);
void dropout(DeviceContext& ctx, float* y, const float* x, int64_t n, float rate, uint64_t seed, uint64_t stream);
void sgd_update(DeviceContext& ctx, float* param, float* velocity, const float* grad, int64_t n,
                const Segment* no_decay, int64_t n_no_decay, const SgdConfig& c);
void adam_update(DeviceContext& ctx, float* param, float* m, float* v, float* vmax, const float* grad, int64_t n,
                 const Segment* no_decay, int64_t n_no_decay, const AdamConfig& c);
double clip_by_global_norm(DeviceContext& ctx, float* grad, int64_t n, float max_norm);
void scale(DeviceContext& ctx, float* x, int64_t n, double coef);
double l1_l2_penalty(DeviceContext& ctx, float* grad, const float* param, int64_t n, float l1, float l2);
void feature_affine(DeviceContext& ctx, float* y, const float* x, const float* scale, const float* shift, int64_t rows,
                    int64_t cols);

void apply_mask(DeviceContext& ctx, float* param, const uint8_t* keep, int64_t n);
void quantize(DeviceContext& ctx, void* q, DType qtype, const float* x, const float* scale, const int32_t* zero,
              int64_t rows, int64_t cols, QuantAxis axis);
void dequantize(DeviceContext& ctx, float* x, const void* q, DType qtype, const float* scale, const int32_t* zero,
                int64_t rows, int64_t cols, QuantAxis axis);
void quantize_rows_dynamic(DeviceContext& ctx, uint8_t* q, float* scale, int32_t* zero, const float* x, int64_t rows,
                           int64_t cols);
size_t gemm_s8_packed_bytes(int64_t k, int64_t n);
void gemm_s8_pack(DeviceContext& ctx, void* packed, const int8_t* w, int64_t k, int64_t n);
void gemm_s8(DeviceContext& ctx, float* y_f32, uint8_t* y_u8, int32_t* y_i32, const uint8_t* a, const void* packed,
             GemmS8Shape s, const GemmS8Epilogue& e);
void sparse_dense_forward(DeviceContext& ctx, float* y, const float* x, const CsrMatrix& w, const float* b,
                          int64_t batch, Activation act);
void nm_dense_forward(DeviceContext& ctx, float* y, const float* x, const NmMatrix& w, const float* b, int64_t batch,
                      Activation act);

// Sums ctx.partials[0, blocks) on the host in block order (deterministic).
double sum_partials(DeviceContext& ctx, unsigned blocks);
// The weighted losses (cuda/loss_weights.cu). total (1) = sum_i class_weights[labels_i]
// row_weights[i] (a null factor is 1), launched on ctx.stream; callers hold scratch_mutex.
void loss_weight_total(DeviceContext& ctx, double* total, const int32_t* labels, const float* class_weights,
                       const float* row_weights, int64_t batch);
// partials[0, blocks) hold a pointwise loss's per-block sums of w_i l_ij and
// partials[blocks] the total weight W: returns sum / (cols W), or 0 when W == 0.
double weighted_mean_partials(DeviceContext& ctx, unsigned blocks, int64_t cols);
// Copies the no-decay table to the device; returns its device address.
const Segment* device_segments(DeviceContext& ctx, const Segment* no_decay, int64_t n_no_decay);

}  // namespace customml::CUSTOMML_CUDA_NS
