"""Sequential: a Keras-like model over the C++ network executor.

Python here checks and converts what users pass, then makes one executor call per batch (fit) or per call
(predict, evaluate); the maths runs in C++ with the GIL released. This module holds the model (its layers, the
executor, compile, predict and its files); fit and evaluate come from its base class, ``_trainer.Trainer``.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union, cast

import numpy as np

from . import _core, _model_file, ops
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optimizers as optimizers_mod
from ._callback import Callback
from ._checks import as_features, boolean, number, positive_int
from ._checks import check_finite as _check_finite
from ._history import History
from ._model_description import ModelDescription, describe
from ._rebuild import rebuild
from ._safetensors import atomic_write
from ._trainer import Trainer
from .layers import Dense, Dropout, Layer, Normalization

__all__ = ["Sequential"]

_PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


def _check_binary_metrics(metrics: Tuple[str, ...], outputs: int) -> None:
    for m in metrics:
        if m.endswith("_binary") and outputs > 2:
            raise ValueError(f"metric {m!r} needs a binary classifier (one or two outputs), the model has {outputs}")


class Sequential(Trainer):
    """A stack of layers trained and served by the C++ executor.

    ``input_dim`` builds the model at once (otherwise the first fit/predict builds it
    from x). ``device``: "cpu" (or "cuda" in a CUDA build with a GPU). ``seed`` makes
    initialization, shuffling and dropout reproducible: the same seed gives
    bit-identical weights for the same ISA level and thread count.
    """

    def __init__(
        self,
        layers: Sequence[Layer] = (),
        input_dim: Optional[int] = None,
        device: str = "cpu",
        seed: Optional[int] = None,
        name: str = "sequential",
    ):
        if not isinstance(device, str):
            raise TypeError(f"device must be a string such as 'cpu', got {type(device).__name__}")
        device = _core.check_device(device)
        if seed is None:
            seed = int(cast(int, np.random.SeedSequence().entropy) % (2**63))  # an int when drawn
        self.seed = positive_int(seed, "seed", "Sequential", minimum=0)
        self.device = device
        self.name = name
        self.layers: List[Layer] = []
        self._net = None
        # A weight change of several executor calls (set_weights, load_weights, pruning) is
        # a transaction under this lock (_transaction), and save, evaluate and each
        # training step take it too: what predict runs and what save writes is always one
        # whole weight set (docs/decisions.md, "Concurrency").
        self._lock = threading.RLock()
        self._loss: Optional[losses_mod.Loss] = None
        self._optimizer: Optional[optimizers_mod.Optimizer] = None
        self._metrics: Tuple[str, ...] = ()
        self._precision = "fp32"
        self._cuda_graph = False
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
        self.pruning_report: Any = None  # a prune.PruneReport (prune imports this module)
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
        state and step count, as after ``compile``). A concurrent predict runs the model
        before the change or after it, never a mix."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a customml layer, got {type(layer).__name__}")
        with self._lock:  # a transaction, as set_weights: save, steps and evaluate wait
            self._add(layer)

    def _add(self, layer: Layer) -> None:
        if layer._model is not None:
            raise ValueError(f"layer {layer.name!r} already belongs to a model")
        if layer._preprocessing and any(not lay._preprocessing for lay in self.layers):
            raise ValueError(
                f"preprocessing layer {type(layer).__name__} must come first in the model, before "
                "any Dense or Dropout layer"
            )
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
                rebuild(self)
            except BaseException:
                self.layers.pop()
                layer._model, layer._index, layer.input_dim = None, -1, None
                raise

    def pop(self) -> Layer:
        """Removes and returns the last layer, e.g. to replace a classifier's head; a built
        model is rebuilt as by ``add``, keeping the other layers' weights."""
        with self._lock:  # a transaction, as add
            return self._pop()

    def _pop(self) -> Layer:
        if not self.layers:
            raise ValueError("[pop] the model has no layers")
        if self._net is not None and not any(isinstance(lay, Dense) for lay in self.layers[:-1]):
            raise ValueError("[pop] cannot remove the only Dense layer of a built model")
        layer = self.layers.pop()
        if self._net is not None:
            try:
                rebuild(self)
            except BaseException:
                self.layers.append(layer)
                raise
        layer._model, layer._index, layer.input_dim = None, -1, None
        return layer

    @property
    def built(self) -> bool:
        return self._net is not None

    @property
    def input_dim(self) -> Optional[int]:
        return self._input_dim

    @property
    def output_dim(self) -> int:
        self._require_built("output_dim")
        assert self._net is not None
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
        self._net = _core.Network(input_dim, [_core.LayerSpec(**layer._spec()) for layer in self.layers], self.device)
        self._input_dim = input_dim
        # Philox: a counter-based stream, the same family the dropout masks use.
        rng = np.random.Generator(np.random.Philox(key=self.seed))
        with self._transaction():
            for layer in self.layers:
                weights = layer._initial_weights(rng)
                if weights:
                    layer.set_weights(weights)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Executor writes that form one weight change: predict runs the weights before it until
        it ends (Network.begin_update); save, evaluate, steps and transactions wait. Nests."""
        with self._lock:
            net = self._net
            if net is None:
                yield
                return
            net.begin_update()
            try:
                yield
            finally:
                net.end_update()

    def _write_layer_params(self, w_off: int, kernel: np.ndarray, b_off: int, bias: np.ndarray) -> None:
        assert self._net is not None  # a layer writes only when built
        with self._transaction():
            self._net.write_params(w_off, kernel.ravel())
            self._net.write_params(b_off, bias)

    def count_params(self) -> int:
        self._require_built("count_params")
        assert self._net is not None
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
        with self._transaction():
            for layer, arrays in checked:
                layer._assign(arrays)

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        self._require_built("summary")
        assert self._net is not None
        rows = [("Layer", "Output shape", "Params")]
        trainable = 0
        for i, layer in enumerate(self.layers):
            detail = (
                f" ({self._dense_detail(i)})"
                if isinstance(layer, Dense)
                else f" ({layer.rate})"
                if isinstance(layer, Dropout)
                else ""
            )
            assert layer.input_dim is not None
            rows.append(
                (f"{layer.name}{detail}", f"(None, {layer.output_dim(layer.input_dim)})", f"{layer.count_params():,}")
            )
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
        assert self._net is not None
        parts = [cast(Dense, self.layers[i]).activation]
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

    # -- compile -----------------------------------------------------------------------

    def compile(
        self,
        optimizer: Union[str, optimizers_mod.Optimizer] = "adam",
        loss: Union[str, losses_mod.Loss] = "softmax_cross_entropy",
        metrics: Optional[Iterable[str]] = None,
        clipnorm: Optional[float] = None,
        precision: str = "fp32",
        cuda_graph: bool = False,
    ) -> None:
        """Sets the optimizer, the loss and the metrics; resets the optimizer state, the step count and
        ``epochs_trained``. ``clipnorm`` clips gradients by global norm like the optimizer's (give one or the other).

        ``metrics``: names from ``customml.metrics.NAMES``: "accuracy", "precision", "recall", "f1" (binary for
        one logit or two classes, else macro), their ``_binary``/``_macro``/``_micro``/``_weighted`` variants,
        "confusion_matrix" and "roc_auc" (binary, or one-vs-rest macro for more classes) for classification
        losses; "mae", "rmse", "r2" for mse; statistics accumulated per batch, values as sklearn.metrics.

        ``precision``: the number format of the dense layers' products: "fp32" (default, every device), or on
        CUDA tensor cores "tf32", "bf16" or "fp16" (operands rounded to it, float32 accumulation and float32
        master weights; fp16 with dynamic loss scaling).

        ``cuda_graph``: on "cuda" ("cuda-emulated" too), each training step is recorded once as a CUDA graph and
        replayed while its shape and configuration stay (batches staged in pinned memory); not with "roc_auc"."""
        optimizer = optimizers_mod.get(optimizer)
        if clipnorm is not None:
            if optimizer.clipnorm is not None and optimizer.clipnorm != clipnorm:
                raise ValueError(
                    f"[compile] clipnorm={clipnorm!r} but the optimizer has clipnorm="
                    f"{optimizer.clipnorm!r}; give it in compile or in the optimizer, not both"
                )
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
        self._precision, self._cuda_graph = precision, boolean("compile", "cuda_graph", cuda_graph)
        self._epoch = 0
        if self._net is not None:
            self._compile_net()

    @property
    def epochs_trained(self) -> int:
        """Epochs that fit completed since compile (restored by ``load`` from a file saved with
        ``include_optimizer=True``); the next fit draws its first epoch's shuffle order from this index."""
        return self._epoch

    @property
    def learning_rate(self) -> float:
        """The learning rate the next update uses (what a schedule or a LearningRateScheduler last set), as the
        executor holds it (float32)."""
        self._require_built("learning_rate")
        if self._optimizer is None:
            raise ValueError("[learning_rate] the model must be compiled first (model.compile(...))")
        assert self._net is not None
        return float(self._net.learning_rate)

    def _set_learning_rate(self, lr: float) -> None:
        assert self._net is not None
        self._net.set_learning_rate(lr)

    def _compile_net(self, net: Optional[_core.Network] = None) -> None:
        """Compiles ``net`` (the model's executor unless given: _rebuild's new one)."""
        net = net or self._net
        assert net is not None and self._loss is not None and self._optimizer is not None
        loss = dict(self._loss._config())
        update = dict(self._optimizer._config())
        update_config = {"sgd": _core.SgdConfig, "adam": _core.AdamConfig}[update.pop("optimizer")]
        _check_binary_metrics(self._metrics, net.output_dim)
        net.compile(
            _core.LossConfig(loss.pop("loss"), **loss),
            _core.OptimizerConfig(update_config(**update), clip_norm=self._optimizer.clipnorm or 0.0),
            self._precision,
        )
        net.set_metric_stats(_core.MetricStats(**metrics_mod.needs(self._metrics)))
        net.set_cuda_graph(self._cuda_graph)

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

    # -- inference ---------------------------------------------------------------------

    def predict(
        self, x, batch_size: int = 1024, out: Optional[np.ndarray] = None, check_finite: bool = False
    ) -> np.ndarray:
        """The last layer's output (logits for classification losses), float32
        (samples, outputs). With ``out=`` it writes into that C-contiguous float32 array
        and allocates nothing. Safe to call from many threads at once. NaN and inf in x
        propagate (an int8 model's row with one is NaN); ``check_finite=True`` refuses such
        an x instead, naming the first row and column."""
        net = self._net
        if check_finite:
            x = as_features(x, "x", "predict")
            _check_finite(x, "x", "predict", "pass check_finite=False to get NaN outputs for such rows")
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
        assert self._net is not None
        return self._net.predict(x, out, batch_size)

    def predict_proba(self, x, batch_size: int = 1024, check_finite: bool = False) -> np.ndarray:
        """Class probabilities: softmax of the logits (softmax cross-entropy) or, for
        binary cross-entropy, the sigmoid of the single logit as P(class 1), shape (n, 1).
        A row with NaN or inf gives NaN probabilities; ``check_finite`` as in predict."""
        if self._loss is None or not self._loss.classification:
            raise ValueError("[predict_proba] needs a model compiled with a classification loss")
        logits = self.predict(x, batch_size=batch_size, check_finite=check_finite)
        # predict's output is host memory whatever the device: the CPU ops, in place.
        if self._loss.name == "binary_cross_entropy":
            return ops.sigmoid(logits, out=logits)
        return ops.softmax(logits, out=logits)

    # -- files -------------------------------------------------------------------------

    def save(self, path, include_optimizer: bool = False) -> None:
        """Saves the model as a safetensors file (weights, architecture, compile
        configuration); ``include_optimizer=True`` adds the optimizer state, the step count
        and the epochs trained so that ``customml.load`` + fit resumes exactly. The write
        is atomic. See ``customml.io`` for the layout."""
        with self._lock:  # one whole weight set, never half a transaction or a step
            data = _model_file.encode(describe(self, include_optimizer))
        atomic_write(path, data)

    def load_weights(self, path) -> None:
        """Loads the weights of a file saved by ``save`` into this model, which must have
        the same layers and input size; the optimizer state is left as it is. The file's
        configuration is checked as ``customml.load`` checks it."""
        desc = _model_file.read(path)
        Sequential._configured(desc, os.fspath(path))  # load's checks, on an unbuilt model
        mismatch = desc.mismatch(self)
        if mismatch:
            raise ValueError(f"[load_weights] {os.fspath(path)} does not fit the model: {mismatch}")
        if self._net is None:
            self.build(desc.architecture["input_dim"])
            if self._loss is not None:
                self._compile_net()
        with self._transaction():
            self._restore(desc, with_state=False)
            # A Normalization's statistics are its weights (as in Keras); a Rescaling's
            # constants are configuration, kept as the model has them.
            for spec, layer in zip(desc.architecture["layers"], self.layers):
                if spec["kind"] == "normalization" and spec["mean"] is not None:
                    cast(Normalization, layer)._set_stats(spec["mean"], spec["variance"])

    @classmethod
    def _configured(cls, desc: ModelDescription, where: str, device: str = "cpu", build: bool = False) -> "Sequential":
        """The model a description configures (its layers and compile configuration; built
        when ``build``, else nothing is allocated), any invalid configuration a ValueError
        naming ``where``: the one check of a file's configuration, for load and load_weights."""
        arch = desc.architecture
        try:
            input_dim = arch["input_dim"] if build else None
            model = cls(desc.layers(), input_dim=input_dim, device=device, seed=arch["seed"], name=arch["name"])
            args = desc.compile_args()
            if args is not None:
                model.compile(**args)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: invalid model configuration: {exc}") from None
        return model

    @classmethod
    def _from_description(cls, desc: ModelDescription, device: str, where: str) -> "Sequential":
        """A new model on ``device`` from a description (what ``customml.io`` reads from
        ``where``): its layers, its compile configuration, its weights and, when the
        description holds them, its optimizer state and callback states."""
        model = cls._configured(desc, where, device, build=True)
        try:
            model._restore(desc)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: invalid model configuration: {exc}") from None
        return model

    def _restore(self, desc: ModelDescription, with_state: bool = True) -> None:
        """Writes a description's weights straight into the executor: bit for bit, NaN
        payloads included (set_weights would refuse non-finite values a saved model may
        hold); then its pruning (the masks, cleared on layers it has none for, the N:M
        shapes and the inference formats) and its int8 layers; ``with_state``, its optimizer
        state, step count, epochs trained and callback states too, where it has them."""
        with self._transaction():
            self._restore_in_transaction(desc, with_state)

    def _restore_in_transaction(self, desc: ModelDescription, with_state: bool) -> None:
        net = self._net
        assert net is not None
        for i in list(self._masks):
            net.clear_mask(i)
            del self._masks[i]
        self._nm.clear()
        for i, w in desc.weights.items():
            if w.int8 is None:
                net.clear_quantization(i)
                net.set_bf16(i, w.bf16)
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
