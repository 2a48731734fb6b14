"""Losses, by name or as configured objects. Each runs fused in the C++ executor:
the loss and its gradient in one pass, probabilities never stored."""

from __future__ import annotations

import numbers
from typing import List, Optional, Sequence, Union

import numpy as np

__all__ = ["Loss", "SoftmaxCrossEntropy", "BinaryCrossEntropy", "MeanSquaredError", "Distillation", "get"]


class Loss:
    name = ""
    classification = True

    def _config(self) -> dict:
        return {"loss": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SoftmaxCrossEntropy(Loss):
    """Softmax cross-entropy on logits with integer labels, or with probability targets
    (a (n, classes) y in fit and evaluate, each row summing to 1: Keras'
    CategoricalCrossentropy). ``label_smoothing`` eps targets ``(1 - eps) * onehot + eps /
    classes`` (``(1 - eps) * q + eps / classes`` for probability rows); ``class_weights``
    (one per class, labels only) weight each sample by its label's weight and the mean
    divides by their sum."""

    name = "softmax_cross_entropy"

    def __init__(self, label_smoothing: float = 0.0, class_weights: Optional[Sequence[float]] = None):
        if (
            isinstance(label_smoothing, bool)
            or not isinstance(label_smoothing, numbers.Real)
            or not (0.0 <= label_smoothing <= 1.0)
        ):
            raise ValueError(f"SoftmaxCrossEntropy label_smoothing must be in [0, 1], got {label_smoothing!r}")
        self.label_smoothing: float = float(label_smoothing)
        self.class_weights: Optional[List[float]] = None
        if class_weights is not None:
            w = np.asarray(class_weights, dtype=np.float64)
            if w.ndim != 1 or w.size == 0 or not np.isfinite(w).all() or (w < 0).any():
                raise ValueError(
                    "SoftmaxCrossEntropy class_weights must be a non-empty 1-D sequence of "
                    f"finite numbers >= 0, got {class_weights!r}"
                )
            self.class_weights = [float(v) for v in w]

    def _config(self) -> dict:
        return {"loss": self.name, "label_smoothing": self.label_smoothing, "class_weights": self.class_weights or []}

    def __repr__(self) -> str:
        # Only what differs from the defaults, so that a plain loss reads SoftmaxCrossEntropy().
        args = [f"label_smoothing={self.label_smoothing!r}"] if self.label_smoothing else []
        if self.class_weights is not None:
            args.append(f"class_weights={self.class_weights!r}")
        return f"SoftmaxCrossEntropy({', '.join(args)})"


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy on one logit per sample (sigmoid applied inside), labels 0/1."""

    name = "binary_cross_entropy"


class MeanSquaredError(Loss):
    """Mean squared error over all outputs, for regression (float targets)."""

    name = "mse"
    classification = False


class Distillation(Loss):
    """Knowledge distillation (Hinton, Vinyals and Dean 2015): per sample
    ``alpha * T**2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) *
    CE(student, label)`` with ``T = temperature`` (>= 0.05; 1 to 20 is the useful range)
    and ``alpha`` in [0, 1], loss and gradient fused in one kernel. A model compiled with
    it trains on a teacher's logits: use ``customml.distill``, which compiles the student
    with it. Evaluation (``evaluate``, validation) reports the labels' cross-entropy, the
    teacher being a training signal only."""

    name = "distillation"

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9):
        for arg, value, lo in (("temperature", temperature, 0.05), ("alpha", alpha, 0.0)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < lo:
                raise ValueError(f"Distillation {arg} must be a finite number >= {lo}, got {value!r}")
        if alpha > 1.0:
            raise ValueError(f"Distillation alpha must be in [0, 1], got {alpha!r}")
        self.temperature: float = float(temperature)
        self.alpha: float = float(alpha)

    def _config(self) -> dict:
        return {"loss": self.name, "temperature": self.temperature, "alpha": self.alpha}

    def __repr__(self) -> str:
        return f"Distillation(temperature={self.temperature!r}, alpha={self.alpha!r})"


_BY_NAME = {
    "softmax_cross_entropy": SoftmaxCrossEntropy,
    "sparse_categorical_crossentropy": SoftmaxCrossEntropy,
    "binary_cross_entropy": BinaryCrossEntropy,
    "binary_crossentropy": BinaryCrossEntropy,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
}


def get(loss: Union[str, Loss]) -> Loss:
    """A loss from an instance or a name (softmax_cross_entropy, binary_cross_entropy, mse,
    or their Keras names)."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss in _BY_NAME:
        return _BY_NAME[loss]()
    raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(_BY_NAME)} or a customml.losses.Loss")
