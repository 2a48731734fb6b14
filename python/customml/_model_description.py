"""A model as plain data: ``ModelDescription`` holds what a model file holds (the
architecture, the compile configuration, the weights with their pruning and int8 forms,
and optionally the optimizer and callback state). ``describe`` takes one from a model;
``_model_file`` writes one to bytes and reads one back; ``Sequential._from_description``
builds a model from one. So the file format never touches a model, and neither the file
modules nor this one import ``models``.

The architecture and the training configuration are the JSON objects the file stores
(see ``customml.io``); the arrays are NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Type

import numpy as np

from . import losses as losses_mod
from . import optimizers as optimizers_mod
from . import regularizers as regularizers_mod
from . import schedules as schedules_mod
from .layers import Dense, Dropout, Layer, Normalization, Rescaling

# The classes a training configuration may name.
OPTIMIZERS: Dict[str, Type[optimizers_mod.Optimizer]] = {
    "SGD": optimizers_mod.SGD,
    "Adam": optimizers_mod.Adam,
    "AdamW": optimizers_mod.AdamW,
}
LOSSES: Dict[str, Type[losses_mod.Loss]] = {
    "SoftmaxCrossEntropy": losses_mod.SoftmaxCrossEntropy,
    "BinaryCrossEntropy": losses_mod.BinaryCrossEntropy,
    "MeanSquaredError": losses_mod.MeanSquaredError,
    "Distillation": losses_mod.Distillation,
}
_SLOTS = {"adam": ("m", "v"), "adam_amsgrad": ("m", "v", "vmax"), "sgd_momentum": ("velocity",), "sgd": ()}


@dataclass
class Int8:
    """An int8 Dense layer's encoding, as ``Network.set_quantization`` takes it."""

    w_q: np.ndarray  # int8 (in, out), codes in [-127, 127]
    w_scale: np.ndarray  # float32 (out,) per channel or (1,) per tensor
    in_scale: float  # the static input scale; 0 for dynamic (per-row) inputs
    in_zero: int  # the static input zero point, in [0, 255]


@dataclass
class DenseWeights:
    """A Dense layer's weights as a file stores them: the float kernel, or for an int8
    layer its encoding; a pruned layer's keep mask; its inference format."""

    bias: np.ndarray  # float32 (out,)
    kernel: Optional[np.ndarray] = None  # float32 (in, out); None for an int8 layer
    keep: Optional[np.ndarray] = None  # bool (in, out): the pruning mask of a masked layer
    int8: Optional[Int8] = None
    # The inference format and the batch sizes it runs (customml.prune), and (n, m) for a
    # layer pruned N:M.
    format: str = "dense"
    min_batch: int = 1
    max_batch: int = 0
    n_m: Optional[Tuple[int, int]] = None
    # A bf16 layer (customml.quantize.bf16): kernel holds bf16 values, stored as BF16.
    bf16: bool = False


@dataclass
class OptimizerState:
    """What resuming a fit needs besides the weights."""

    step: int
    epochs_trained: int
    # slot name -> (layer index, "kernel" | "bias") -> float32 array shaped as the parameter
    slots: Dict[str, Dict[Tuple[int, str], np.ndarray]]
    loss_scale: Optional[Tuple[float, int]] = None  # fp16: the dynamic loss scale and its good steps


@dataclass
class ModelDescription:
    architecture: dict  # {"name", "input_dim", "seed", "layers": [layer spec, ...]}
    training: Optional[dict]  # the compile configuration; None for an uncompiled model
    weights: Dict[int, DenseWeights]  # by Dense layer index (an index into architecture["layers"])
    optimizer: Optional[OptimizerState] = None
    callbacks: Dict[str, dict] = field(default_factory=dict)  # resumable callback states, by state_key()

    def layers(self) -> List[Layer]:
        """New layer objects for the architecture."""
        layers: List[Layer] = []
        for spec in self.architecture["layers"]:
            if spec["kind"] == "dense":
                reg = spec.get("kernel_regularizer")
                layers.append(
                    Dense(
                        spec["units"],
                        activation=spec["activation"],
                        kernel_initializer=spec["kernel_initializer"],
                        kernel_regularizer=regularizers_mod.L1L2(**reg) if reg else None,
                        name=spec["name"],
                    )
                )
                layers[-1].trainable = spec.get("trainable", True)
            elif spec["kind"] == "normalization":
                layers.append(Normalization(spec["mean"], spec["variance"], name=spec["name"]))
            elif spec["kind"] == "rescaling":
                layers.append(Rescaling(spec["scale"], spec["offset"], name=spec["name"]))
            else:
                layers.append(Dropout(spec["rate"], name=spec["name"]))
        return layers

    def compile_args(self) -> Optional[dict]:
        """``Sequential.compile``'s arguments (new optimizer and loss objects), or None for
        an uncompiled model."""
        t = self.training
        if t is None:
            return None
        opt_config = dict(t["optimizer"]["config"])
        if isinstance(opt_config["learning_rate"], dict):
            lr = opt_config["learning_rate"]
            opt_config["learning_rate"] = schedules_mod.get(lr["class"], lr["config"])
        return {
            "optimizer": OPTIMIZERS[t["optimizer"]["class"]](**opt_config),
            "loss": LOSSES[t["loss"]["class"]](**t["loss"]["config"]),
            "metrics": t["metrics"],
            "precision": t.get("precision", "fp32"),
        }

    def mismatch(self, model) -> Optional[str]:
        """What keeps this description's weights from fitting ``model`` (its layer kinds,
        units and, when built, input size), or None."""
        layers = self.architecture["layers"]
        if len(layers) != len(model.layers):
            return f"the file has {len(layers)} layers, the model {len(model.layers)}"
        if model.input_dim is not None and model.input_dim != self.architecture["input_dim"]:
            return f"the file's input size is {self.architecture['input_dim']}, the model's {model.input_dim}"
        for i, (spec, layer) in enumerate(zip(layers, model.layers)):
            mine = ("dense", layer.units) if isinstance(layer, Dense) else (layer._kind, 0)
            if spec["kind"] != mine[0] or (spec["kind"] == "dense" and spec["units"] != mine[1]):
                theirs = f"Dense({spec['units']})" if spec["kind"] == "dense" else spec["kind"].capitalize()
                ours = f"Dense({mine[1]})" if mine[0] == "dense" else mine[0].capitalize()
                return f"layer {i} is {theirs} in the file but {ours} in the model"
        return None


def slot_names(training: Optional[dict]) -> Tuple[str, ...]:
    """The optimizer state slots, in the executor's order, for a training configuration."""
    if training is None:
        return ()
    opt = training["optimizer"]
    if opt["class"] == "SGD":
        return _SLOTS["sgd_momentum" if opt["config"]["momentum"] != 0.0 else "sgd"]
    return _SLOTS["adam_amsgrad" if opt["config"]["amsgrad"] else "adam"]


def param_table(arch: dict) -> List[Tuple[str, int, Tuple[int, ...]]]:
    """(name, layer index, shape) of each float parameter of the executor, in file order
    (the optimizer state's tensors)."""
    table: List[Tuple[str, int, Tuple[int, ...]]]
    table, width = [], arch["input_dim"]
    for i, spec in enumerate(arch["layers"]):
        if spec["kind"] == "dense":
            table.append((f"layers.{i}.kernel", i, (width, spec["units"])))
            table.append((f"layers.{i}.bias", i, (spec["units"],)))
            width = spec["units"]
    return table


# ---------------------------------------------------------------------------------------
# A model's description
# ---------------------------------------------------------------------------------------


def describe(model, include_optimizer: bool = False) -> ModelDescription:
    """The description of a built model (its weights read from the executor); with
    ``include_optimizer`` also the optimizer state, the step count, the epochs trained and
    the last fit's callback states."""
    if model._net is None:
        raise ValueError("[save] the model is not built: give Sequential input_dim or call fit/predict first")
    net = model._net
    arch = _architecture(model)
    training = _training(model)
    weights = {}
    width = model.input_dim
    for i, layer in enumerate(model.layers):
        if not isinstance(layer, Dense):
            continue
        bias = net.read_params(net.bias_offsets[i], layer.units)
        q = net.quantization(i)
        if q is not None:
            # An int8 layer keeps no float kernel, mask or sparse format: its codes hold the
            # pruned zeros, inference runs it in int8, and a quantized model does not train.
            weights[i] = DenseWeights(bias, int8=Int8(q["w_q"], q["w_scale"], q["in_scale"], q["in_zero"]))
        else:
            fmt, max_batch = net.sparse_format(i)
            weights[i] = DenseWeights(
                bias,
                kernel=net.read_params(net.weight_offsets[i], width * layer.units).reshape(width, layer.units),
                keep=model._masks.get(i),
                format=fmt,
                min_batch=int(net.sparse_min_batch(i)),
                max_batch=int(max_batch),
                n_m=model._nm.get(i),
                bf16=bool(net.bf16(i)),
            )
        width = layer.units
    desc = ModelDescription(arch, training, weights)
    if not include_optimizer:
        return desc
    desc.callbacks = _callbacks_state(model)
    if training is None or not net.compiled:
        raise ValueError("[save] include_optimizer=True needs a compiled model (model.compile(...))")
    slots = slot_names(training)
    if len(slots) != net.state_slots:  # the executor and the configuration must agree
        raise RuntimeError(f"[save] the executor has {net.state_slots} optimizer state slots, expected {len(slots)}")
    arrays: Dict[str, Dict[Tuple[int, str], np.ndarray]] = {}
    for slot_index, slot in enumerate(slots):
        arrays[slot] = {}
        for name, i, shape in param_table(arch):
            kernel = name.endswith("kernel")
            offset = (net.weight_offsets if kernel else net.bias_offsets)[i]
            arrays[slot][(i, "kernel" if kernel else "bias")] = net.read_state(
                slot_index, offset, int(np.prod(shape))
            ).reshape(shape)
    loss_scale = (float(net.loss_scale), int(net.loss_scale_good_steps)) if net.precision == "fp16" else None
    desc.optimizer = OptimizerState(int(net.step), int(model._epoch), arrays, loss_scale)
    return desc


def _architecture(model) -> dict:
    layers: List[Dict[str, Any]] = []
    for layer in model.layers:
        if isinstance(layer, Dense):
            spec: Dict[str, Any] = {
                "kind": "dense",
                "name": layer.name,
                "units": layer.units,
                "activation": layer.activation,
                "kernel_initializer": layer.kernel_initializer,
            }
            # Written only when set, so a model without one writes what version 1 wrote.
            if layer.kernel_regularizer is not None:
                spec["kernel_regularizer"] = layer.kernel_regularizer.get_config()
            if not layer.trainable:
                spec["trainable"] = False
            if model._net is not None and model._net.bf16(layer._index):
                spec["kernel_dtype"] = "bf16"
            q = model._net.quantization(layer._index) if model._net is not None else None
            if q is not None:
                spec["quantization"] = {
                    "per_channel": bool(q["w_scale"].shape[0] == layer.units and layer.units > 1),
                    "input": "static" if q["in_scale"] > 0 else "dynamic",
                }
            layers.append(spec)
        elif isinstance(layer, Dropout):
            layers.append({"kind": "dropout", "name": layer.name, "rate": layer.rate})
        elif isinstance(layer, Normalization):
            # float64 statistics as JSON numbers: repr round-trips them exactly.
            layers.append(
                {
                    "kind": "normalization",
                    "name": layer.name,
                    "mean": None if layer.mean is None else layer.mean.tolist(),
                    "variance": None if layer.variance is None else layer.variance.tolist(),
                }
            )
        elif isinstance(layer, Rescaling):
            layers.append({"kind": "rescaling", "name": layer.name, "scale": layer.scale, "offset": layer.offset})
        else:
            raise ValueError(f"[save] cannot save layer {layer.name!r} of type {type(layer).__name__}")
    return {"name": model.name, "input_dim": model.input_dim, "seed": model.seed, "layers": layers}


def _training(model) -> Optional[dict]:
    opt, loss = model._optimizer, model._loss
    if opt is None or loss is None:
        return None
    name = type(opt).__name__
    if OPTIMIZERS.get(name) is not type(opt):
        raise ValueError(f"[save] cannot save optimizer of type {name}; expected one of {', '.join(OPTIMIZERS)}")
    config: Dict[str, Any]
    if isinstance(opt, optimizers_mod.SGD):
        config = {
            "learning_rate": opt.learning_rate,
            "momentum": opt.momentum,
            "nesterov": opt.nesterov,
            "weight_decay": opt.weight_decay,
        }
    else:
        assert isinstance(opt, optimizers_mod.Adam)  # AdamW included: OPTIMIZERS holds SGD, Adam, AdamW
        config = {
            "learning_rate": opt.learning_rate,
            "beta_1": opt.beta_1,
            "beta_2": opt.beta_2,
            "epsilon": opt.epsilon,
            "weight_decay": opt.weight_decay,
            "amsgrad": opt.amsgrad,
        }
    if isinstance(opt.learning_rate, schedules_mod.LearningRateSchedule):
        schedule = opt.learning_rate
        if schedules_mod._CLASSES.get(type(schedule).__name__) is not type(schedule):
            raise ValueError(
                f"[save] cannot save learning-rate schedule of type {type(schedule).__name__}; "
                f"expected one of {', '.join(schedules_mod._CLASSES)}"
            )
        config["learning_rate"] = {"class": type(schedule).__name__, "config": schedule.get_config()}
    config["clipnorm"] = opt.clipnorm
    loss_name = type(loss).__name__
    if LOSSES.get(loss_name) is not type(loss):
        raise ValueError(f"[save] cannot save loss of type {loss_name}; expected one of {', '.join(LOSSES)}")
    loss_config = {}
    if isinstance(loss, losses_mod.SoftmaxCrossEntropy):
        loss_config = {"label_smoothing": loss.label_smoothing, "class_weights": loss.class_weights}
    elif isinstance(loss, losses_mod.Distillation):
        loss_config = {"temperature": loss.temperature, "alpha": loss.alpha}
    training = {
        "optimizer": {"class": name, "config": config},
        "loss": {"class": loss_name, "config": loss_config},
        "metrics": list(model._metrics),
    }
    # Written only when not the default, so fp32 models' files read as before it existed.
    if model._precision != "fp32":
        training["precision"] = model._precision
    return training


def _callbacks_state(model) -> Dict[str, dict]:
    """The resumable states of the last fit's callbacks, by state_key()."""
    states = {}
    for cb in model._callbacks:
        state = cb.get_state()
        if state is not None:
            states[cb.state_key()] = state
    return states
