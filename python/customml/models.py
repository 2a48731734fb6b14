"""Sequential: a Keras-like model over the C++ network executor.

Python here checks and converts what users pass, then makes one executor call per
batch (fit) or per call (predict, evaluate); the maths runs in C++ with the GIL
released.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core, _model_file
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optimizers as optimizers_mod
from . import schedules as schedules_mod
from ._callback import Callback
from ._checks import as_features, check_finite, number, positive_int
from ._history import History
from ._model_description import ModelDescription, describe
from ._safetensors import atomic_write
from .layers import Dense, Dropout, Layer, Normalization

__all__ = ["Sequential"]

_PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


def _check_binary_metrics(metrics: Tuple[str, ...], outputs: int) -> None:
    for m in metrics:
        if m.endswith("_binary") and outputs > 2:
            raise ValueError(f"metric {m!r} needs a binary classifier (one or two outputs), "
                             f"the model has {outputs}")


def _scalars(logs: Dict) -> Dict[str, float]:
    """The logs without the confusion matrix, for one-line displays."""
    return {k: v for k, v in logs.items() if not isinstance(v, np.ndarray)}


class Sequential:
    """A stack of layers trained and served by the C++ executor.

    ``input_dim`` builds the model at once (otherwise the first fit/predict builds it
    from x). ``device``: "cpu" (or "cuda" in a CUDA build with a GPU). ``seed`` makes
    initialization, shuffling and dropout reproducible: the same seed gives
    bit-identical weights for the same ISA level and thread count.
    """

    def __init__(self, layers: Sequence[Layer] = (), input_dim: Optional[int] = None, device: str = "cpu",
                 seed: Optional[int] = None, name: str = "sequential"):
        if not isinstance(device, str):
            raise TypeError(f"device must be a string such as 'cpu', got {type(device).__name__}")
        device = _core.check_device(device)
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**63))
        self.seed = positive_int(seed, "seed", "Sequential", minimum=0)
        self.device = device
        self.name = name
        self.layers: List[Layer] = []
        self._net = None
        self._loss: Optional[losses_mod.Loss] = None
        self._optimizer: Optional[optimizers_mod.Optimizer] = None
        self._metrics: Tuple[str, ...] = ()
        self._precision = "fp32"
        self.history: Optional[History] = None
        self._input_dim = None
        # Set by a callback to end fit after the current epoch (Keras' name).
        self.stop_training = False
        # Epochs completed since compile: the next fit continues the shuffle stream here.
        self._epoch = 0
        # The last fit's callbacks, whose states save(include_optimizer=True) stores, and
        # the states a loaded file holds for the first fit after load.
        self._callbacks: Tuple[Callback, ...] = ()
        self._restored_callback_state: Optional[Dict[str, Dict]] = None
        # Pruning (customml.prune): each masked Dense layer's keep mask (in, out) by layer
        # index, as given to the executor (which cannot hand it back), for the model file;
        # (n, m) of the layers pruned N:M; the last pruning's report.
        self._masks: Dict[int, np.ndarray] = {}
        self._nm: Dict[int, Tuple[int, int]] = {}
        self.pruning_report = None
        try:
            for layer in layers:
                self.add(layer)
            if input_dim is not None:
                self.build(positive_int(input_dim, "input_dim", "Sequential"))
        except BaseException:
            # A model that failed to construct must not keep the layers it was given.
            for layer in self.layers:
                layer._model, layer._index, layer.input_dim = None, -1, None
            raise

    # -- structure ---------------------------------------------------------------------

    def add(self, layer: Layer) -> None:
        """Appends a layer. On a built model (to put a new head on a trained base, after
        ``pop``) the executor is rebuilt: the other layers keep their weights and trainable
        flags, the new layer is initialized from the model's seed and its position, and a
        compiled model is compiled again with the same configuration (fresh optimizer
        state and step count, as after ``compile``)."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a customml layer, got {type(layer).__name__}")
        if layer._model is not None:
            raise ValueError(f"layer {layer.name!r} already belongs to a model")
        if layer._preprocessing and any(not lay._preprocessing for lay in self.layers):
            raise ValueError(f"preprocessing layer {type(layer).__name__} must come first in the model, before "
                             "any Dense or Dropout layer")
        taken = {lay.name for lay in self.layers}
        if layer.name in taken:
            raise ValueError(f"the model already has a layer named {layer.name!r}; layer names must be unique")
        if layer.name is None:
            base, i = layer._kind, 0
            layer.name = base
            while layer.name in taken:
                i += 1
                layer.name = f"{base}_{i}"
        layer._model = self
        layer._index = len(self.layers)
        self.layers.append(layer)
        if self._net is not None:
            try:
                self._rebuild()
            except BaseException:
                self.layers.pop()
                layer._model, layer._index, layer.input_dim = None, -1, None
                raise

    def pop(self) -> Layer:
        """Removes and returns the last layer, e.g. to replace a classifier's head; a built
        model is rebuilt as by ``add``, keeping the other layers' weights."""
        if not self.layers:
            raise ValueError("[pop] the model has no layers")
        if self._net is not None and not any(isinstance(lay, Dense) for lay in self.layers[:-1]):
            raise ValueError("[pop] cannot remove the only Dense layer of a built model")
        layer = self.layers.pop()
        if self._net is not None:
            try:
                self._rebuild()
            except BaseException:
                self.layers.append(layer)
                raise
        layer._model, layer._index, layer.input_dim = None, -1, None
        return layer

    def _rebuild(self) -> None:
        """A new executor for the current layers: layers that were built keep their weights,
        new ones are initialized from (seed, position); recompiled when compiled."""
        kept = {id(layer): layer.get_weights() for layer in self.layers if layer.input_dim is not None}
        # A kept layer keeps its index (add appends, pop removes the last), and with it its
        # pruning mask, N:M shape, inference format and int8 quantization.
        old = self._net
        carried = {i: (self._masks.get(i), self._nm.get(i), old.sparse_format(i), old.sparse_min_batch(i),
                       old.quantization(i))
                   for i, layer in enumerate(self.layers) if id(layer) in kept and isinstance(layer, Dense)}
        width = self._input_dim
        for layer in self.layers:
            layer.input_dim = width
            width = layer.output_dim(width)
        try:
            net = _core.Network(self._input_dim, [layer._spec() for layer in self.layers], self.device)
        except BaseException:
            for layer in self.layers:
                if id(layer) not in kept:
                    layer.input_dim = None
            raise
        self._net = net
        for index, layer in enumerate(self.layers):
            if id(layer) in kept:
                layer._assign(kept[id(layer)])
                continue
            # A stream per position (counter word 2 = 2 keeps it apart from the
            # initialization and shuffle streams): the same new head gets the same weights.
            rng = np.random.Generator(np.random.Philox(key=self.seed, counter=[0, 0, 2, index]))
            weights = layer._initial_weights(rng)
            if weights:
                layer._assign(weights)
        self._masks, self._nm = {}, {}
        for i, (keep, nm, (fmt, max_batch), min_batch, q) in carried.items():
            if keep is not None:
                net.set_mask(i, np.ascontiguousarray(keep, dtype=np.uint8))
                self._masks[i] = keep
            if nm is not None:
                self._nm[i] = nm
            if fmt != "dense":
                net.set_sparse_format(i, fmt, max_batch, *(nm or (2, 4)), min_batch=min_batch)
            if q is not None:
                net.set_quantization(i, q["w_q"], q["w_scale"], q["in_scale"], q["in_zero"])
        if self._loss is not None:
            self._epoch = 0
            self._compile_net()

    @property
    def built(self) -> bool:
        return self._net is not None

    @property
    def input_dim(self) -> Optional[int]:
        return self._input_dim

    @property
    def output_dim(self) -> int:
        self._require_built("output_dim")
        return self._net.output_dim

    def build(self, input_dim: int) -> None:
        """Creates the executor and initializes the weights (seeded)."""
        if self._net is not None:
            if input_dim != self._input_dim:
                raise ValueError(f"model was built for {self._input_dim} features, got {input_dim}")
            return
        if not any(isinstance(layer, Dense) for layer in self.layers):
            raise ValueError("a Sequential model needs at least one Dense layer")
        width = input_dim
        for layer in self.layers:
            layer.input_dim = width
            width = layer.output_dim(width)
        self._net = _core.Network(input_dim, [layer._spec() for layer in self.layers], self.device)
        self._input_dim = input_dim
        # Philox: a counter-based stream, the same family the dropout masks use.
        rng = np.random.Generator(np.random.Philox(key=self.seed))
        for layer in self.layers:
            weights = layer._initial_weights(rng)
            if weights:
                layer.set_weights(weights)

    def _write_layer_params(self, w_off: int, kernel: np.ndarray, b_off: int, bias: np.ndarray) -> None:
        self._net.write_params(w_off, kernel.ravel())
        self._net.write_params(b_off, bias)

    def count_params(self) -> int:
        self._require_built("count_params")
        return int(self._net.num_params)

    def get_weights(self) -> List[np.ndarray]:
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Sets every layer's weights, in get_weights() order; all are checked before any
        is written, so a bad array leaves the model unchanged."""
        weights = list(weights)
        checked = []
        for layer in self.layers:
            n = layer._num_weight_arrays
            if len(weights) < n:
                raise ValueError(f"set_weights got too few arrays: layer {layer.name!r} needs {n} more")
            checked.append((layer, layer._check_weights(weights[:n])))
            weights = weights[n:]
        if weights:
            raise ValueError(f"set_weights got {len(weights)} more arrays than the model has")
        for layer, arrays in checked:
            layer._assign(arrays)

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        self._require_built("summary")
        rows = [("Layer", "Output shape", "Params")]
        trainable = 0
        for i, layer in enumerate(self.layers):
            detail = (f" ({self._dense_detail(i)})" if isinstance(layer, Dense) else
                      f" ({layer.rate})" if isinstance(layer, Dropout) else "")
            rows.append((f"{layer.name}{detail}", f"(None, {layer.output_dim(layer.input_dim)})",
                         f"{layer.count_params():,}"))
            # an int8 layer does not train (fit refuses a quantized model)
            if not (isinstance(layer, Dense) and self._net.quantized(i)):
                trainable += layer.count_trainable_params()
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        line = "-" * (sum(widths) + 6)
        print_fn(f'Model "{self.name}" on {self.device}, input (None, {self._input_dim})')
        print_fn(line)
        for i, r in enumerate(rows):
            print_fn(f"{r[0]:<{widths[0]}}   {r[1]:<{widths[1]}}   {r[2]:>{widths[2]}}")
            if i == 0:
                print_fn(line)
        print_fn(line)
        print_fn(f"Total params: {self.count_params():,}")
        print_fn(f"Trainable params: {trainable:,}")

    def _dense_detail(self, i: int) -> str:
        """Dense layer i's activation, then how inference runs it: int8 (static or dynamic
        inputs), the pruned share of its kernel and the sparse format with its batch range."""
        parts = [self.layers[i].activation]
        q = self._net.quantization(i)
        if q is not None:
            parts.append("int8 " + ("static" if q["in_scale"] > 0 else "dynamic"))
        if i in self._masks:
            parts.append(f"{1.0 - float(np.mean(self._masks[i])):.0%} pruned")
        fmt, max_batch = self._net.sparse_format(i)
        if fmt != "dense" and q is None:
            low = self._net.sparse_min_batch(i)
            parts.append(f"{fmt} for batch {low}+" if max_batch >= 2**62 else f"{fmt} for batch {low}-{max_batch}")
        return ", ".join(parts)

    # -- training ----------------------------------------------------------------------

    def compile(self, optimizer: Union[str, optimizers_mod.Optimizer] = "adam",
                loss: Union[str, losses_mod.Loss] = "softmax_cross_entropy",
                metrics: Optional[Iterable[str]] = None, clipnorm: Optional[float] = None,
                precision: str = "fp32") -> None:
        """Sets the optimizer, the loss and the metrics; resets the optimizer state, the
        step count and ``epochs_trained``. ``clipnorm`` clips the gradients by global
        norm, as the optimizer's own ``clipnorm`` (give one or the other).

        ``metrics``: names from ``customml.metrics.NAMES``: "accuracy", "precision",
        "recall", "f1" (binary for one logit or two classes, else macro), their
        ``_binary``/``_macro``/``_micro``/``_weighted`` variants, "confusion_matrix" and
        "roc_auc" (binary, or one-vs-rest macro for more classes) for classification
        losses; "mae", "rmse", "r2" for mse. The executor accumulates their statistics per
        batch; values follow sklearn.metrics.

        ``precision``: the number format of the dense layers' products: "fp32" (default,
        every device), or on CUDA tensor cores "tf32", "bf16" or "fp16" (operands rounded
        to it, float32 accumulation and float32 master weights; fp16 with dynamic loss
        scaling)."""
        optimizer = optimizers_mod.get(optimizer)
        if clipnorm is not None:
            if optimizer.clipnorm is not None and optimizer.clipnorm != clipnorm:
                raise ValueError(f"[compile] clipnorm={clipnorm!r} but the optimizer has clipnorm="
                                 f"{optimizer.clipnorm!r}; give it in compile or in the optimizer, not both")
            # A copy, so the caller's optimizer object is left as it was; the copy is what
            # save writes, so the clipping survives a round trip.
            optimizer = copy.copy(optimizer)
            optimizer.clipnorm = number("compile", "clipnorm", clipnorm)
            if optimizer.clipnorm == 0.0:
                raise ValueError(f"[compile] clipnorm must be > 0 (or None for no clipping), got {clipnorm!r}")
        loss = losses_mod.get(loss)
        metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics or ())
        for m in metrics:
            if not isinstance(m, str) or m not in metrics_mod.NAMES:
                raise ValueError(f"unknown metric {m!r}; available: {', '.join(metrics_mod.NAMES)}")
            if m in metrics_mod.CLASSIFICATION and not loss.classification:
                raise ValueError(f"metric {m!r} needs a classification loss, not {loss.name!r}")
            if m in metrics_mod.REGRESSION and loss.classification:
                raise ValueError(f"metric {m!r} needs the loss 'mse', not {loss.name!r}")
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"metrics lists a name twice: {list(metrics)}")
        if precision not in _PRECISIONS:
            raise ValueError(f"[compile] precision must be one of {', '.join(_PRECISIONS)}, got {precision!r}")
        if self._net is not None:
            _check_binary_metrics(metrics, self._net.output_dim)
        self._optimizer, self._loss, self._metrics = optimizer, loss, metrics
        self._precision = precision
        self._epoch = 0
        if self._net is not None:
            self._compile_net()

    @property
    def epochs_trained(self) -> int:
        """Epochs that fit completed since compile (restored by ``load`` from a file saved
        with ``include_optimizer=True``); the next fit draws its first epoch's shuffle order
        from this index."""
        return self._epoch

    @property
    def learning_rate(self) -> float:
        """The learning rate the next update uses (what a schedule or a
        LearningRateScheduler last set), as the executor holds it (float32)."""
        self._require_built("learning_rate")
        if self._optimizer is None:
            raise ValueError("[learning_rate] the model must be compiled first (model.compile(...))")
        return float(self._net.learning_rate)

    def _set_learning_rate(self, lr: float) -> None:
        self._net.set_learning_rate(lr)

    def _compile_net(self) -> None:
        config = dict(self._loss._config())
        config.update(self._optimizer._config())
        config["clip_norm"] = self._optimizer.clipnorm or 0.0
        config["precision"] = self._precision
        _check_binary_metrics(self._metrics, self._net.output_dim)
        self._net.compile(**config)
        self._net.set_metric_stats(**metrics_mod.needs(self._metrics))

    def _require_built(self, op: str) -> None:
        if self._net is None:
            raise ValueError(f"[{op}] the model is not built: give Sequential input_dim or call fit/predict first")

    def _ensure_ready(self, x: np.ndarray, op: str) -> None:
        if self._net is None:
            self.build(x.shape[1])
            if self._loss is not None:
                self._compile_net()
        if x.shape[1] != self._input_dim:
            raise ValueError(f"[{op}] x has {x.shape[1]} features but the model expects {self._input_dim}")

    def _as_targets(self, y, n: int, op: str, name: str = "y") -> np.ndarray:
        """Labels as int32 (n,) for classification losses; targets float32 (n, out) for mse."""
        if self._loss is None:
            raise ValueError(f"[{op}] the model must be compiled first (model.compile(...))")
        try:
            y = np.asarray(y)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"[{op}] {name} must be an array, got {type(y).__name__}: {exc}") from None
        if y.ndim == 0:
            raise ValueError(f"[{op}] {name} must be an array of {n} targets, got a scalar")
        if y.shape[0] != n:
            raise ValueError(f"[{op}] x has {n} samples but {name} has {y.shape[0]}")
        out = self._net.output_dim
        if not self._loss.classification:
            if y.ndim == 1 and out == 1:
                y = y.reshape(n, 1)
            if y.shape != (n, out):
                raise ValueError(f"[{op}] {name} has shape {y.shape}, expected ({n}, {out}) for loss 'mse'")
            if not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y):
                raise TypeError(f"[{op}] {name} must be numeric, got dtype {y.dtype}")
            y = np.ascontiguousarray(y, dtype=np.float32)
            check_finite(y, name, op)
            return y
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"[{op}] {name} must be 1-D class labels, got shape {y.shape}"
                             " (one-hot targets: pass argmax(axis=1))")
        if y.dtype == np.bool_:
            y = y.astype(np.int32)
        elif np.issubdtype(y.dtype, np.floating):
            if not np.isfinite(y).all():
                check_finite(y, name, op)
            if not (y == np.round(y)).all():
                raise ValueError(f"[{op}] {name} must hold integer class labels, got non-integer values")
        elif not np.issubdtype(y.dtype, np.integer):
            raise TypeError(f"[{op}] {name} must hold integer class labels, got dtype {y.dtype}")
        classes = 2 if self._loss.name == "binary_cross_entropy" else out
        lo, hi = y.min(), y.max()
        if lo < 0 or hi >= classes:
            bad = int(lo if lo < 0 else hi)
            raise ValueError(f"[{op}] {name} contains label {bad!r} outside [0, {classes})"
                             f" (the model has {out} output{'s' if out != 1 else ''})")
        return np.ascontiguousarray(y, dtype=np.int32)

    def _as_sample_weight(self, w, n: int, op: str, name: str = "sample_weight") -> np.ndarray:
        """float32 (n,), finite and >= 0 (the executor checks each batch again)."""
        try:
            w = np.asarray(w)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"[{op}] {name} must be an array, got {type(w).__name__}: {exc}") from None
        if w.dtype.kind not in "biuf":
            raise TypeError(f"[{op}] {name} must be numeric, got dtype {w.dtype}")
        if w.ndim == 2 and w.shape[1] == 1:
            w = w[:, 0]
        if w.shape != (n,):
            raise ValueError(f"[{op}] {name} has shape {w.shape}, expected ({n},): one weight per sample")
        w = np.ascontiguousarray(w, dtype=np.float32)
        check_finite(w, name, op)
        if (w < 0).any():
            raise ValueError(f"[{op}] {name} must be >= 0, got {float(w[np.argmax(w < 0)])!r} at index "
                             f"{int(np.argmax(w < 0))}")
        return w

    def _iterable_batches(self, data, steps_per_epoch: Optional[int], op: str):
        """A function of the epoch that yields (x, y, index, sample_weight) per batch from
        an iterable of (x, y) or (x, y, sample_weight) tuples. A re-iterable (a list,
        ``customml.data.batches``) starts a new pass each epoch; a one-shot iterator (a
        generator) is one continuing stream, and an epoch that finds it exhausted is an
        error, since silently training on nothing would look like convergence."""
        one_shot = iter(data) is data
        stream = iter(data) if one_shot else None
        index_cache: Dict[int, np.ndarray] = {}

        def epoch_batches(epoch: int):
            it = stream if one_shot else iter(data)
            step = 0
            while steps_per_epoch is None or step < steps_per_epoch:
                try:
                    item = next(it)
                except StopIteration:
                    break
                if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                    raise ValueError(f"[{op}] batch {step} of the iterable must be a tuple (x, y) or "
                                     f"(x, y, sample_weight), got {type(item).__name__}")
                xb = as_features(item[0], f"batch {step} x", op)
                self._ensure_ready(xb, op)
                check_finite(xb, f"batch {step} x", op)
                b = xb.shape[0]
                yb = self._as_targets(item[1], b, op, f"batch {step} y")
                wb = None if len(item) == 2 or item[2] is None else \
                    self._as_sample_weight(item[2], b, op, f"batch {step} sample_weight")
                if b not in index_cache:
                    index_cache[b] = np.arange(b, dtype=np.int64)
                yield xb, yb, index_cache[b], wb
                step += 1
            if step == 0:
                raise ValueError(
                    f"[{op}] the iterable of batches yielded no batch in epoch {epoch + 1}"
                    + (": a one-shot iterator (e.g. a generator) is exhausted after one pass; pass a re-iterable "
                       "(a list, customml.data.batches(...)) or give steps_per_epoch= and a stream long enough "
                       "for all epochs" if one_shot else ""))
        return epoch_batches

    def fit(self, x, y=None, epochs: int = 1, batch_size: int = 32, shuffle: bool = True,
            validation_split: float = 0.0, validation_data: Optional[Tuple] = None,
            seed: Optional[int] = None, verbose: int = 1,
            callbacks: Optional[Sequence[Callback]] = None, sample_weight=None,
            steps_per_epoch: Optional[int] = None, initial_epoch: Optional[int] = None) -> History:
        """Trains for ``epochs`` passes over (x, y) in mini-batches; one C++ call per
        batch runs forward, loss, backward, clipping, the update and the metric
        counters. Returns a History (also kept as ``model.history``). Ctrl-C stops
        between batches with KeyboardInterrupt, leaving the model consistent.

        ``sample_weight`` (one number >= 0 per sample) weights each sample's loss: a
        batch's loss is ``sum_i w_i l_i / sum_i w_i`` with ``w_i`` the sample weight times
        the loss's class weight (so only the ratios matter; a batch of zero weights makes
        no gradient). The reported loss is weighted so; the metrics are not.

        ``x`` may instead be an iterable of batches, ``(x, y)`` or ``(x, y,
        sample_weight)`` tuples, with ``y`` left out: a re-iterable (a list,
        ``customml.data.batches(...)``) is passed over once per epoch; a one-shot iterator
        (a generator) is read as one stream, ``steps_per_epoch`` batches per epoch (all of
        it when not given, then a later epoch is an error). The iterable sets the order:
        ``shuffle``, ``batch_size`` and ``validation_split`` do not apply.

        Training continues where the last fit since compile stopped: epoch e's shuffle
        order is drawn from (seed, e) and the dropout masks from (seed, step), so two
        fits of 2 epochs equal one of 4, bit for bit, and so does a fit resumed from a
        file saved with ``include_optimizer=True``. ``initial_epoch`` takes Keras'
        convention instead: ``epochs`` is then the index of the last epoch, so
        ``fit(epochs=E, initial_epoch=I)`` runs E - I epochs numbered from I (the shuffle
        order of epoch I onwards): after ``load``, ``fit(epochs=E,
        initial_epoch=model.epochs_trained)`` completes an interrupted run of E epochs.

        ``callbacks``: customml.callbacks objects whose hooks run around each epoch
        (EarlyStopping, ModelCheckpoint, LearningRateScheduler, CSVLogger, or your own).
        A learning-rate schedule given to the optimizer is evaluated before each batch at
        the executor's step count."""
        op = "fit"
        callbacks = list(callbacks or ())
        from_iterable = y is None
        if from_iterable and (isinstance(x, np.ndarray) or not hasattr(x, "__iter__")):
            raise ValueError("[fit] y is missing: give (x, y) arrays, or as x an iterable of (x, y) batches")
        if steps_per_epoch is not None:
            steps_per_epoch = positive_int(steps_per_epoch, "steps_per_epoch", op)
            if not from_iterable:
                raise ValueError("[fit] steps_per_epoch applies to an iterable of batches; with arrays an epoch "
                                 "is one pass over x")
        if from_iterable and (validation_split or sample_weight is not None):
            raise ValueError("[fit] with an iterable of batches, give validation_data rather than "
                             "validation_split, and sample weights as a third element of each batch")
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise ValueError(f"[fit] callbacks must be customml.callbacks.Callback objects, got "
                                 f"{type(cb).__name__}")
        if self._loss is None:
            raise ValueError("[fit] the model must be compiled first (model.compile(...))")
        for layer in self.layers:
            if isinstance(layer, Normalization) and not layer.adapted:
                raise ValueError(f"[fit] Normalization layer {layer.name!r} is not adapted: call "
                                 f"model.layers[{layer._index}].adapt(x_train) (or give it mean and variance) first")
        epochs = positive_int(epochs, "epochs", op, minimum=0)
        if initial_epoch is not None:
            initial_epoch = positive_int(initial_epoch, "initial_epoch", op, minimum=0)
            if initial_epoch > epochs:
                raise ValueError(f"[fit] initial_epoch ({initial_epoch}) is past epochs ({epochs}), the index of the "
                                 "last epoch (Keras' convention)")
        batch_size = positive_int(batch_size, "batch_size", op)
        if verbose not in (0, 1, 2):
            raise ValueError(f"[fit] verbose must be 0, 1 or 2, got {verbose!r}")
        if not from_iterable:
            x = as_features(x, "x", op)
            self._ensure_ready(x, op)
            y = self._as_targets(y, x.shape[0], op)
            check_finite(x, "x", op)
            if sample_weight is not None:
                sample_weight = self._as_sample_weight(sample_weight, x.shape[0], op)
        if validation_data is not None:
            if validation_split:
                raise ValueError("[fit] give validation_split or validation_data, not both")
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("[fit] validation_data must be a tuple (x_val, y_val)")
            x_val = as_features(validation_data[0], "validation_data x", op)
            if from_iterable and self._net is None:
                self._ensure_ready(x_val, op)
            if x_val.shape[1] != self._input_dim:
                raise ValueError(f"[fit] validation_data x has {x_val.shape[1]} features but the model expects "
                                 f"{self._input_dim}")
            y_val = self._as_targets(validation_data[1], x_val.shape[0], op, "validation_data y")
            check_finite(x_val, "validation_data x", op)
        elif validation_split:
            if isinstance(validation_split, bool) or not (0.0 < validation_split < 1.0):
                raise ValueError(f"[fit] validation_split must be in [0, 1), got {validation_split!r}")
            # As Keras: the last fraction of the samples, taken before any shuffling.
            n_val = int(x.shape[0] * validation_split)
            if n_val == 0 or n_val == x.shape[0]:
                raise ValueError(f"[fit] validation_split={validation_split} of {x.shape[0]} samples leaves an "
                                 "empty training or validation set")
            x, x_val = x[:-n_val], x[-n_val:]
            y, y_val = y[:-n_val], y[-n_val:]
            if sample_weight is not None:
                sample_weight = sample_weight[:-n_val]
        else:
            x_val = y_val = None

        seed = self.seed if seed is None else positive_int(seed, "seed", op, minimum=0)
        if from_iterable:
            epoch_batches = self._iterable_batches(x, steps_per_epoch, op)
            steps = steps_per_epoch if steps_per_epoch is not None else (len(x) if hasattr(x, "__len__") else None)
            n = None
        else:
            n = x.shape[0]
            steps = -(-n // batch_size)

            def epoch_batches(epoch: int):
                if shuffle:
                    # One Philox stream per epoch (counter word 3; word 2 = 1 keeps it apart
                    # from the initialization stream), so an epoch's order depends on the
                    # seed and its index alone and a resumed fit draws what a straight one would.
                    order = np.arange(n, dtype=np.int64)
                    stream = np.random.Philox(key=seed, counter=[0, 0, 1, self._epoch])
                    np.random.Generator(stream).shuffle(order)
                else:
                    order = np.arange(n, dtype=np.int64)
                for start in range(0, n, batch_size):
                    yield x, y, order[start:start + batch_size], sample_weight
        seed_pending = True
        if initial_epoch is not None:
            self._epoch = initial_epoch
            epochs -= initial_epoch
        history = History({"epochs": epochs, "batch_size": None if from_iterable else batch_size, "steps": steps,
                           "samples": n})
        self.history = history
        schedule = self._optimizer.learning_rate
        if not isinstance(schedule, schedules_mod.LearningRateSchedule):
            schedule = None
        batch_hooks = [cb for cb in callbacks if type(cb).on_batch_end is not Callback.on_batch_end]
        self.stop_training = False
        for cb in callbacks:
            cb.set_model(self)
        self._callbacks = tuple(callbacks)
        for cb in callbacks:
            cb.on_train_begin({})
        restored, self._restored_callback_state = self._restored_callback_state, None
        for cb in callbacks:
            if restored and cb.state_key() in restored:
                cb.set_state(restored[cb.state_key()])
        for epoch in range(epochs):
            start_time = time.perf_counter()
            model_epoch = self._epoch
            for cb in callbacks:
                cb.on_epoch_begin(model_epoch, {})
            if self._net is not None:  # else an iterable's first batch builds it, with fresh metrics
                self._net.reset_metrics()
            bar = self._progress(epoch, epochs, steps) if verbose == 1 else None
            try:
                for step, (xb, yb, index, wb) in enumerate(epoch_batches(epoch)):
                    if schedule is not None:
                        # One Python call per batch (a few hundred ns) against a C++ step
                        # of tens of microseconds or more: per-step schedules stay exact.
                        self._net.set_learning_rate(schedule(self._net.step))
                    if seed_pending:  # an iterable's first batch builds the model
                        self._net.set_seed(seed)
                        seed_pending = False
                    self._net.train_batch(xb, yb, index, wb)
                    if batch_hooks:
                        batch_logs = self._read_metrics()
                        for cb in batch_hooks:
                            cb.on_batch_end(step, batch_logs)
                    if bar is not None:
                        bar.update(1)
                        if step % 16 == 0 or (steps is not None and step == steps - 1):
                            bar.set_postfix(self._read_metrics(cheap_only=True), refresh=False)
                logs = self._read_metrics()
                if x_val is not None:
                    logs.update({f"val_{k}": v for k, v in self._evaluate_arrays(x_val, y_val, 1024).items()})
                self._epoch += 1
                for cb in callbacks:
                    cb.on_epoch_end(model_epoch, logs)
                history._record(epoch, logs)
                if bar is not None:
                    bar.set_postfix(_scalars(logs), refresh=False)
            finally:
                if bar is not None:
                    bar.close()
            if verbose == 2:
                parts = " - ".join(f"{k}: {v:.4f}" for k, v in _scalars(logs).items())
                print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - start_time:.2f}s - {parts}",
                      file=sys.stdout, flush=True)
            if self.stop_training:
                break
        for cb in callbacks:
            cb.on_train_end({})
        return history

    def _progress(self, epoch: int, epochs: int, steps: int):
        from tqdm.auto import tqdm

        return tqdm(total=steps, desc=f"Epoch {epoch + 1}/{epochs}", unit="batch", leave=True,
                    dynamic_ncols=True, file=sys.stderr)

    def _read_metrics(self, cheap_only: bool = False) -> Dict[str, float]:
        """The loss and the compiled metrics from the executor's statistics;
        ``cheap_only`` (the progress bar) leaves out roc_auc (a sort of the epoch's
        scores) and the confusion matrix."""
        loss_sum, correct, count = self._net.metrics()
        logs = {"loss": loss_sum / count if count else float("nan")}
        counts = stats = None
        for m in self._metrics:
            if m == "accuracy":
                logs[m] = correct / count if count else float("nan")
            elif m == "roc_auc":
                if not cheap_only:
                    logs[m] = float(self._net.roc_auc())
            elif m in metrics_mod.REGRESSION:
                if stats is None:
                    stats = self._net.regression_stats()
                logs[m] = metrics_mod.from_regression_stats(stats, count, m)
            else:
                if counts is None:
                    counts = self._net.confusion_matrix()
                if m == "confusion_matrix":
                    if not cheap_only:
                        logs[m] = counts
                else:
                    logs[m] = metrics_mod.from_confusion(counts, m) if count else float("nan")
        return logs

    def _evaluate_arrays(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> Dict[str, float]:
        self._net.reset_metrics()
        self._net.evaluate(x, y, batch_size)
        return self._read_metrics()

    def evaluate(self, x, y, batch_size: int = 1024) -> Dict[str, float]:
        """Loss and compiled metrics over (x, y), dropout off: ``{"loss": ..., "accuracy": ...}``;
        "confusion_matrix" is an int64 array (classes, classes), rows = true labels."""
        op = "evaluate"
        batch_size = positive_int(batch_size, "batch_size", op)
        x = as_features(x, "x", op)
        self._ensure_ready(x, op)
        y = self._as_targets(y, x.shape[0], op)
        return self._evaluate_arrays(x, y, batch_size)

    # -- inference ---------------------------------------------------------------------

    def predict(self, x, batch_size: int = 1024, out: Optional[np.ndarray] = None) -> np.ndarray:
        """The last layer's output (logits for classification losses), float32
        (samples, outputs). With ``out=`` it writes into that C-contiguous float32 array
        and allocates nothing. Safe to call from many threads at once."""
        net = self._net
        # Fast path: a ready model and a plain batch size. The executor takes x as it is
        # when x is already float32 (the dtype object itself), 2-D, C-contiguous and has
        # rows, allocating out when it is None; for anything else it returns None and
        # does nothing, and the checked path below converts x (it accepts any spelling
        # of float32, lists, other dtypes) and names what is wrong.
        if net is not None and type(batch_size) is int and batch_size > 0:
            y = net.try_predict(x, out, batch_size)
            if y is not None:
                return y
        op = "predict"
        x = as_features(x, "x", op)
        self._ensure_ready(x, op)
        if not (type(batch_size) is int and batch_size > 0):
            batch_size = positive_int(batch_size, "batch_size", op)
        if out is not None and not isinstance(out, np.ndarray):
            raise TypeError(f"[predict] out must be a numpy array, got {type(out).__name__}")
        # The executor checks out's dtype and shape, and that it shares no memory with x,
        # and allocates it when it is None.
        return self._net.predict(x, out, batch_size)

    def predict_proba(self, x, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities: softmax of the logits (softmax cross-entropy) or, for
        binary cross-entropy, the sigmoid of the single logit as P(class 1), shape (n, 1)."""
        if self._loss is None or not self._loss.classification:
            raise ValueError("[predict_proba] needs a model compiled with a classification loss")
        logits = self.predict(x, batch_size=batch_size)
        if self._loss.name == "binary_cross_entropy":
            # exp of a non-positive number only: no overflow for large |logit|
            e = np.exp(-np.abs(logits))
            return np.where(logits >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits

    # -- files -------------------------------------------------------------------------

    def save(self, path, include_optimizer: bool = False) -> None:
        """Saves the model as a safetensors file (weights, architecture, compile
        configuration); ``include_optimizer=True`` adds the optimizer state, the step count
        and the epochs trained so that ``customml.load`` + fit resumes exactly. The write
        is atomic. See ``customml.io`` for the layout."""
        atomic_write(path, _model_file.encode(describe(self, include_optimizer)))

    def load_weights(self, path) -> None:
        """Loads the weights of a file saved by ``save`` into this model, which must have
        the same layers and input size; the optimizer state is left as it is."""
        _load_weights(self, path)

    @classmethod
    def _from_description(cls, desc: ModelDescription, device: str) -> "Sequential":
        """A new model on ``device`` from a description (what ``customml.io`` reads from a
        file): its layers, its compile configuration, its weights and, when the description
        holds them, its optimizer state and callback states."""
        arch = desc.architecture
        model = cls(desc.layers(), input_dim=arch["input_dim"], device=device, seed=arch["seed"], name=arch["name"])
        args = desc.compile_args()
        if args is not None:
            model.compile(**args)
        model._restore(desc)
        return model

    def _restore(self, desc: ModelDescription, with_state: bool = True) -> None:
        """Writes a description's weights straight into the executor: bit for bit, NaN
        payloads included (set_weights would refuse non-finite values a saved model may
        hold); then its pruning (the masks, cleared on layers it has none for, the N:M
        shapes and the inference formats) and its int8 layers; ``with_state``, its optimizer
        state, step count, epochs trained and callback states too, where it has them."""
        net = self._net
        for i in list(self._masks):
            net.clear_mask(i)
            del self._masks[i]
        self._nm.clear()
        for i, w in desc.weights.items():
            if w.int8 is None:
                net.clear_quantization(i)
                net.write_params(net.weight_offsets[i], np.ascontiguousarray(w.kernel).ravel())
            net.write_params(net.bias_offsets[i], np.ascontiguousarray(w.bias).ravel())
        for i, w in desc.weights.items():
            if w.keep is not None:
                net.set_mask(i, w.keep.astype(np.uint8))
                self._masks[i] = w.keep
        for i, w in desc.weights.items():
            if w.n_m is not None:
                self._nm[i] = w.n_m
            net.set_sparse_format(i, w.format, w.max_batch, *(w.n_m or (2, 4)), min_batch=w.min_batch)
        for i, w in desc.weights.items():
            if w.int8 is not None:
                net.set_quantization(i, w.int8.w_q, w.int8.w_scale, w.int8.in_scale, w.int8.in_zero)
        state = desc.optimizer
        if not with_state or state is None:
            return
        for slot_index, arrays in enumerate(state.slots.values()):
            for (i, part), values in arrays.items():
                offset = (net.weight_offsets if part == "kernel" else net.bias_offsets)[i]
                net.write_state(slot_index, offset, values.ravel())
        net.set_step(state.step)
        if state.loss_scale is not None:
            net.set_loss_scale(*state.loss_scale)
        self._epoch = state.epochs_trained
        self._restored_callback_state = desc.callbacks or None

    def export_onnx(self, path, opset: int = 17) -> None:
        """Writes the inference graph (predict's output, dropout removed) as an ONNX model
        with a dynamic batch dimension; needs the optional extra ``customml[onnx]``."""
        from . import export

        export.export_onnx(self, path, opset=opset)

    def __repr__(self) -> str:
        return f"Sequential({self.layers!r}, input_dim={self._input_dim}, device={self.device!r})"


def _load_weights(model: Sequential, path) -> None:
    """``Sequential.load_weights`` and ``customml.io.load_weights``."""
    desc = _model_file.read(path)
    mismatch = desc.mismatch(model)
    if mismatch:
        raise ValueError(f"[load_weights] {os.fspath(path)} does not fit the model: {mismatch}")
    if model._net is None:
        model.build(desc.architecture["input_dim"])
        if model._loss is not None:
            model._compile_net()
    model._restore(desc, with_state=False)
    # A Normalization's statistics are its weights (as in Keras); a Rescaling's constants
    # are configuration, kept as the model has them.
    for spec, layer in zip(desc.architecture["layers"], model.layers):
        if spec["kind"] == "normalization" and spec["mean"] is not None:
            layer._set_stats(spec["mean"], spec["variance"])
