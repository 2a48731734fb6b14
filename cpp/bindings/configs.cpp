// The configuration structs of network.h and backend.h as Python classes, so that
// Network's constructor and compile take them whole instead of dicts and flat keywords.
// Each constructor only parses the names (kind, activation) and fills the fields, with
// the C++ defaults; Network checks the values (ValueError naming compile or the layer),
// where it always has.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "activation.h"
#include "backend.h"
#include "bindings/bindings.h"
#include "network.h"

namespace py = pybind11;

namespace customml {
namespace {

const char* layer_kind_name(LayerSpec::Kind k) {
  switch (k) {
    case LayerSpec::Kind::dense: return "dense";
    case LayerSpec::Kind::dropout: return "dropout";
    case LayerSpec::Kind::affine: return "affine";
  }
  return "?";
}

LayerSpec::Kind parse_layer_kind(const std::string& name) {
  for (LayerSpec::Kind k : {LayerSpec::Kind::dense, LayerSpec::Kind::dropout, LayerSpec::Kind::affine})
    if (name == layer_kind_name(k)) return k;
  throw std::invalid_argument("unknown layer kind '" + name + "'");
}

}  // namespace

void bind_configs(py::module_& m) {
  const LayerSpec layer;
  py::class_<LayerSpec>(m, "LayerSpec",
                        "One layer of a Network: 'dense' (units, activation, l1, l2, trainable), 'dropout' (rate) or "
                        "'affine' (scale, shift: the per-feature map of the preprocessing layers, first in a model); "
                        "the fields of the other kinds are ignored.")
      .def(py::init([](const std::string& kind, int64_t units, const std::string& activation, float rate, float l1,
                       float l2, bool trainable, std::vector<float> scale, std::vector<float> shift) {
             LayerSpec s;
             s.kind = parse_layer_kind(kind);
             s.units = units;
             s.activation = parse_activation(activation);
             s.rate = rate;
             s.l1 = l1;
             s.l2 = l2;
             s.trainable = trainable;
             s.scale = std::move(scale);
             s.shift = std::move(shift);
             return s;
           }),
           py::arg("kind"), py::kw_only(), py::arg("units") = layer.units,
           py::arg("activation") = activation_name(layer.activation), py::arg("rate") = layer.rate,
           py::arg("l1") = layer.l1, py::arg("l2") = layer.l2, py::arg("trainable") = layer.trainable,
           py::arg("scale") = layer.scale, py::arg("shift") = layer.shift)
      .def_property_readonly("kind", [](const LayerSpec& s) { return layer_kind_name(s.kind); })
      .def_readonly("units", &LayerSpec::units)
      .def_property_readonly("activation", [](const LayerSpec& s) { return activation_name(s.activation); })
      .def_readonly("rate", &LayerSpec::rate)
      .def_readonly("l1", &LayerSpec::l1)
      .def_readonly("l2", &LayerSpec::l2)
      .def_readonly("trainable", &LayerSpec::trainable)
      .def_readonly("scale", &LayerSpec::scale)
      .def_readonly("shift", &LayerSpec::shift);

  const LossConfig loss;
  py::class_<LossConfig>(m, "LossConfig",
                         "The loss a Network trains with: 'softmax_cross_entropy' (with label_smoothing and "
                         "class_weights, one per class or empty), 'binary_cross_entropy', 'mse' or 'distillation' "
                         "(temperature, alpha; trained on a teacher's logits: customml.distill).")
      .def(py::init([](const std::string& kind, float label_smoothing, std::vector<float> class_weights,
                       float temperature, float alpha) {
             return LossConfig{parse_loss(kind), label_smoothing, std::move(class_weights), temperature, alpha};
           }),
           py::arg("kind"), py::kw_only(), py::arg("label_smoothing") = loss.label_smoothing,
           py::arg("class_weights") = loss.class_weights, py::arg("temperature") = loss.temperature,
           py::arg("alpha") = loss.alpha)
      .def_property_readonly("kind", [](const LossConfig& c) { return loss_name(c.kind); })
      .def_readonly("label_smoothing", &LossConfig::label_smoothing)
      .def_readonly("class_weights", &LossConfig::class_weights)
      .def_readonly("temperature", &LossConfig::temperature)
      .def_readonly("alpha", &LossConfig::alpha);

  const SgdConfig sgd;
  py::class_<SgdConfig>(m, "SgdConfig", "SGD's update (torch.optim.SGD, dampening 0); as sgd_update takes it.")
      .def(py::init([](float lr, float momentum, bool nesterov, float weight_decay) {
             return SgdConfig{lr, momentum, nesterov, weight_decay};
           }),
           py::kw_only(), py::arg("lr") = sgd.lr, py::arg("momentum") = sgd.momentum,
           py::arg("nesterov") = sgd.nesterov, py::arg("weight_decay") = sgd.weight_decay)
      .def_readonly("lr", &SgdConfig::lr)
      .def_readonly("momentum", &SgdConfig::momentum)
      .def_readonly("nesterov", &SgdConfig::nesterov)
      .def_readonly("weight_decay", &SgdConfig::weight_decay);

  const AdamConfig adam;
  py::class_<AdamConfig>(m, "AdamConfig",
                         "Adam's update (decoupled=True: AdamW); as adam_update takes it. In an OptimizerConfig, "
                         "step is the executor's count, not this one.")
      .def(py::init(
               [](float lr, float beta1, float beta2, float eps, float weight_decay, bool decoupled, bool amsgrad,
                  int64_t step) { return AdamConfig{lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad, step}; }),
           py::kw_only(), py::arg("lr") = adam.lr, py::arg("beta1") = adam.beta1, py::arg("beta2") = adam.beta2,
           py::arg("eps") = adam.eps, py::arg("weight_decay") = adam.weight_decay,
           py::arg("decoupled") = adam.decoupled, py::arg("amsgrad") = adam.amsgrad, py::arg("step") = adam.step)
      .def_readonly("lr", &AdamConfig::lr)
      .def_readonly("beta1", &AdamConfig::beta1)
      .def_readonly("beta2", &AdamConfig::beta2)
      .def_readonly("eps", &AdamConfig::eps)
      .def_readonly("weight_decay", &AdamConfig::weight_decay)
      .def_readonly("decoupled", &AdamConfig::decoupled)
      .def_readonly("amsgrad", &AdamConfig::amsgrad)
      .def_readonly("step", &AdamConfig::step);

  // The update's type says the kind, so a config cannot name one optimizer and carry
  // another's settings.
  py::class_<OptimizerConfig>(m, "OptimizerConfig",
                              "The optimizer a Network trains with: an SgdConfig or AdamConfig update, and "
                              "global-norm gradient clipping at clip_norm (0: off).")
      .def(py::init([](const SgdConfig& update, float clip_norm) {
             OptimizerConfig c;
             c.kind = OptimizerConfig::Kind::sgd;
             c.sgd = update;
             c.clip_norm = clip_norm;
             return c;
           }),
           py::arg("update").none(false), py::kw_only(), py::arg("clip_norm") = OptimizerConfig{}.clip_norm)
      .def(py::init([](const AdamConfig& update, float clip_norm) {
             OptimizerConfig c;
             c.kind = OptimizerConfig::Kind::adam;
             c.adam = update;
             c.clip_norm = clip_norm;
             return c;
           }),
           py::arg("update").none(false), py::kw_only(), py::arg("clip_norm") = OptimizerConfig{}.clip_norm)
      .def_property_readonly(
          "kind", [](const OptimizerConfig& c) { return c.kind == OptimizerConfig::Kind::sgd ? "sgd" : "adam"; })
      .def_property_readonly("update",
                             [](const OptimizerConfig& c) -> py::object {
                               if (c.kind == OptimizerConfig::Kind::sgd) return py::cast(c.sgd);
                               return py::cast(c.adam);
                             })
      .def_readonly("clip_norm", &OptimizerConfig::clip_norm);

  const MetricStats stats;
  py::class_<MetricStats>(m, "MetricStats",
                          "The statistics a Network accumulates per batch for the metrics computed from them: "
                          "confusion (classification's confusion matrix), regression (mse's per-output sums) and "
                          "scores (a binary classifier's scores, for ROC AUC).")
      .def(py::init([](bool confusion, bool regression, bool scores) {
             return MetricStats{confusion, regression, scores};
           }),
           py::kw_only(), py::arg("confusion") = stats.confusion, py::arg("regression") = stats.regression,
           py::arg("scores") = stats.scores)
      .def_readonly("confusion", &MetricStats::confusion)
      .def_readonly("regression", &MetricStats::regression)
      .def_readonly("scores", &MetricStats::scores);
}

}  // namespace customml
