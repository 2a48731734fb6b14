"""Pruning that makes models smaller and faster (issue #7).

- ``magnitude(model, sparsity, scope="layer"|"global")``: unstructured magnitude pruning,
  in place. Each Dense kernel gets a mask (the executor zeroes the pruned weights now and
  after every optimizer update, on every device); biases are never pruned.
- ``n_m(model, n=2, m=4)``: semi-structured N:M sparsity, in place: in each group of m
  consecutive inputs of an output unit the n largest magnitudes stay.
- ``structured(model, fraction, criterion="l2"|"l1")``: removes whole hidden neurons and
  returns a new, physically smaller Sequential (same compile configuration).
- ``choose_formats(model)``: per masked layer, measures dense against the sparse formats
  once at a few batch sizes and lets inference run sparse only for the batch sizes where
  it is faster, so
  pruning never makes a model slower. The choice is saved in the model file.

Each returns or attaches a ``PruneReport``: per layer the sparsity, the parameters
(nonzeros) before and after, the measured latencies and the chosen format.
``GradualPruning`` (a fit callback, also ``customml.callbacks.GradualPruning``) prunes during
fit on Zhu & Gupta's schedule.
"""

from __future__ import annotations

import copy
import numbers
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from . import _checks, _formats
from ._callback import Callback
from ._formats import BATCH_SIZES, UNBOUNDED
from .layers import Dense, Dropout, Layer, Normalization, Rescaling

__all__ = [
    "magnitude",
    "n_m",
    "structured",
    "choose_formats",
    "report",
    "magnitude_masks",
    "n_m_masks",
    "PruneReport",
    "GradualPruning",
    "BATCH_SIZES",
    "UNBOUNDED",
]


def _dense_indices(model, op: str) -> List[int]:
    from .models import Sequential

    if not isinstance(model, Sequential):
        raise TypeError(f"[{op}] model must be a customml Sequential, got {type(model).__name__}")
    model._require_built(op)
    assert model._net is not None
    indices = [i for i, layer in enumerate(model.layers) if isinstance(layer, Dense)]
    # An int8 layer runs its codes, not its float weights: a mask on those would change
    # get_weights and the file's claims but not one prediction.
    quantized = [model.layers[i].name for i in indices if model._net.quantized(i)]
    if quantized:
        raise ValueError(f"[{op}] layer {quantized[0]!r} is int8: prune the float model, then quantize it")
    # A bf16 layer runs dense from its kernel, which the file stores whole (no mask).
    halves = [model.layers[i].name for i in indices if model._net.bf16(i)]
    if halves:
        raise ValueError(f"[{op}] layer {halves[0]!r} is bf16: prune the float model, then quantize.bf16 it")
    return indices


def _nonzeros(layer) -> int:
    return int(sum(np.count_nonzero(w) for w in layer.get_weights()))


def _prune_smallest(magnitudes: np.ndarray, count: int) -> np.ndarray:
    """keep (bool, same shape): False for the ``count`` smallest magnitudes. A stable sort
    breaks ties by flat index (the earlier weight goes first), so equal weights give the same
    mask on every run and device; already pruned weights (zero) go first, so masks only grow."""
    order = np.argsort(magnitudes.ravel(), kind="stable")
    keep: np.ndarray = np.ones(magnitudes.size, dtype=bool)
    keep[order[:count]] = False
    return keep.reshape(magnitudes.shape)


def _set_mask(model, index: int, keep: np.ndarray) -> None:
    model._net.set_mask(index, np.ascontiguousarray(keep, dtype=np.uint8))
    model._masks[index] = np.array(keep, dtype=bool)


def magnitude_masks(model, sparsity: float, scope: str = "layer") -> Dict[int, np.ndarray]:
    """The masks ``magnitude`` would set, by layer index, without setting them."""
    op = "prune.magnitude"
    sparsity = _checks.fraction(op, "sparsity", sparsity)
    if scope not in ("layer", "global"):
        raise ValueError(f"[{op}] scope must be 'layer' or 'global', got {scope!r}")
    indices = _dense_indices(model, op)
    mags = [np.abs(model.layers[i].get_weights()[0]) for i in indices]
    # The nearest whole number of weights (halves to even), so 0.9 of 1000 is exactly 900.
    if scope == "layer":
        return {i: _prune_smallest(m, round(sparsity * m.size)) for i, m in zip(indices, mags)}
    flat = np.concatenate([m.ravel() for m in mags])
    keep = _prune_smallest(flat, round(sparsity * flat.size))
    masks, start = {}, 0
    for i, m in zip(indices, mags):
        masks[i] = keep[start : start + m.size].reshape(m.shape)
        start += m.size
    return masks


def magnitude(
    model, sparsity: float, scope: str = "layer", *, measure: bool = True, batch_sizes: Sequence[int] = BATCH_SIZES
) -> "PruneReport":
    """Prunes the smallest-magnitude kernel weights of every Dense layer in place.

    ``scope="layer"``: each kernel loses round(sparsity * size) weights. ``"global"``: that
    many across all kernels together, by raw magnitude, so layers end with different
    sparsities. Biases are never pruned. The masks hold through later fits (every
    optimizer, every device). ``measure`` runs ``choose_formats`` at ``batch_sizes`` so that
    inference uses the sparse kernel where it is faster; without it the formats stay as
    they were. Returns a PruneReport (also ``model.pruning_report``)."""
    _dense_indices(model, "prune.magnitude")  # a model, before its lock is taken
    with model._transaction():  # predict sees every layer pruned, or none
        masks = magnitude_masks(model, sparsity, scope)
        before = {i: _nonzeros(model.layers[i]) for i in masks}
        for i, keep in masks.items():
            _set_mask(model, i, keep)
        return _report(model, "magnitude", before, measure, batch_sizes, ("csr",))


def n_m_masks(model, n: int = 2, m: int = 4) -> Dict[int, np.ndarray]:
    """The masks ``n_m`` would set, by layer index, without setting them."""
    op = "prune.n_m"
    for name, value in (("n", n), ("m", m)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not (1 <= value <= 255):
            raise ValueError(f"[{op}] {name} must be an integer in [1, 255], got {value!r}")
    if n > m:
        raise ValueError(f"[{op}] n must be <= m (n of every m weights stay), got n={n}, m={m}")
    masks = {}
    for i in _dense_indices(model, op):
        kernel = model.layers[i].get_weights()[0]
        rows, cols = kernel.shape
        groups = -(-rows // m)
        # Padding rows sort after every real weight, so a short last group keeps its own
        # weights first; a stable sort keeps the earlier of equal magnitudes.
        key = np.ones((groups * m, cols), dtype=np.float32)
        key[:rows] = -np.abs(kernel)
        order = np.argsort(key.reshape(groups, m, cols), axis=1, kind="stable")
        keep = np.zeros((groups, m, cols), dtype=bool)
        np.put_along_axis(keep, order[:, :n, :], True, axis=1)
        masks[i] = keep.reshape(groups * m, cols)[:rows]
    return masks


def n_m(
    model, n: int = 2, m: int = 4, *, measure: bool = True, batch_sizes: Sequence[int] = BATCH_SIZES
) -> "PruneReport":
    """N:M semi-structured pruning in place: for each output unit of every Dense layer, in
    each group of m consecutive inputs the n largest magnitudes stay (a last, shorter group
    keeps at most n). With ``measure`` the layers run in the "nm" format for the batch
    sizes where it beats dense. Returns a PruneReport (also ``model.pruning_report``)."""
    _dense_indices(model, "prune.n_m")  # a model, before its lock is taken
    with model._transaction():  # predict sees every layer pruned, or none
        masks = n_m_masks(model, n, m)
        before = {i: _nonzeros(model.layers[i]) for i in masks}
        for i, keep in masks.items():
            _set_mask(model, i, keep)
            model._nm[i] = (int(n), int(m))
        return _report(model, "n_m", before, measure, batch_sizes, ("nm",))


# ---------------------------------------------------------------------------------------
# Measuring and choosing the inference format
# ---------------------------------------------------------------------------------------


def choose_formats(
    model, batch_sizes: Sequence[int] = BATCH_SIZES, formats: Optional[Sequence[str]] = None, repeats: int = 7
) -> Dict[int, dict]:
    """For every masked Dense layer, times the layer alone on the model's device in dense and
    in each sparse format (``formats``: default "csr", plus "nm" for layers pruned by
    ``n_m`` whose weights still fit the pattern) at ``batch_sizes`` (the fastest of
    ``repeats`` runs; a size where a sparse format is clearly slower is timed a second
    time, and each probe keeps its faster time), and sets the format that runs sparse over
    the most measured sizes: from min_batch to max_batch, the widest run of measured sizes
    where it beats dense at both ends and is nowhere more than 5% (the timing noise) slower
    in between; max_batch unbounded when the run reaches the largest size; dense when it
    wins nowhere. Returns
    {layer index: {"format", "min_batch", "max_batch", "latency_us": {format: {batch:
    us}}}}; the choice is saved with the model."""
    op = "prune.choose_formats"
    indices = _dense_indices(model, op)
    sizes = _checks.batch_sizes(op, batch_sizes)
    repeats = _checks.positive_int(repeats, "repeats", op)
    if formats is not None:
        formats = tuple(formats)
        if not formats or any(f not in ("csr", "nm") for f in formats):
            raise ValueError(f"[{op}] formats must name 'csr' and/or 'nm', got {formats!r}")
    chosen = {}
    for i in indices:
        if i not in model._masks:
            continue
        choice = _formats.sparse_format(model, i, sizes, formats, repeats)
        model._net.set_sparse_format(
            i, choice["format"], choice["max_batch"], *model._nm.get(i, (2, 4)), min_batch=choice["min_batch"]
        )
        chosen[i] = choice
    return chosen


# ---------------------------------------------------------------------------------------
# Structured pruning
# ---------------------------------------------------------------------------------------


def _unit_scores(kernel: np.ndarray, criterion: str) -> np.ndarray:
    k: np.ndarray = kernel.astype(np.float64)
    return np.sqrt((k * k).sum(axis=0)) if criterion == "l2" else np.abs(k).sum(axis=0)


def structured(model, fraction: float, criterion: str = "l2", *, measure: bool = True):
    """Removes ``fraction`` of the output units (rounded to the nearest count, at least one
    kept) of every Dense layer but the last, lowest score first: a unit's kernel column and
    bias entry go, and the matching row of the next Dense layer's kernel (dropout between
    is fine). The score is the L2 (``criterion="l2"``) or L1 (``"l1"``) norm of the unit's
    incoming weights; ties remove the earlier unit. A removed unit whose incoming weights
    are all zero outputs the constant activation(bias): that constant's contribution is
    folded into the next layer's bias, so removing dead units leaves predictions unchanged
    up to float rounding.

    Returns a new, physically smaller Sequential on the same device with the same compile
    configuration (fresh optimizer state) and masks carried over; the original is left as
    it was. Its ``pruning_report`` compares each layer's size and, with ``measure``, its
    dense latency before and after at batch 1 and 128."""
    from . import ops
    from .models import Sequential

    op = "prune.structured"
    fraction = _checks.fraction(op, "fraction", fraction)
    if criterion not in ("l2", "l1"):
        raise ValueError(f"[{op}] criterion must be 'l2' or 'l1', got {criterion!r}")
    indices = _dense_indices(model, op)
    if len(indices) < 2:
        raise ValueError(
            f"[{op}] the model needs at least two Dense layers: the last layer's outputs are never removed"
        )
    weights = {i: [w.copy() for w in model.layers[i].get_weights()] for i in indices}
    masks = {i: k.copy() for i, k in model._masks.items()}
    for a, b in zip(indices[:-1], indices[1:]):
        kernel, bias = weights[a]
        units = kernel.shape[1]
        drop = min(round(fraction * units), units - 1)
        order = np.argsort(_unit_scores(kernel, criterion), kind="stable")
        removed, kept = np.sort(order[:drop]), np.sort(order[drop:])
        dead = removed[~kernel[:, removed].any(axis=0)]
        if dead.size:
            # The dead units' outputs, computed by the layer's own kernel on a zero input.
            const = ops.dense_forward(
                np.zeros((1, kernel.shape[0]), np.float32),
                np.ascontiguousarray(kernel[:, dead]),
                bias[dead],
                activation=model.layers[a].activation,
            )[0]
            if const.any():
                weights[b][1] = (weights[b][1] + const.astype(np.float64) @ weights[b][0][dead, :]).astype(np.float32)
        weights[a] = [np.ascontiguousarray(kernel[:, kept]), bias[kept]]
        weights[b][0] = np.ascontiguousarray(weights[b][0][kept, :])
        if a in masks:
            masks[a] = masks[a][:, kept]
        if b in masks:
            masks[b] = masks[b][kept, :]
    layers: List[Layer] = []
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Dense):
            layers.append(
                Dense(
                    weights[i][0].shape[1],
                    activation=layer.activation,
                    kernel_initializer=layer.kernel_initializer,
                    kernel_regularizer=copy.deepcopy(layer.kernel_regularizer),
                    name=layer.name,
                )
            )
            layers[-1].trainable = layer.trainable
        elif isinstance(layer, Normalization):
            layers.append(Normalization(mean=layer.mean, variance=layer.variance, name=layer.name))
        elif isinstance(layer, Rescaling):
            layers.append(Rescaling(layer.scale, layer.offset, name=layer.name))
        elif isinstance(layer, Dropout):
            layers.append(Dropout(layer.rate, name=layer.name))
        else:
            raise ValueError(f"[{op}] cannot rebuild layer {layer.name!r} of type {type(layer).__name__}")
    smaller = Sequential(layers, input_dim=model.input_dim, device=model.device, seed=model.seed, name=model.name)
    smaller.set_weights([w for i in indices for w in weights[i]])
    if model._loss is not None:
        smaller.compile(
            optimizer=copy.deepcopy(model._optimizer),
            loss=copy.deepcopy(model._loss),
            metrics=model._metrics,
            precision=model._precision,
            cuda_graph=model._cuda_graph,
        )
    for i, keep in masks.items():
        _set_mask(smaller, i, keep)
    smaller._nm.update({i: nm for i, nm in model._nm.items() if i in masks})
    rows = []
    for i in indices:
        old, new = model.layers[i], smaller.layers[i]
        assert isinstance(old, Dense) and isinstance(new, Dense)
        row: Dict[str, Any]
        row = {
            "index": i,
            "layer": old.name,
            "shape": (old.input_dim, old.units),
            "new_shape": (new.input_dim, new.units),
            "sparsity": _sparsity(new),
            "params_before": _nonzeros(old),
            "params_after": _nonzeros(new),
            "format": "dense",
            "min_batch": 1,
            "max_batch": 0,
            "latency_us": {},
        }
        if measure:
            probes = {
                "before": _formats.probe(model, i, None, "dense", (2, 4)),
                "after": _formats.probe(smaller, i, None, "dense", (2, 4)),
            }
            row["latency_us"] = _formats.time_probes(probes, (1, 128), 5)
        rows.append(row)
    smaller.pruning_report = PruneReport("structured", rows)
    return smaller


# ---------------------------------------------------------------------------------------
# Gradual pruning during fit
# ---------------------------------------------------------------------------------------


class GradualPruning(Callback):
    """Prunes by magnitude during fit on the polynomial schedule of Zhu & Gupta (2017):
    at executor step t in [begin_step, end_step] the target sparsity is

        s_t = final + (initial - final) * (1 - (t - begin_step) / (end_step - begin_step)) ** 3

    and the masks are recomputed (``magnitude`` with ``scope``) every
    ``frequency`` steps from begin_step and once more at end_step, where the sparsity
    reaches ``final_sparsity`` exactly. Fast pruning early, when the network can recover,
    slow near the end. Pruned weights already sit at zero, so they are the first pruned
    again: masks only grow. After end_step the masks stay and fine-tuning goes on; when a
    fit ends past end_step, ``report`` picks each layer's inference format
    and leaves its report on ``model.pruning_report`` (``measure=False`` leaves that to
    the caller). The step is the
    executor's update count (``model`` resumed from a file continues the schedule)."""

    def __init__(
        self,
        final_sparsity: float,
        *,
        end_step: int,
        initial_sparsity: float = 0.0,
        begin_step: int = 0,
        frequency: int = 100,
        scope: str = "layer",
        measure: bool = True,
    ):
        super().__init__()
        owner = "GradualPruning"
        self.final_sparsity = _checks.fraction(owner, "final_sparsity", final_sparsity)
        self.initial_sparsity = _checks.fraction(owner, "initial_sparsity", initial_sparsity)
        begin_step = _checks.positive_int(begin_step, "begin_step", owner, minimum=0)
        end_step = _checks.positive_int(end_step, "end_step", owner)
        frequency = _checks.positive_int(frequency, "frequency", owner)
        if end_step <= begin_step:
            raise ValueError(
                f"[{owner}] end_step must be > begin_step, got end_step={end_step}, begin_step={begin_step}"
            )
        if scope not in ("layer", "global"):
            raise ValueError(f"[{owner}] scope must be 'layer' or 'global', got {scope!r}")
        self.begin_step, self.end_step, self.frequency = begin_step, end_step, frequency
        self.scope = scope
        self.measure = bool(measure)

    def sparsity(self, step: int) -> float:
        """The schedule's target at executor step ``step`` (initial before, final after)."""
        progress = min(max((step - self.begin_step) / (self.end_step - self.begin_step), 0.0), 1.0)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** 3

    def _prune(self, step: int) -> None:
        magnitude(self.model, self.sparsity(step), self.scope, measure=False)

    def on_train_begin(self, logs: Optional[Dict] = None) -> None:
        # A fit that starts inside the schedule (or resumes past its start) begins at the
        # sparsity of the last pruning step an uninterrupted run would have taken by now,
        # so a resumed run prunes exactly as a straight one.
        step = int(self.model._net.step)
        if step >= self.begin_step:
            last = self.begin_step + (step - self.begin_step) // self.frequency * self.frequency
            self._prune(self.end_step if step >= self.end_step else last)

    def on_batch_end(self, batch: int, logs: Optional[Dict] = None) -> None:
        step = int(self.model._net.step)
        if self.begin_step <= step <= self.end_step and (
            (step - self.begin_step) % self.frequency == 0 or step == self.end_step
        ):
            self._prune(step)

    def on_train_end(self, logs: Optional[Dict] = None) -> None:
        if self.measure and int(self.model._net.step) >= self.end_step:
            report(self.model)  # chooses the formats; the report lands on model.pruning_report


# ---------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------


def _sparsity(layer) -> float:
    kernel = layer.get_weights()[0]
    return 1.0 - np.count_nonzero(kernel) / kernel.size


def report(
    model, *, measure: bool = True, batch_sizes: Sequence[int] = BATCH_SIZES, formats: Optional[Sequence[str]] = None
) -> "PruneReport":
    """The report of a model's masked layers as they stand (after GradualPruning, or a
    loaded file), parameters before = the dense count; ``measure`` runs ``choose_formats``
    (with ``batch_sizes`` and ``formats``) first, setting the formats. Also kept as
    ``model.pruning_report``."""
    indices = _dense_indices(model, "prune.report")
    before = {i: model.layers[i].count_params() for i in indices if i in model._masks}
    return _report(model, "magnitude", before, measure, batch_sizes, formats)


def _report(model, kind: str, before: Dict[int, int], measure: bool, batch_sizes, formats) -> "PruneReport":
    chosen = choose_formats(model, batch_sizes, formats) if measure else {}
    rows = []
    for i, params_before in before.items():
        layer = model.layers[i]
        fmt, max_batch = model._net.sparse_format(i)
        rows.append(
            {
                "index": i,
                "layer": layer.name,
                "shape": (layer.input_dim, layer.units),
                "sparsity": _sparsity(layer),
                "params_before": params_before,
                "params_after": _nonzeros(layer),
                "format": fmt,
                "min_batch": int(model._net.sparse_min_batch(i)),
                "max_batch": int(max_batch),
                "latency_us": chosen.get(i, {}).get("latency_us", {}),
            }
        )
    report = PruneReport(kind, rows)
    model.pruning_report = report
    return report


class PruneReport:
    """Per pruned layer: ``sparsity`` (fraction of zero kernel weights), ``params_before`` /
    ``params_after`` (nonzero weights and biases), ``latency_us`` ({format: {batch: median
    us}} for the layer alone: "dense" and the sparse formats measured, or "before"/"after"
    for structured pruning), the chosen ``format`` and the batch sizes it runs,
    ``min_batch`` to ``max_batch``. ``str(report)`` is
    a table; ``as_dict()`` the same as plain data."""

    def __init__(self, kind: str, layers: List[dict]):
        self.kind = kind
        self.layers = layers

    @property
    def params_before(self) -> int:
        return sum(r["params_before"] for r in self.layers)

    @property
    def params_after(self) -> int:
        return sum(r["params_after"] for r in self.layers)

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "layers": copy.deepcopy(self.layers),
            "params_before": self.params_before,
            "params_after": self.params_after,
        }

    def _latency(self, row: dict, batch: int) -> str:
        lat = row["latency_us"]
        if not lat:
            return "-"
        if self.kind == "structured":
            return f"{lat['before'][batch]:.1f} -> {lat['after'][batch]:.1f}"
        sparse = [f for f in lat if f != "dense"]
        if batch not in lat["dense"]:
            return "-"
        best = min(sparse, key=lambda f: lat[f][batch])
        return f"{lat['dense'][batch]:.1f} / {lat[best][batch]:.1f} {best}"

    def __str__(self) -> str:
        head = (
            "Layer",
            "Shape",
            "Sparsity",
            "Params before -> after",
            "b1 us " + ("before -> after" if self.kind == "structured" else "dense / sparse"),
            "b128 us " + ("before -> after" if self.kind == "structured" else "dense / sparse"),
            "Format",
        )
        rows = [head]
        for r in self.layers:
            shape = f"{r['shape'][0]}x{r['shape'][1]}"
            if "new_shape" in r:
                shape += f" -> {r['new_shape'][0]}x{r['new_shape'][1]}"
            lo, hi = r["min_batch"], r["max_batch"]
            batches = f">= {lo}" if hi >= UNBOUNDED else str(lo) if lo == hi else f"{lo}-{hi}"
            fmt = r["format"] if r["format"] == "dense" else f"{r['format']} (batch {batches})"
            rows.append(
                (
                    r["layer"],
                    shape,
                    f"{r['sparsity']:.1%}",
                    f"{r['params_before']:,} -> {r['params_after']:,}",
                    self._latency(r, 1),
                    self._latency(r, 128),
                    fmt,
                )
            )
        rows.append(("total", "", "", f"{self.params_before:,} -> {self.params_after:,}", "", "", ""))
        widths = [max(len(row[c]) for row in rows) for c in range(len(head))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "-" * len(lines[0]))
        return f"Pruning report ({self.kind})\n" + "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"PruneReport({self.kind!r}, {len(self.layers)} layers, {self.params_before} -> {self.params_after} params)"
        )
