"""Trainer: ``fit`` and ``evaluate``, the training loop of ``Sequential`` (its base
class, as Keras 3's Model is a Trainer). Python here checks and converts what users pass
(arrays or an iterable of batches, targets, sample weights, validation data, callbacks),
then makes one executor call per batch; the step itself (forward, loss, backward,
clipping, the update, the metric counters) runs in C++ with the GIL released.

The model side (``Sequential``) provides the executor (``_net``), the compile
configuration (``_loss``, ``_optimizer``, ``_metrics``), ``_ensure_ready`` and the epoch
counter (``_epoch``).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _core
from . import distributed as distributed_mod
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optimizers as optimizers_mod
from . import schedules as schedules_mod
from ._callback import Callback
from ._checks import as_features, check_finite, positive_int
from ._history import History
from .layers import Layer, Normalization

__all__ = ["Trainer"]


# How far a row of probability targets may sum from 1: each of C float32 probabilities
# carries up to 2^-24 relative rounding, so a normalized row is within C 2^-24 of 1 (< 1e-3
# for C < 16,000 classes); a row further off is not a distribution (a missing softmax).
PROBABILITY_SUM_TOLERANCE = 1e-3


class _Probabilities:
    """Probability targets of the softmax cross-entropy (Keras' CategoricalCrossentropy):
    the rows, float32 (n, classes), and their argmax, int32 (n,), which the metrics
    (accuracy, the confusion matrix, roc_auc) compare predictions with. Sliced by rows
    like an array of labels."""

    __slots__ = ("probs", "labels")

    def __init__(self, probs: np.ndarray, labels: np.ndarray):
        self.probs, self.labels = probs, labels

    def __getitem__(self, rows) -> "_Probabilities":
        return _Probabilities(self.probs[rows], self.labels[rows])


def _scalars(logs: Dict) -> Dict[str, float]:
    """The logs without the confusion matrix, for one-line displays."""
    return {k: v for k, v in logs.items() if not isinstance(v, np.ndarray)}


class Trainer:
    """fit and evaluate, for Sequential."""

    # What the model side (Sequential) provides; fit sets history, stop_training, _callbacks.
    layers: List[Layer]
    seed: int
    _net: Optional[_core.Network]
    _lock: threading.RLock
    _input_dim: Optional[int]
    _loss: Optional[losses_mod.Loss]
    _optimizer: Optional[optimizers_mod.Optimizer]
    _metrics: Tuple[str, ...]
    _epoch: int
    history: Optional[History]
    stop_training: bool
    _callbacks: Tuple[Callback, ...]
    _restored_callback_state: Optional[Dict[str, Dict]]
    # The teacher's logits (n, outputs) for the rows of fit's x while customml.distill runs
    # fit, else None: each training step stages its rows with the batch's.
    _teacher_logits: Optional[np.ndarray] = None

    def _ensure_ready(self, x: np.ndarray, op: str) -> None:
        """Builds the model for x's width (and compiles it) if needed; checks the width."""
        raise NotImplementedError

    def _as_targets(self, y, n: int, op: str, name: str = "y"):
        """Labels as int32 (n,) for classification losses; targets float32 (n, out) for mse;
        for the softmax cross-entropy, a (n, classes) y is probability targets
        (``_as_probabilities``)."""
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
        assert self._net is not None  # the callers run _ensure_ready first
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
        if self._loss.name == "softmax_cross_entropy" and y.ndim == 2 and y.shape[1] == out:
            return self._as_probabilities(y, n, op, name)
        if y.ndim != 1:
            probabilities = (
                f" or probability targets of shape ({n}, {out})" if self._loss.name == "softmax_cross_entropy" else ""
            )
            raise ValueError(f"[{op}] {name} must be 1-D class labels{probabilities}, got shape {y.shape}")
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
            raise ValueError(
                f"[{op}] {name} contains label {bad!r} outside [0, {classes})"
                f" (the model has {out} output{'s' if out != 1 else ''})"
            )
        return np.ascontiguousarray(y, dtype=np.int32)

    def _as_probabilities(self, y: np.ndarray, n: int, op: str, name: str):
        """Probability targets (n, classes) for the softmax cross-entropy: numeric, finite,
        >= 0, each row summing to 1 within PROBABILITY_SUM_TOLERANCE. One-hot rows
        throughout are the labels they encode (the same loss, bit for bit, through the
        labels' kernel); otherwise a _Probabilities, label smoothing applied to the rows as
        Keras does: ``(1 - eps) q + eps / classes`` in float32."""
        loss = self._loss
        assert isinstance(loss, losses_mod.SoftmaxCrossEntropy)  # the caller's condition
        if y.dtype != np.bool_ and (not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y)):
            raise TypeError(f"[{op}] {name} must be numeric probabilities, got dtype {y.dtype}")
        q = np.ascontiguousarray(y, dtype=np.float32)
        check_finite(q, name, op)
        if (q < 0).any():
            r, c = (int(i) for i in np.argwhere(q < 0)[0])
            raise ValueError(
                f"[{op}] {name} must hold probabilities >= 0, got {float(q[r, c])!r} at row {r}, column {c}"
            )
        sums = q.sum(axis=1, dtype=np.float64)
        off = np.abs(sums - 1.0) > PROBABILITY_SUM_TOLERANCE
        if off.any():
            r = int(np.argmax(off))
            raise ValueError(
                f"[{op}] {name} row {r} sums to {sums[r]:.6g}: probability targets must sum to 1 per row "
                f"(within {PROBABILITY_SUM_TOLERANCE:g}; for scores, apply a softmax first)"
            )
        labels = np.ascontiguousarray(np.argmax(q, axis=1), dtype=np.int32)  # the first maximal, as accuracy takes
        if ((q == 0) | (q == 1)).all():
            return labels
        if loss.class_weights:
            raise ValueError(
                f"[{op}] class_weights need integer labels (or one-hot rows); weight the rows of probability "
                f"targets {name} with sample_weight instead"
            )
        eps = loss.label_smoothing
        if eps:
            q = np.float32(1.0 - eps) * q + np.float32(eps / q.shape[1])
        return _Probabilities(q, labels)

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
            raise ValueError(
                f"[{op}] {name} must be >= 0, got {float(w[np.argmax(w < 0)])!r} at index {int(np.argmax(w < 0))}"
            )
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
            assert it is not None
            step = 0
            while steps_per_epoch is None or step < steps_per_epoch:
                try:
                    item = next(it)
                except StopIteration:
                    break
                if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                    raise ValueError(
                        f"[{op}] batch {step} of the iterable must be a tuple (x, y) or "
                        f"(x, y, sample_weight), got {type(item).__name__}"
                    )
                xb = as_features(item[0], f"batch {step} x", op)
                self._ensure_ready(xb, op)
                check_finite(xb, f"batch {step} x", op)
                b = xb.shape[0]
                yb = self._as_targets(item[1], b, op, f"batch {step} y")
                wb = (
                    None
                    if len(item) == 2 or item[2] is None
                    else self._as_sample_weight(item[2], b, op, f"batch {step} sample_weight")
                )
                if b not in index_cache:
                    index_cache[b] = np.arange(b, dtype=np.int64)
                yield xb, yb, index_cache[b], wb
                step += 1
            if step == 0:
                raise ValueError(
                    f"[{op}] the iterable of batches yielded no batch in epoch {epoch + 1}"
                    + (
                        ": a one-shot iterator (e.g. a generator) is exhausted after one pass; pass a re-iterable "
                        "(a list, customml.data.batches(...)) or give steps_per_epoch= and a stream long enough "
                        "for all epochs"
                        if one_shot
                        else ""
                    )
                )

        return epoch_batches

    def fit(
        self,
        x,
        y=None,
        epochs: int = 1,
        batch_size: int = 32,
        shuffle: bool = True,
        validation_split: float = 0.0,
        validation_data: Optional[Tuple] = None,
        seed: Optional[int] = None,
        verbose: int = 1,
        callbacks: Optional[Sequence[Callback]] = None,
        sample_weight=None,
        steps_per_epoch: Optional[int] = None,
        initial_epoch: Optional[int] = None,
    ) -> History:
        """Trains for ``epochs`` passes over (x, y) in mini-batches; one C++ call per
        batch runs forward, loss, backward, clipping, the update and the metric
        counters. Returns a History (also kept as ``model.history``). Ctrl-C stops
        between batches with KeyboardInterrupt, leaving the model consistent.

        With the softmax cross-entropy, ``y`` may be probability targets (n, classes) rather
        than labels (label distributions, mixup, a teacher's softmax), as Keras'
        CategoricalCrossentropy: finite, >= 0, each row summing to 1 (within 1e-3). The
        metrics compare predictions with each row's argmax; label smoothing applies to the
        rows; class weights need labels. One-hot rows train exactly as their labels.

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
                raise ValueError(
                    "[fit] steps_per_epoch applies to an iterable of batches; with arrays an epoch is one pass over x"
                )
        if from_iterable and (validation_split or sample_weight is not None):
            raise ValueError(
                "[fit] with an iterable of batches, give validation_data rather than "
                "validation_split, and sample weights as a third element of each batch"
            )
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise ValueError(
                    f"[fit] callbacks must be customml.callbacks.Callback objects, got {type(cb).__name__}"
                )
        if self._loss is None:
            raise ValueError("[fit] the model must be compiled first (model.compile(...))")
        for layer in self.layers:
            if isinstance(layer, Normalization) and not layer.adapted:
                raise ValueError(
                    f"[fit] Normalization layer {layer.name!r} is not adapted: call "
                    f"model.layers[{layer._index}].adapt(x_train) (or give it mean and variance) first"
                )
        epochs = positive_int(epochs, "epochs", op, minimum=0)
        if initial_epoch is not None:
            initial_epoch = positive_int(initial_epoch, "initial_epoch", op, minimum=0)
            if initial_epoch > epochs:
                raise ValueError(
                    f"[fit] initial_epoch ({initial_epoch}) is past epochs ({epochs}), the index of the "
                    "last epoch (Keras' convention)"
                )
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
        x_val: Optional[np.ndarray]
        y_val: Optional[np.ndarray]
        if validation_data is not None:
            if validation_split:
                raise ValueError("[fit] give validation_split or validation_data, not both")
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("[fit] validation_data must be a tuple (x_val, y_val)")
            x_val = as_features(validation_data[0], "validation_data x", op)
            if from_iterable and self._net is None:
                self._ensure_ready(x_val, op)
            if x_val.shape[1] != self._input_dim:
                raise ValueError(
                    f"[fit] validation_data x has {x_val.shape[1]} features but the model expects {self._input_dim}"
                )
            y_val = self._as_targets(validation_data[1], x_val.shape[0], op, "validation_data y")
            check_finite(x_val, "validation_data x", op)
        elif validation_split:
            if isinstance(validation_split, bool) or not (0.0 < validation_split < 1.0):
                raise ValueError(f"[fit] validation_split must be in [0, 1), got {validation_split!r}")
            # As Keras: the last fraction of the samples, taken before any shuffling.
            n_val = int(x.shape[0] * validation_split)
            if n_val == 0 or n_val == x.shape[0]:
                raise ValueError(
                    f"[fit] validation_split={validation_split} of {x.shape[0]} samples leaves an "
                    "empty training or validation set"
                )
            x, x_val = x[:-n_val], x[-n_val:]
            y, y_val = y[:-n_val], y[-n_val:]
            if sample_weight is not None:
                sample_weight = sample_weight[:-n_val]
        else:
            x_val = y_val = None

        seed = self.seed if seed is None else positive_int(seed, "seed", op, minimum=0)
        if distributed_mod.context().active:
            if from_iterable:
                raise ValueError(
                    "[fit] distributed training takes arrays x and y, not an iterable of batches (the same arrays "
                    "on every rank, or each rank its own with cm.distributed.init(local_data=True))"
                )
            fit_args = {"n": x.shape[0], "epochs": epochs, "batch_size": batch_size, "shuffle": shuffle}
            fit_args.update(initial_epoch=initial_epoch, data=distributed_mod.digest(x, y, sample_weight, x_val, y_val))
            if isinstance(y, _Probabilities):
                raise ValueError("[fit] distributed training takes class labels y, not probability targets, yet")
            seed, callbacks, verbose = distributed_mod.begin_fit(self, seed, fit_args, callbacks, verbose)
        if from_iterable:
            epoch_batches = self._iterable_batches(x, steps_per_epoch, op)
            steps = steps_per_epoch if steps_per_epoch is not None else (len(x) if hasattr(x, "__len__") else None)
            n = None
        else:
            n = x.shape[0]
            # Distributed, a step takes the global batch and each rank its share of it.
            step_rows = distributed_mod.global_batch_size(batch_size)
            steps = -(-n // step_rows)

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
                for start in range(0, n, step_rows):
                    yield x, y, order[start : start + step_rows], sample_weight

            if distributed_mod.context().active and distributed_mod.context().local_data:  # each rank its shard
                steps, epoch_batches = distributed_mod.local_batches(
                    self, x, y, sample_weight, batch_size, shuffle, seed
                )

        seed_pending = True
        if initial_epoch is not None:
            self._epoch = initial_epoch
            epochs -= initial_epoch
        history = History(
            {"epochs": epochs, "batch_size": None if from_iterable else batch_size, "steps": steps, "samples": n}
        )
        self.history = history
        assert self._optimizer is not None  # compiled: set with _loss
        learning_rate = self._optimizer.learning_rate
        schedule = learning_rate if isinstance(learning_rate, schedules_mod.LearningRateSchedule) else None
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
        train_step = None
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
                    assert self._net is not None  # built by the first batch at the latest
                    if schedule is not None:
                        # One Python call per batch (a few hundred ns) against a C++ step
                        # of tens of microseconds or more: per-step schedules stay exact.
                        # (In fp16 the step count is the device's: reading it waits.)
                        self._net.set_learning_rate(schedule(self._net.step))
                    if seed_pending:  # an iterable's first batch builds the model
                        self._net.set_seed(seed)
                        seed_pending = False
                    if train_step is None:
                        train_step = distributed_mod.train_step(self, batch_size)
                    with self._lock:  # a save or a weight transaction sees whole steps
                        if isinstance(yb, _Probabilities):  # not distributed (refused above)
                            self._net.train_batch(xb, yb.labels, index, wb, yb.probs)
                        else:
                            train_step(xb, yb, index, wb)
                    if batch_hooks:
                        batch_logs = self._read_metrics()
                        for cb in batch_hooks:
                            cb.on_batch_end(step, batch_logs)
                    if bar is not None:
                        # The loss and metrics stay on the device during the epoch (reading
                        # them would make the host wait for every step); the bar shows them
                        # when the epoch ends.
                        bar.update(1)
                logs = self._read_metrics()
                if x_val is not None:
                    assert y_val is not None
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
                print(
                    f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - start_time:.2f}s - {parts}",
                    file=sys.stdout,
                    flush=True,
                )
            self.stop_training = distributed_mod.stop_training(self.stop_training)  # rank 0's, distributed
            if self.stop_training:
                break
        for cb in callbacks:
            cb.on_train_end({})
        return history

    def _progress(self, epoch: int, epochs: int, steps: Optional[int]):
        from tqdm.auto import tqdm

        return tqdm(
            total=steps,
            desc=f"Epoch {epoch + 1}/{epochs}",
            unit="batch",
            leave=True,
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def _read_metrics(self) -> Dict[str, float]:
        """The loss and the compiled metrics from the executor's statistics (read from the
        device: once an epoch, or per batch for a callback that asks)."""
        assert self._net is not None
        net = distributed_mod.metric_source(self._net)
        loss_sum, correct, count = net.metrics()
        logs = {"loss": loss_sum / count if count else float("nan")}
        counts = stats = None
        for m in self._metrics:
            if m == "accuracy":
                logs[m] = correct / count if count else float("nan")
            elif m == "roc_auc":
                logs[m] = float(net.roc_auc())
            elif m in metrics_mod.REGRESSION:
                if stats is None:
                    stats = net.regression_stats()
                logs[m] = metrics_mod.from_regression_stats(stats, count, m)
            else:
                if counts is None:
                    counts = net.confusion_matrix()
                if m == "confusion_matrix":
                    logs[m] = counts
                else:
                    logs[m] = metrics_mod.from_confusion(counts, m) if count else float("nan")
        return logs

    def _evaluate_arrays(self, x: np.ndarray, y, batch_size: int) -> Dict[str, float]:
        assert self._net is not None
        probs = None
        if isinstance(y, _Probabilities):
            _, probs = distributed_mod.shard(x, y.probs)
            y = y.labels
        x, y = distributed_mod.shard(x, y)  # each rank its part; the metrics are summed
        with self._lock:  # the weights of no half-done transaction
            self._net.reset_metrics()
            self._net.evaluate(x, y, batch_size, probs)
            return self._read_metrics()

    def evaluate(self, x, y, batch_size: int = 1024) -> Dict[str, float]:
        """Loss and compiled metrics over (x, y), dropout off: ``{"loss": ..., "accuracy": ...}``;
        "confusion_matrix" is an int64 array (classes, classes), rows = true labels. ``y``
        may be probability targets, as in ``fit``."""
        op = "evaluate"
        batch_size = positive_int(batch_size, "batch_size", op)
        x = as_features(x, "x", op)
        check_finite(x, "x", op, "the loss and metrics would be NaN")
        self._ensure_ready(x, op)
        y = self._as_targets(y, x.shape[0], op)
        return self._evaluate_arrays(x, y, batch_size)
