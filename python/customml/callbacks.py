"""Training records and hooks. History holds per-epoch loss and metrics under Keras' key
names; ``fit(callbacks=[...])`` calls Callback hooks with Keras' names.

The epoch a hook receives is the model's epoch index (``model.epochs_trained`` when the
epoch began), so callbacks see the same numbers whether training ran in one fit or was
resumed in several; ``History.epoch`` counts the epochs of its own fit call.

History and the Callback base live in their own modules (the training loop imports them
without importing the callbacks), GradualPruning in ``customml.prune``; all are
re-exported here under their public names.
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import numbers
import os
from typing import Callable, Dict, List, Optional

import numpy as np

from ._callback import Callback
from ._history import History
from .prune import GradualPruning

__all__ = [
    "History",
    "Callback",
    "EarlyStopping",
    "ModelCheckpoint",
    "LearningRateScheduler",
    "CSVLogger",
    "GradualPruning",
]


def _cell(value):
    # The confusion matrix as a JSON nested list on one line (numpy's repr spans lines).
    return json.dumps(value.tolist()) if isinstance(value, np.ndarray) else value


def _mode(owner: str, mode: str, monitor: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{owner} mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":  # as Keras: accuracy-like quantities grow, the rest shrink
        return "max" if "acc" in monitor else "min"
    return mode


def _monitored(owner: str, monitor: str, logs: Optional[Dict]) -> float:
    logs = logs or {}
    if monitor not in logs:
        hint = " (val_ keys need validation_split or validation_data)" if monitor.startswith("val_") else ""
        raise ValueError(
            f"{owner} monitor {monitor!r} is not among the epoch's logs ({', '.join(logs) or 'none'}){hint}"
        )
    return float(logs[monitor])


def _state_number(owner: str, state: Dict, key: str, integer: bool = False):
    """A number from a saved state (None stays None: an unset best or epoch)."""
    value = state.get(key) if isinstance(state, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        raise ValueError(f"{owner} saved state {key} must be {'an integer' if integer else 'a number'}, got {value!r}")
    return int(value) if integer else float(value)


def _finite_or_none(value: float) -> Optional[float]:
    # JSON has no infinity: an unset best (+-inf) is saved as null.
    return value if math.isfinite(value) else None


class _Improvement:
    """Tracks the best value of a monitored quantity (min or max, by at least min_delta)."""

    def __init__(self, mode: str, min_delta: float = 0.0):
        self.mode, self.min_delta = mode, min_delta
        self.reset()

    def reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf

    def update(self, value: float) -> bool:
        """True (and value becomes the best) when value improves on the best; NaN never does."""
        better = value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        if better:
            self.best = value
        return better


class EarlyStopping(Callback):
    """Stops fit (between epochs) once ``monitor`` has not improved by more than
    ``min_delta`` for ``patience`` epochs; mode "auto" minimizes unless the name holds
    "acc". With ``restore_best_weights=True`` the model ends fit with the weights of its
    best epoch, whether it stopped early or ran out of epochs. Its best, wait and best
    epoch are saved by ``save(include_optimizer=True)`` and resumed after ``load`` (list
    ModelCheckpoint after it so the checkpoint sees the epoch's update); the best weights
    are not, so after a resume they come from epochs trained since."""

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        mode: str = "auto",
        restore_best_weights: bool = False,
    ):
        super().__init__()
        if not isinstance(monitor, str):
            raise ValueError(f"EarlyStopping monitor must be a log key such as 'val_loss', got {monitor!r}")
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) or patience < 0:
            raise ValueError(f"EarlyStopping patience must be an integer >= 0, got {patience!r}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, numbers.Real) or not (min_delta >= 0):
            raise ValueError(f"EarlyStopping min_delta must be a number >= 0, got {min_delta!r}")
        self.monitor: str = monitor
        self.patience: int = int(patience)
        self.min_delta = float(min_delta)
        self.mode = _mode("EarlyStopping", mode, monitor)
        self.restore_best_weights: bool = bool(restore_best_weights)
        self._tracker: _Improvement = _Improvement(self.mode, self.min_delta)
        self.wait: int = 0
        self.stopped_epoch: Optional[int] = None
        self.best_epoch: Optional[int] = None
        self.best_weights: Optional[List[np.ndarray]] = None

    @property
    def best(self) -> float:
        return self._tracker.best

    def on_train_begin(self, logs=None) -> None:
        self._tracker.reset()
        self.wait, self.stopped_epoch, self.best_epoch, self.best_weights = 0, None, None, None

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        value = _monitored("EarlyStopping", self.monitor, logs)
        if self._tracker.update(value):
            self.wait, self.best_epoch = 0, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None) -> None:
        if self.best_weights is not None and self.model is not None:
            self.model.set_weights(self.best_weights)

    def get_state(self) -> Dict:
        """best, wait and best_epoch (not the best weights: restore_best_weights after a
        resume can only go back to epochs trained since)."""
        return {"best": _finite_or_none(self.best), "wait": self.wait, "best_epoch": self.best_epoch}

    def set_state(self, state: Dict) -> None:
        best = _state_number("EarlyStopping", state, "best")
        wait = _state_number("EarlyStopping", state, "wait", integer=True)
        best_epoch = _state_number("EarlyStopping", state, "best_epoch", integer=True)
        if best is not None:
            self._tracker.best = best
        self.wait = wait or 0
        self.best_epoch = best_epoch


class ModelCheckpoint(Callback):
    """Saves the model with ``model.save`` (atomic) after each epoch, or with
    ``save_best_only=True`` only when ``monitor`` improved. ``filepath`` may hold
    ``str.format`` fields: ``{epoch}`` (1-based, as Keras) and any log key
    (``"ckpt-{epoch:02d}-{val_loss:.3f}.cml"``)."""

    def __init__(
        self,
        filepath,
        monitor: str = "val_loss",
        save_best_only: bool = False,
        mode: str = "auto",
        include_optimizer: bool = False,
    ):
        super().__init__()
        if not isinstance(filepath, (str, os.PathLike)):
            raise ValueError(f"ModelCheckpoint filepath must be a path, got {filepath!r}")
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.save_best_only = bool(save_best_only)
        self.include_optimizer = bool(include_optimizer)
        self.mode = _mode("ModelCheckpoint", mode, monitor)
        self._tracker = _Improvement(self.mode)
        self.last_saved: Optional[str] = None

    @property
    def best(self) -> float:
        return self._tracker.best

    def on_train_begin(self, logs=None) -> None:
        self._tracker.reset()

    def get_state(self) -> Dict:
        return {"best": _finite_or_none(self.best)}

    def set_state(self, state: Dict) -> None:
        best = _state_number("ModelCheckpoint", state, "best")
        if best is not None:
            self._tracker.best = best

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = logs or {}
        if self.save_best_only and not self._tracker.update(_monitored("ModelCheckpoint", self.monitor, logs)):
            return
        try:
            path = self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"ModelCheckpoint filepath {self.filepath!r} has a field the logs cannot fill "
                f"({exc}); available: epoch, {', '.join(logs)}"
            ) from None
        self.model.save(path, include_optimizer=self.include_optimizer)
        self.last_saved = path


class LearningRateScheduler(Callback):
    """Sets the learning rate at the start of each epoch to ``schedule(epoch)`` or, for a
    function of two arguments, ``schedule(epoch, current_lr)`` (as Keras); logs it as
    ``learning_rate``. For per-step schedules pass a ``customml.schedules`` object as the
    optimizer's ``learning_rate`` instead; the two do not combine."""

    def __init__(self, schedule: Callable):
        super().__init__()
        if not callable(schedule):
            raise ValueError(f"LearningRateScheduler schedule must be callable (epoch -> lr), got {schedule!r}")
        self.schedule = schedule
        try:
            params = inspect.signature(schedule).parameters.values()
            self._two_args = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params) >= 2
        except (TypeError, ValueError):  # builtins without a signature: one argument
            self._two_args = False

    def on_train_begin(self, logs=None) -> None:
        from .schedules import LearningRateSchedule

        if isinstance(self.model._optimizer.learning_rate, LearningRateSchedule):
            raise ValueError(
                "LearningRateScheduler cannot drive an optimizer whose learning_rate is already a "
                "schedule; use one or the other"
            )

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        lr = self.schedule(epoch, self.model.learning_rate) if self._two_args else self.schedule(epoch)
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr < 0:
            raise ValueError(
                f"LearningRateScheduler schedule returned {lr!r} for epoch {epoch}; expected a finite number >= 0"
            )
        self.model._set_learning_rate(float(lr))

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if logs is not None:
            logs["learning_rate"] = self.model.learning_rate


class CSVLogger(Callback):
    """Writes one CSV row per epoch (``epoch`` then the log keys, sorted, as Keras),
    with the header once. ``append=False`` starts the file afresh at each fit;
    ``append=True`` adds to an existing file, whose header must then name the same
    columns. The file is opened and closed for each row, so it is complete after every
    epoch, even if training is interrupted."""

    def __init__(self, filename, separator: str = ",", append: bool = False):
        super().__init__()
        if not isinstance(filename, (str, os.PathLike)):
            raise ValueError(f"CSVLogger filename must be a path, got {filename!r}")
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"CSVLogger separator must be one character, got {separator!r}")
        self.filename, self.separator, self.append = os.fspath(filename), separator, bool(append)
        self._keys: Optional[List[str]] = None

    def on_train_begin(self, logs=None) -> None:
        self._keys = None
        if not self.append:
            with open(self.filename, "w", newline="", encoding="utf-8"):
                pass

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = logs or {}
        if self._keys is None:
            self._keys = ["epoch"] + sorted(logs)
            existing = None
            if os.path.exists(self.filename) and os.path.getsize(self.filename) > 0:
                with open(self.filename, newline="", encoding="utf-8") as f:
                    existing = next(csv.reader(f, delimiter=self.separator), None)
            if existing is not None and existing != self._keys:
                raise ValueError(
                    f"CSVLogger: {self.filename} has columns {existing}, this fit logs {self._keys}; "
                    "use another file or append=False"
                )
            if existing is None:
                self._write(self._keys)
        self._write([epoch] + [_cell(logs.get(k, "NA")) for k in self._keys[1:]])

    def _write(self, row) -> None:
        with open(self.filename, "a", newline="", encoding="utf-8") as f:
            csv.writer(f, delimiter=self.separator).writerow(row)
