// The C API (include/customml/customml.h): a model file read by the one reader
// (model_file.h) becomes a Network as customml.load builds it (the same layers, weights,
// masks, sparse formats, int8 layers and precision, in the same order), so cml_predict
// runs the same plan as Python's predict and returns the same bits. Every C++ exception
// stops at this boundary and becomes a status and a thread-local message.

#include "customml/customml.h"

#include <cmath>
#include <new>
#include <string>

#include "cpu/thread_pool.h"
#include "model_file.h"
#include "network.h"

#ifndef CUSTOMML_VERSION
#define CUSTOMML_VERSION "unknown"
#endif

struct cml_model {
  std::unique_ptr<customml::Network> net;
  enum class Proba { none, softmax, sigmoid } proba = Proba::none;
};

namespace customml {
namespace {

thread_local std::string last_error;

// Python's predict default: the plan's sparse formats depend on the batch's rows, so the
// C API splits batches as Python does.
constexpr int64_t kPredictBatch = 1024;

cml_status fail(cml_status status, const std::string& message) {
  last_error = message;
  return status;
}

// Runs body, turning any exception into a status; load errors are the file's.
template <class Body>
cml_status guarded(cml_status invalid, Body&& body) {
  try {
    return body();
  } catch (const ModelFileIoError& e) {
    return fail(CML_IO_ERROR, e.what());
  } catch (const std::invalid_argument& e) {  // ModelFileError included
    return fail(invalid, e.what());
  } catch (const std::bad_alloc&) {
    return fail(CML_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return fail(CML_INTERNAL, e.what());
  } catch (...) {
    return fail(CML_INTERNAL, "unknown C++ exception");
  }
}

[[noreturn]] void bad_config(const ModelFile& f, const std::string& message) {
  throw ModelFileError(f.where + ": invalid model configuration: " + message);
}

// The layers as Python's layer classes describe them to the executor (layers.py, _spec).
std::vector<LayerSpec> layer_specs(const ModelFile& f) {
  std::vector<LayerSpec> specs;
  const Json& layers = f.architecture["layers"];
  for (size_t i = 0; i < layers.size(); ++i) {
    const Json& l = layers[i];
    const std::string kind = l["kind"].get<std::string>();
    LayerSpec s;
    if (kind == "dense") {
      s.kind = LayerSpec::Kind::dense;
      s.units = l["units"].get<int64_t>();
      const std::string act = l["activation"].is_string() ? l["activation"].get<std::string>() : "?";
      try {
        s.activation = parse_activation(act);
      } catch (const std::invalid_argument& e) {
        bad_config(f, "layer " + std::to_string(i) + ": " + e.what());
      }
      if (l.contains("trainable")) s.trainable = l["trainable"].get<bool>();
    } else if (kind == "dropout") {
      s.kind = LayerSpec::Kind::dropout;
      const double rate = l["rate"].is_number() ? l["rate"].get<double>() : -1.0;
      if (!(rate >= 0.0 && rate < 1.0))
        bad_config(f, "layer " + std::to_string(i) + ": Dropout rate must be in [0, 1)");
      s.rate = static_cast<float>(rate);
    } else {
      s.kind = LayerSpec::Kind::affine;
      const size_t n = static_cast<size_t>(f.input_dim);
      s.scale.assign(n, 1.0f);
      s.shift.assign(n, 0.0f);
      if (kind == "rescaling") {
        s.scale.assign(n, static_cast<float>(l["scale"].get<double>()));
        s.shift.assign(n, static_cast<float>(l["offset"].get<double>()));
      } else if (!l["mean"].is_null()) {
        // Normalization._affine: scale = fl32(1 / max(sqrt(var), 1e-7)) in float64, then
        // shift = -(fl32(mean) * scale) in float32.
        for (size_t k = 0; k < n; ++k) {
          const double var = l["variance"][k].get<double>(), mean = l["mean"][k].get<double>();
          if (!(std::isfinite(mean) && std::isfinite(var) && var >= 0))
            bad_config(f, "layer " + std::to_string(i) +
                              ": Normalization mean must be finite and variance finite "
                              "and >= 0");
          s.scale[k] = static_cast<float>(1.0 / std::max(std::sqrt(var), 1e-7));
          s.shift[k] = -(static_cast<float>(mean) * s.scale[k]);
        }
      }
    }
    specs.push_back(std::move(s));
  }
  return specs;
}

cml_model* build(const ModelFile& f) {
  auto model = std::make_unique<cml_model>();
  model->net = std::make_unique<Network>(f.input_dim, layer_specs(f), Device{});
  Network& net = *model->net;
  if (!f.training.is_null()) {
    // Only the precision of the Dense products reaches predict; the loss decides
    // predict_proba.
    const std::string loss = f.training["loss"]["class"].get<std::string>();
    LossConfig lc;
    lc.kind = loss == "SoftmaxCrossEntropy"  ? LossKind::softmax_cross_entropy
              : loss == "BinaryCrossEntropy" ? LossKind::binary_cross_entropy
              : loss == "Distillation"       ? LossKind::distillation
                                             : LossKind::mse;
    // As Loss.classification: every loss but MSE; binary cross-entropy takes the sigmoid.
    model->proba = lc.kind == LossKind::mse                    ? cml_model::Proba::none
                   : lc.kind == LossKind::binary_cross_entropy ? cml_model::Proba::sigmoid
                                                               : cml_model::Proba::softmax;
    const Precision precision = f.training.contains("precision")
                                    ? parse_precision(f.training["precision"].get<std::string>())
                                    : Precision::fp32;
    try {
      net.compile(lc, OptimizerConfig{}, precision);
    } catch (const std::invalid_argument& e) {
      bad_config(f, e.what());
    }
  }
  // As Sequential._restore: weights (bf16 layers marked first), then masks, then formats,
  // then int8 layers.
  for (const auto& [i, d] : f.dense) {
    if (!d.int8) {
      net.set_bf16(i, d.bf16);
      net.write_params(d.kernel.data(), net.weight_offsets()[i], d.in * d.out);
    }
    net.write_params(d.bias.data(), net.bias_offsets()[i], d.out);
  }
  for (const auto& [i, d] : f.dense)
    if (!d.keep.empty()) net.set_mask(i, d.keep.data());
  for (const auto& [i, d] : f.dense)
    net.set_sparse_format(i, parse_sparse_format(d.format), d.max_batch, d.nm_n, d.nm_m, d.min_batch);
  for (const auto& [i, d] : f.dense)
    if (d.int8) net.set_quantization(i, d.w_q.data(), d.w_scale.data(), d.per_channel, d.in_scale, d.in_zero);
  net.prepare();
  return model.release();
}

cml_status predict(const char* op, const cml_model* model, const float* x, int64_t rows, int64_t cols, float* y,
                   int64_t y_len, bool proba) {
  // No std::string unless a call fails: a valid call allocates nothing.
  const auto at = [op] { return std::string("[") + op + "] "; };
  if (model == nullptr) return fail(CML_INVALID_ARGUMENT, at() + "model is NULL");
  if (rows < 0) return fail(CML_INVALID_ARGUMENT, at() + "rows must be >= 0, got " + std::to_string(rows));
  const Network& net = *model->net;
  if (cols != net.input_dim())
    return fail(CML_INVALID_ARGUMENT, at() + "cols is " + std::to_string(cols) + ", the model's input dimension is " +
                                          std::to_string(net.input_dim()));
  if (proba && model->proba == cml_model::Proba::none)
    return fail(CML_INVALID_ARGUMENT, at() + "the model was not compiled with a classification loss");
  if (rows == 0) return CML_OK;
  if (x == nullptr) return fail(CML_INVALID_ARGUMENT, at() + "x is NULL");
  if (y == nullptr) return fail(CML_INVALID_ARGUMENT, at() + "y is NULL");
  const int64_t out = net.output_dim();
  if (rows > INT64_MAX / std::max(out, cols))
    return fail(CML_INVALID_ARGUMENT, at() + "rows " + std::to_string(rows) + " is too large");
  if (y_len < rows * out)
    return fail(CML_INVALID_ARGUMENT, at() + "y_len is " + std::to_string(y_len) + ", the output needs " +
                                          std::to_string(rows * out) + " floats (rows x " + std::to_string(out) + ")");
  return guarded(CML_INVALID_ARGUMENT, [&] {
    net.predict(y, x, rows, kPredictBatch);
    if (proba && model->proba == cml_model::Proba::softmax) backend_for(Device{}).softmax(y, y, rows, out);
    if (proba && model->proba == cml_model::Proba::sigmoid) backend_for(Device{}).sigmoid(y, y, rows * out);
    return CML_OK;
  });
}

}  // namespace
}  // namespace customml

using namespace customml;

extern "C" {

const char* cml_version(void) { return CUSTOMML_VERSION; }

const char* cml_last_error(void) { return last_error.c_str(); }

cml_status cml_model_load(const char* path, cml_model** out) {
  if (out == nullptr) return fail(CML_INVALID_ARGUMENT, "[cml_model_load] out is NULL");
  *out = nullptr;
  if (path == nullptr) return fail(CML_INVALID_ARGUMENT, "[cml_model_load] path is NULL");
  return guarded(CML_BAD_FILE, [&] {
    *out = build(read_model_file(path));
    return CML_OK;
  });
}

cml_status cml_model_load_from_memory(const void* data, size_t size, cml_model** out) {
  if (out == nullptr) return fail(CML_INVALID_ARGUMENT, "[cml_model_load_from_memory] out is NULL");
  *out = nullptr;
  if (data == nullptr && size > 0) return fail(CML_INVALID_ARGUMENT, "[cml_model_load_from_memory] data is NULL");
  return guarded(CML_BAD_FILE, [&] {
    const uint8_t* bytes = static_cast<const uint8_t*>(data);
    *out = build(parse_model_file(std::vector<uint8_t>(bytes, bytes + size), "<memory>"));
    return CML_OK;
  });
}

void cml_model_free(cml_model* model) { delete model; }

int64_t cml_model_input_dim(const cml_model* model) { return model ? model->net->input_dim() : -1; }

int64_t cml_model_output_dim(const cml_model* model) { return model ? model->net->output_dim() : -1; }

cml_status cml_predict(const cml_model* model, const float* x, int64_t rows, int64_t cols, float* y, int64_t y_len) {
  return predict("cml_predict", model, x, rows, cols, y, y_len, false);
}

cml_status cml_predict_proba(const cml_model* model, const float* x, int64_t rows, int64_t cols, float* y,
                             int64_t y_len) {
  return predict("cml_predict_proba", model, x, rows, cols, y, y_len, true);
}

cml_status cml_set_num_threads(int threads) {
  return guarded(CML_INVALID_ARGUMENT, [&] {
    cpu::ThreadPool::instance().set_num_threads(threads);
    return CML_OK;
  });
}

}  // extern "C"
