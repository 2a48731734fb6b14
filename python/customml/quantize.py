"""Post-training int8 quantization of a Sequential model (issue #6).

``int8(model, calibration=x)`` returns a new model whose Dense layers run through the
executor's int8 plan (``Network.set_quantization``): weights symmetric int8 per output
channel (or per tensor), codes in [-127, 127] by round half to even; layer inputs
asymmetric uint8, either static (one scale and zero point per layer, chosen here from
the calibration data by one of four methods) or dynamic (per row at run time). A code q
stands for scale * (q - zero), as ONNX QuantizeLinear.

Activation ranges come from the float model's own outputs: a truncated copy of the model
(its first layers, same weights) predicts the calibration data, so every Dense layer's
input distribution is what the executor computes, activation functions included, and
dropout is the identity as at inference. The methods choose [lo, hi] (always containing
0, so that zero is exact):

- ``minmax``: the observed range;
- ``percentile``: each tail clipped at the ``percentile``-th percentile of its side;
- ``mse``: the range, shrunk by a common factor, that minimizes the expected squared
  quantization error over a ``num_bins`` histogram;
- ``entropy``: TensorRT's calibration: the threshold on a ``num_bins`` histogram of ``|x|``
  whose quantized distribution is closest to the original in KL divergence.

``max_accuracy_drop`` (a fraction: 0.005 is half a percentage point) measures float and
int8 accuracy on ``validation`` and returns layers to float32, one at a time, until the
drop is within the budget. The returned model carries ``quantization_report``.

A pruned model's masked layers are timed both ways (``pruned="measure"``, the default): the
layer alone as dense int8 and as sparse float32 (dense float32 where the sparse kernel loses,
as ``prune.choose_formats`` decides) at ``batch_sizes``; a layer whose float32 form is faster
at more of them stays float32 and sparse, keeping its mask, its format and its batch range
(``pruned="int8"`` quantizes every layer).

``qat(model, x, y)`` fine-tunes a copy with fake quantization in the executor's training
forward pass (Network.set_fake_quantization: the straight-through estimator) and returns
``int8`` of the result.

``bf16(model)`` returns a new model whose Dense kernels are bfloat16 (Network.set_bf16).
"""

from __future__ import annotations

import copy
import math
import numbers
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _checks, _formats, io, ops
from ._calibration import RANGES as _RANGES
from ._calibration import activation_encoding
from .layers import Dense

__all__ = ["int8", "qat", "bf16", "QuantizationReport", "METHODS"]

METHODS = ("minmax", "percentile", "mse", "entropy")
_OP = "quantize.int8"
# Weight codes are symmetric in [-127, 127] (-128 unused, so -w is representable).
_W_MAX = 127


# ---------------------------------------------------------------------------------------
# Encodings
# ---------------------------------------------------------------------------------------


def quantize_weights(kernel: np.ndarray, per_channel: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """kernel (in, out) float32 -> (w_q (in, out) int8 in [-127, 127], scale (out,) or (1,)):
    scale = max |w| / 127 over each output column (or the whole kernel), codes
    round_half_even(w / scale). An all-zero column gets scale 1 (its codes are 0 anyway;
    the executor needs scales > 0)."""
    kernel = np.ascontiguousarray(kernel, dtype=np.float32)
    axis = "column" if per_channel else "tensor"
    scale = ops.symmetric_scales(kernel, axis=axis)  # the op QAT's training step runs on the device
    codes = ops.quantize(kernel, scale, dtype="int8", axis=axis)
    return codes, scale


# ---------------------------------------------------------------------------------------
# One int8 layer, as the executor runs it (the report's error against float32)
# ---------------------------------------------------------------------------------------


def simulate_layer(
    x: np.ndarray, w_q: np.ndarray, w_scale: np.ndarray, bias: np.ndarray, act: str, in_scale: float, in_zero: int
) -> np.ndarray:
    """What an int8 layer computes on float input x (rows, in), by the library's own int8
    ops on the cpu: inputs quantized to uint8 (``ops.quantize`` with in_scale / in_zero;
    dynamic when in_scale <= 0: ``ops.quantize_rows_dynamic``, per row over
    [min(0, min), max(0, max)]), then ``ops.gemm_s8``: the exact integer product and
    act(a_scale w_scale (acc - a_zero colsum(w)) + bias) in float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if in_scale > 0:
        a_scale, a_zero = np.float32([in_scale]), np.int32([in_zero])
        a = ops.quantize(x, a_scale, a_zero, dtype="uint8")
    else:
        a, a_scale, a_zero = ops.quantize_rows_dynamic(x)
    return ops.gemm_s8(
        a,
        np.ascontiguousarray(w_q, dtype=np.int8),
        a_scale,
        a_zero,
        np.ascontiguousarray(w_scale, dtype=np.float32),
        bias=np.ascontiguousarray(bias, dtype=np.float32),
        activation=act,
    )


# ---------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------


def _runs(row: Dict) -> str:
    """How a report row's layer runs: int8, float32 kept sparse (faster than int8), or float32
    for the accuracy budget."""
    if row["int8"]:
        return "int8"
    sparse = row.get("sparse_float32")
    if sparse and sparse["chosen"]:
        return f"float32 {sparse['format']} (faster than int8)"
    return "float32 (fell back)"


class QuantizationReport:
    """What ``int8`` did, per Dense layer and for the model: ``layers`` is a list of dicts
    (name, index, shape, weight scale min/max/mean, weight codes at +-127, input
    scale/zero or "dynamic", input values outside the calibrated range, relative RMS
    error of the layer's output against float32 on the calibration data, and whether it
    kept int8 or fell back to float32); ``float_accuracy`` / ``int8_accuracy`` when
    validation data was given. ``str(report)`` is a table, ``to_dict()`` plain data."""

    def __init__(
        self,
        method: str,
        per_channel: bool,
        static: bool,
        layers: List[Dict],
        float_accuracy: Optional[float] = None,
        int8_accuracy: Optional[float] = None,
        max_accuracy_drop: Optional[float] = None,
    ):
        self.method, self.per_channel, self.static = method, per_channel, static
        self.layers = layers
        self.float_accuracy, self.int8_accuracy = float_accuracy, int8_accuracy
        self.max_accuracy_drop = max_accuracy_drop

    @property
    def accuracy_drop(self) -> Optional[float]:
        if self.float_accuracy is None:
            return None
        assert self.int8_accuracy is not None  # measured with float_accuracy
        return self.float_accuracy - self.int8_accuracy

    def to_dict(self) -> Dict:
        return {
            "method": self.method,
            "per_channel": self.per_channel,
            "static": self.static,
            "float_accuracy": self.float_accuracy,
            "int8_accuracy": self.int8_accuracy,
            "accuracy_drop": self.accuracy_drop,
            "max_accuracy_drop": self.max_accuracy_drop,
            "layers": [dict(row) for row in self.layers],
        }

    def __str__(self) -> str:
        head = (
            "layer",
            "shape",
            "w scale min/mean/max",
            "w at ±127",
            "input scale/zero",
            "input clipped",
            "rel. RMS err",
            "runs",
        )
        rows = [head]
        for r in self.layers:
            enc = "dynamic" if r["input_scale"] is None else f"{r['input_scale']:.4g}/{r['input_zero']}"
            rows.append(
                (
                    r["name"],
                    f"{r['shape'][0]}x{r['shape'][1]}",
                    f"{r['weight_scale_min']:.3g}/{r['weight_scale_mean']:.3g}/{r['weight_scale_max']:.3g}",
                    f"{r['weights_saturated']}",
                    enc,
                    "-"
                    if r["inputs_clipped"] is None
                    else f"{r['inputs_clipped']} ({r['inputs_clipped'] / r['inputs_seen']:.2%})",
                    f"{r['relative_rms_error']:.3%}",
                    _runs(r),
                )
            )
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
        lines = [
            f"int8 quantization: {self.method}, weights "
            f"{'per channel' if self.per_channel else 'per tensor'}, inputs "
            f"{'static' if self.static else 'dynamic (per row)'}"
        ]
        for i, row in enumerate(rows):
            lines.append("  ".join(f"{str(c):<{w}}" for c, w in zip(row, widths)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        if self.float_accuracy is not None:
            assert self.accuracy_drop is not None
            budget = "" if self.max_accuracy_drop is None else f" (budget {100 * self.max_accuracy_drop:.2f})"
            lines.append(
                f"validation accuracy: float32 {self.float_accuracy:.4f}, int8 {self.int8_accuracy:.4f}, "
                f"drop {100 * self.accuracy_drop:.2f} points{budget}"
            )
        return "\n".join(lines)

    __repr__ = __str__


# ---------------------------------------------------------------------------------------
# int8
# ---------------------------------------------------------------------------------------


def _features(x, name: str, input_dim: int) -> np.ndarray:
    x = _checks.as_features(x, name, _OP)
    if x.shape[1] != input_dim:
        raise ValueError(f"[{_OP}] {name} has {x.shape[1]} features but the model expects {input_dim}")
    if not np.isfinite(x).all():
        raise ValueError(f"[{_OP}] {name} contains NaN or inf: its range cannot be calibrated")
    return x


def _copy(model):
    """A new model with the same architecture, weights and compile configuration, through
    the file format (what it does not store, the model does not need for inference)."""
    return io.loads(io.dumps(model), device=model.device)


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy from predict: argmax of the outputs, or output > 0 for one logit."""
    out = model.predict(x)
    pred = (out[:, 0] > 0).astype(np.int64) if out.shape[1] == 1 else out.argmax(axis=1)
    return float(np.mean(pred == y))


def _layer_inputs(model, x: np.ndarray, dense: List[int]) -> Tuple[List[np.ndarray], np.ndarray]:
    """The float input of each Dense layer on x (the model's input after its preprocessing
    layers for the first, the previous layers' output otherwise), from truncated copies of
    the model, and the model's output. An int8 layer is never folded with the
    preprocessing, so the executor quantizes the preprocessed input, as calibrated here."""
    from .models import Sequential

    # Each preprocessing layer by the op the executor runs for it.
    for layer in model.layers:
        if layer._preprocessing:
            x = ops.feature_affine(x, *layer._affine(model.input_dim))
    outs = []
    for i in dense:
        if i == dense[-1]:
            outs.append(model.predict(x))
            break
        head = Sequential(
            [
                Dense(layer.units, activation=layer.activation)
                for layer in model.layers[: i + 1]
                if isinstance(layer, Dense)
            ],
            input_dim=model.input_dim,
            device=model.device,
            seed=0,
        )
        for src, dst in zip((model.layers[j] for j in dense), head.layers):
            dst.set_weights(src.get_weights())
        outs.append(head.predict(x))
    return [x] + outs[:-1], outs[-1]


def int8(
    model,
    calibration=None,
    method: str = "minmax",
    per_channel: bool = True,
    static: bool = True,
    max_accuracy_drop: Optional[float] = None,
    validation: Optional[Tuple] = None,
    percentile: float = 99.99,
    num_bins: int = 2048,
    pruned: str = "measure",
    batch_sizes: Optional[Sequence[int]] = None,
):
    """A new model (the original is left as it is) whose Dense layers run in int8.

    ``calibration``: float inputs (rows, input_dim), representative of what the model
    will serve (a few hundred to a few thousand rows); it sets the static input ranges
    and the report's error figures. ``method``: "minmax", "percentile", "mse" or
    "entropy" (see the module docstring). ``per_channel``: one weight scale per output
    unit (default) or one per layer. ``static=False`` quantizes each input row at run
    time instead (no calibrated range; slower, more robust to unseen inputs).
    ``max_accuracy_drop``: with ``validation=(x, y)`` (class labels), the most top-1
    accuracy (a fraction) int8 may lose; the layers whose int8 costs the most accuracy
    return to float32 one at a time until the drop fits. Returns the model, with
    ``quantization_report`` (a QuantizationReport; the model file keeps the quantization,
    not the report).
    ``pruned``: for the layers a pruning masked, "measure" (default) times each as dense
    int8 and as sparse float32 at ``batch_sizes`` (default ``prune.BATCH_SIZES``) and keeps
    the form that is faster at more of them (the choice is saved with the model, as the
    pruning's format choice is); "int8" quantizes them like any other layer."""
    if model._net is None:
        raise ValueError(f"[{_OP}] the model is not built: give Sequential input_dim or call fit/predict first")
    if method not in METHODS:
        raise ValueError(f"[{_OP}] method must be one of {', '.join(METHODS)}, got {method!r}")
    for name, flag in (("per_channel", per_channel), ("static", static)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"[{_OP}] {name} must be True or False, got {flag!r}")
    if isinstance(percentile, bool) or not isinstance(percentile, numbers.Real) or not 50 < percentile <= 100:
        raise ValueError(f"[{_OP}] percentile must be a number in (50, 100], got {percentile!r}")
    num_bins = _checks.positive_int(num_bins, "num_bins", _OP, minimum=256)
    if pruned not in ("measure", "int8"):
        raise ValueError(f"[{_OP}] pruned must be 'measure' or 'int8', got {pruned!r}")
    sizes = _checks.batch_sizes(_OP, _formats.BATCH_SIZES if batch_sizes is None else batch_sizes)
    if calibration is None:
        raise ValueError(f"[{_OP}] calibration is required: a few hundred representative input rows")
    calibration = _features(calibration, "calibration", model.input_dim)
    if max_accuracy_drop is not None:
        if (
            isinstance(max_accuracy_drop, bool)
            or not isinstance(max_accuracy_drop, numbers.Real)
            or not 0 <= max_accuracy_drop < 1
        ):
            raise ValueError(
                f"[{_OP}] max_accuracy_drop must be a fraction in [0, 1) (0.005 = half a point), "
                f"got {max_accuracy_drop!r}"
            )
        if validation is None:
            raise ValueError(f"[{_OP}] max_accuracy_drop needs validation=(x, y) to measure the accuracy on")
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise ValueError(f"[{_OP}] validation must be a tuple (x, y)")
        x_val = _features(validation[0], "validation x", model.input_dim)
        y_val = np.asarray(validation[1])
        if y_val.shape != (x_val.shape[0],) or y_val.dtype.kind not in "biu":
            raise ValueError(
                f"[{_OP}] validation y must be {x_val.shape[0]} integer class labels, got shape "
                f"{y_val.shape} of {y_val.dtype}"
            )
        if model._loss is not None and not model._loss.classification:
            raise ValueError(
                f"[{_OP}] validation measures top-1 accuracy, which needs a classification model, "
                f"not one compiled with loss {model._loss.name!r}"
            )

    qmodel = _copy(model)
    dense = [i for i, layer in enumerate(qmodel.layers) if isinstance(layer, Dense)]
    for i in dense:
        qmodel._net.clear_quantization(i)
    float_weights = {i: qmodel.layers[i].get_weights() for i in dense}
    inputs, final = _layer_inputs(qmodel, calibration, dense)
    outputs = inputs[1:] + [final]
    float_acc = int8_acc = None
    if validation is not None:
        float_acc = _accuracy(qmodel, x_val, y_val)
    rows, encodings = [], {}
    choose = _RANGES[method]
    for i, x_in, y_float in zip(dense, inputs, outputs):
        layer = qmodel.layers[i]
        kernel, bias = float_weights[i]
        w_q, w_scale = quantize_weights(kernel, per_channel)
        if static:
            lo, hi = choose(x_in.ravel(), percentile=percentile, num_bins=num_bins)
            in_scale, in_zero = activation_encoding(lo, hi)
            clipped = int(np.count_nonzero((x_in < lo) | (x_in > hi)))
        else:
            in_scale, in_zero, clipped = 0.0, 0, None
        encodings[i] = (w_q, w_scale, in_scale, in_zero)
        y_q = simulate_layer(x_in, w_q, w_scale, bias, layer.activation, in_scale, in_zero)
        ref = y_float.astype(np.float64)
        err = math.sqrt(float(np.mean((y_q - ref) ** 2)) / max(float(np.mean(ref**2)), 1e-30))
        rows.append(
            {
                "name": layer.name,
                "index": i,
                "shape": tuple(kernel.shape),
                "weight_scale_min": float(w_scale.min()),
                "weight_scale_max": float(w_scale.max()),
                "weight_scale_mean": float(w_scale.mean()),
                "weights_saturated": int(np.count_nonzero(np.abs(w_q) == _W_MAX)),
                "input_scale": in_scale if static else None,
                "input_zero": in_zero if static else None,
                "inputs_clipped": clipped,
                "inputs_seen": int(x_in.size),
                "relative_rms_error": err,
                "int8": True,
            }
        )
        qmodel._net.set_quantization(i, w_q, w_scale, in_scale, in_zero)

    if pruned == "measure":
        for row in rows:
            i = row["index"]
            if i in qmodel._masks:
                row["sparse_float32"] = _formats.int8_or_float32(qmodel, i, float_weights[i], encodings[i], sizes)
                if row["sparse_float32"]["chosen"]:
                    _to_float(qmodel, i, float_weights[i])
                    row["int8"] = False
                    fmt = row["sparse_float32"]
                    qmodel._net.set_sparse_format(
                        i, fmt["format"], fmt["max_batch"], *qmodel._nm.get(i, (2, 4)), min_batch=fmt["min_batch"]
                    )

    if validation is not None:
        int8_acc = _accuracy(qmodel, x_val, y_val)
        by_index = {row["index"]: row for row in rows}
        # Leave-one-out on the validation data itself: each candidate layer goes back to
        # float32 in turn and the one whose return recovers the most accuracy stays
        # there. It measures exactly what the budget is about (a per-layer error is only a
        # proxy: a large error in a layer the argmax is insensitive to costs nothing), and
        # an MLP has few layers, so it is a handful of validation passes per step.
        while max_accuracy_drop is not None and float_acc - int8_acc > max_accuracy_drop:
            candidates = [i for i in dense if by_index[i]["int8"]]
            if not candidates:
                break
            scores = []
            for i in candidates:
                _to_float(qmodel, i, float_weights[i])
                scores.append(_accuracy(qmodel, x_val, y_val))
                qmodel._net.set_quantization(i, *encodings[i])
            best = candidates[int(np.argmax(scores))]
            _to_float(qmodel, best, float_weights[best])
            by_index[best]["int8"] = False
            int8_acc = max(scores)
    qmodel.quantization_report = QuantizationReport(
        method, bool(per_channel), bool(static), rows, float_acc, int8_acc, max_accuracy_drop
    )
    return qmodel


def _to_float(model, index: int, weights: List[np.ndarray]) -> None:
    """Dense layer `index` back to float32 with its original weights (set_quantization
    replaced them by scale * w_q)."""
    model._net.clear_quantization(index)
    model.layers[index].set_weights(weights)


# ---------------------------------------------------------------------------------------
# Quantization-aware training
# ---------------------------------------------------------------------------------------


def qat(
    model,
    x,
    y,
    epochs: int = 3,
    batch_size: int = 128,
    learning_rate: Optional[float] = None,
    calibration=None,
    method: str = "minmax",
    per_channel: bool = True,
    static: bool = True,
    momentum: float = 0.9,
    validation: Optional[Tuple] = None,
    max_accuracy_drop: Optional[float] = None,
    verbose: int = 0,
):
    """Quantization-aware fine-tuning, then ``int8``: for when post-training quantization
    loses too much accuracy.

    A copy of the (compiled) model trains for ``epochs`` on (x, y) with every Dense layer
    fake-quantized in the forward pass: weights as int8 codes (``per_channel`` as in
    ``int8``) and, when ``static``, inputs as uint8 over a moving average (``momentum``) of
    their range, so the weights learn to live with the rounding; the gradients reach the
    float weights through the rounding unchanged (the straight-through estimator).
    ``learning_rate`` (default: the model's own) is usually lower than in the original
    training. The fine-tuned model is then quantized by ``int8`` with ``calibration``
    (default: the first 1024 rows of x) and the remaining arguments, and returned; the
    original model is left as it is."""
    if model._net is None:
        raise ValueError("[quantize.qat] the model is not built: give Sequential input_dim or call fit/predict first")
    if model._loss is None:
        raise ValueError("[quantize.qat] the model must be compiled (its loss and optimizer fine-tune it)")
    epochs = _checks.positive_int(epochs, "epochs", "quantize.qat")
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0 <= momentum < 1:
        raise ValueError(f"[quantize.qat] momentum must be in [0, 1), got {momentum!r}")
    tuned = _copy(model)
    tuned._cuda_graph = model._cuda_graph  # a setting of the session, not of the file
    dense = [i for i, layer in enumerate(tuned.layers) if isinstance(layer, Dense)]
    for i in dense:
        tuned._net.clear_quantization(i)
        tuned._net.set_fake_quantization(i, bool(per_channel), bool(static), float(momentum))
    if learning_rate is not None:
        optimizer = copy.copy(tuned._optimizer)
        optimizer.learning_rate = _checks.number("quantize.qat", "learning_rate", learning_rate)
        tuned.compile(
            optimizer=optimizer,
            loss=tuned._loss,
            metrics=tuned._metrics,
            precision=tuned._precision,
            cuda_graph=tuned._cuda_graph,
        )
    else:
        tuned._net.set_cuda_graph(tuned._cuda_graph)
    tuned.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose)
    for i in dense:
        tuned._net.clear_fake_quantization(i)
    if calibration is None:
        calibration = np.asarray(x)[:1024]
    return int8(
        tuned,
        calibration=calibration,
        method=method,
        per_channel=per_channel,
        static=static,
        max_accuracy_drop=max_accuracy_drop,
        validation=validation,
    )


def bf16(model):
    """A new model whose Dense kernels are stored as bfloat16 (rounded to nearest even;
    biases stay float32): half the weight bytes in memory and in the model file, multiplied
    by the CPU's bf16 kernel (AVX512-BF16 where present), which rounds each layer's input to
    bfloat16 and accumulates in float32 (``ops.dense_forward_bf16``). A pruned layer keeps
    its zeros in its kernel and runs dense. The model predicts, saves, loads and exports to
    ONNX; it does not train. Devices without a bf16 product ("cuda", "cuda-emulated") refuse
    it with a ValueError."""
    if getattr(model, "_net", None) is None:
        raise ValueError("[quantize.bf16] the model is not built: give Sequential input_dim or call fit/predict first")
    dense = [i for i, layer in enumerate(model.layers) if isinstance(layer, Dense)]
    for i in dense:
        if model._net.quantized(i):
            raise ValueError(f"[quantize.bf16] layer {i} ({model.layers[i].name!r}) is int8: convert the float model")
    new = _copy(model)
    net = new._net
    for i in dense:
        if i in new._masks:
            net.clear_mask(i)
        net.set_sparse_format(i, "dense", 0, 2, 4, min_batch=1)
        net.set_bf16(i, True)
    new._masks, new._nm = {}, {}
    return new
