"""Data preparation: scaling, one-hot labels, train/validation/test splits and a seeded
mini-batch iterator. NumPy in, NumPy out (float32 features, int32 labels).

Scaling functions take the array whose statistics define the scaling first and apply
the same scaling to the others, so nothing from a validation or test split leaks into
training::

    x_train, x_val, x_test = cm.data.standardize(x_train, x_val, x_test)

Random choices (split membership, shuffling) come from NumPy's counter-based Philox
keyed by ``seed``, as the model's own streams, so results do not depend on NumPy's
global state.
"""

from __future__ import annotations

import numbers
from typing import Iterator, Optional, Tuple, Union

import numpy as np

__all__ = ["standardize", "min_max_scale", "one_hot", "train_val_test_split", "batches", "Batches"]


def _features(x, name: str, op: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"[{op}] {name} must be a numeric array: {exc}") from None
    if a.dtype.kind not in "biuf":
        raise ValueError(f"[{op}] {name} must be a numeric array of real numbers, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"[{op}] {name} must be 2-D (samples, features), got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"[{op}] {name} is empty (0 samples)")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"[{op}] {name} contains NaN or inf")
    return a


def _scale(op: str, reference, others, stats) -> Union[np.ndarray, Tuple[np.ndarray, ...]]:
    ref = _features(reference, "x", op)
    shift, scale = stats(ref)
    out = []
    for i, arr in enumerate((reference,) + others):
        a = ref if i == 0 else _features(arr, f"argument {i + 1}", op)
        if a.shape[1] != ref.shape[1]:
            raise ValueError(f"[{op}] argument {i + 1} has {a.shape[1]} features but x has {ref.shape[1]}")
        out.append(np.ascontiguousarray((a - shift) / scale, dtype=np.float32))
    return out[0] if not others else tuple(out)


def standardize(x, *others):
    """``(a - mean) / std`` per feature, with the mean and (population) standard
    deviation of ``x``; a constant feature is only centred (divided by 1, as
    scikit-learn's StandardScaler). Returns float32 arrays: one for one argument, a
    tuple for several."""

    def stats(ref):
        std = ref.std(axis=0)
        return ref.mean(axis=0), np.where(std > 0, std, 1.0)

    return _scale("standardize", x, others, stats)


def min_max_scale(x, *others, feature_range: Tuple[float, float] = (0.0, 1.0)):
    """Maps each feature of ``x`` linearly onto ``feature_range`` (default [0, 1]) and
    applies the same map to the others, whose values may then fall outside it; a
    constant feature maps to the range's lower end. Returns float32 as standardize."""
    if not (
        isinstance(feature_range, (tuple, list))
        and len(feature_range) == 2
        and all(isinstance(v, numbers.Real) and np.isfinite(v) for v in feature_range)
        and feature_range[0] < feature_range[1]
    ):
        raise ValueError(f"[min_max_scale] feature_range must be (low, high) with low < high, got {feature_range!r}")
    low, high = float(feature_range[0]), float(feature_range[1])

    def stats(ref):
        lo = ref.min(axis=0)
        span = ref.max(axis=0) - lo
        span = np.where(span > 0, span, 1.0)
        # (a - lo) / span * (high - low) + low == (a - shift) / scale
        scale = span / (high - low)
        return lo - low * scale, scale

    return _scale("min_max_scale", x, others, stats)


def _labels(y, name: str, op: str) -> np.ndarray:
    try:
        a = np.asarray(y)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"[{op}] {name} must be an array of integer labels: {exc}") from None
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"[{op}] {name} must be 1-D integer labels, got shape {a.shape}")
    if a.dtype.kind == "b":
        a = a.astype(np.int64)
    elif a.dtype.kind == "f":
        if not (np.isfinite(a).all() and (a == np.round(a)).all()):
            raise ValueError(f"[{op}] {name} must hold integer labels, got non-integer values")
        a = a.astype(np.int64)
    elif a.dtype.kind not in "iu":
        raise ValueError(f"[{op}] {name} must hold integer labels, got dtype {a.dtype}")
    if a.size and a.min() < 0:
        raise ValueError(f"[{op}] {name} contains the negative label {int(a.min())}")
    return a.astype(np.int64)


def one_hot(y, num_classes: Optional[int] = None, dtype=np.float32) -> np.ndarray:
    """(n,) integer labels -> (n, num_classes) with a 1 in each row's label column;
    ``num_classes`` defaults to max(y) + 1. (The models take integer labels; this is for
    other consumers and custom losses.)"""
    labels = _labels(y, "y", "one_hot")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    elif isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"[one_hot] num_classes must be an integer >= 1, got {num_classes!r}")
    if labels.size and labels.max() >= num_classes:
        raise ValueError(f"[one_hot] y contains label {int(labels.max())}, outside [0, {num_classes})")
    out = np.zeros((labels.size, int(num_classes)), dtype=dtype)
    out[np.arange(labels.size), labels] = 1
    return out


def _rng(seed, op: str, stream: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"[{op}] seed must be an integer >= 0, got {seed!r}")
    return np.random.Generator(np.random.Philox(key=int(seed), counter=[0, 0, 2, stream]))


def _quotas(counts: np.ndarray, total: int) -> np.ndarray:
    """Splits ``total`` over classes in proportion to ``counts`` (largest remainder,
    ties to the lower class index), never taking more than a class has."""
    exact = counts * (total / counts.sum())
    quota = np.minimum(np.floor(exact).astype(np.int64), counts)
    order = sorted(range(len(counts)), key=lambda c: (-(exact[c] - np.floor(exact[c])), c))
    i = 0
    while quota.sum() < total:
        c = order[i % len(order)]
        if quota[c] < counts[c]:
            quota[c] += 1
        i += 1
    return quota


def train_val_test_split(x, y, val_size: float = 0.1, test_size: float = 0.1, stratify: bool = False, seed: int = 0):
    """``(x_train, y_train), (x_val, y_val), (x_test, y_test)``: the samples shuffled by
    ``seed`` and split by fractions (each split's size rounded to the nearest sample; a
    size of 0 gives an empty split). With ``stratify=True`` every split keeps the
    class proportions of ``y`` as closely as whole samples allow (largest remainder).
    ``y`` may be labels or any per-sample array (stratify needs integer labels)."""
    op = "train_val_test_split"
    xa = np.asarray(x)
    ya = np.asarray(y)
    if xa.ndim == 0 or ya.ndim == 0:
        raise ValueError(f"[{op}] x and y must be arrays of samples")
    n = xa.shape[0]
    if ya.shape[0] != n:
        raise ValueError(f"[{op}] x has {n} samples but y has {ya.shape[0]}")
    for name, v in (("val_size", val_size), ("test_size", test_size)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0.0 <= v < 1.0):
            raise ValueError(f"[{op}] {name} must be a fraction in [0, 1), got {v!r}")
    n_test, n_val = int(round(test_size * n)), int(round(val_size * n))
    if n_test + n_val >= n:
        raise ValueError(
            f"[{op}] val_size={val_size} and test_size={test_size} of {n} samples leave no training samples"
        )
    rng = _rng(seed, op, 0)
    if not stratify:
        order = rng.permutation(n)
        parts = [order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]]
    else:
        labels = _labels(ya, "y", op)
        classes, inverse = np.unique(labels, return_inverse=True)
        members = [rng.permutation(np.flatnonzero(inverse == c)) for c in range(len(classes))]
        counts = np.array([len(m) for m in members], dtype=np.int64)
        test_q = _quotas(counts, n_test)
        val_q = _quotas(counts - test_q, n_val)
        parts = [[], [], []]
        for m, t, v in zip(members, test_q, val_q):
            parts[2].append(m[:t])
            parts[1].append(m[t : t + v])
            parts[0].append(m[t + v :])
        # each split shuffled again, so its classes are not in blocks
        parts = [rng.permutation(np.concatenate(p)) for p in parts]
    return tuple((xa[p], ya[p]) for p in parts)


class Batches:
    """Mini-batches of ``(x, y)`` (or of ``x`` alone) in a seeded shuffled order. Each
    pass over the object is a new epoch with its own order, drawn from (seed, epoch)
    alone, so a pass can be reproduced without replaying the earlier ones; ``len()`` is
    the number of batches per pass. The batches are copies (fancy indexing)."""

    batch_size: int
    shuffle: bool
    seed: int
    drop_last: bool
    epoch: int

    def __init__(self, x, y=None, batch_size: int = 32, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        op = "batches"
        self.x = np.asarray(x)
        if self.x.ndim == 0 or self.x.shape[0] == 0:
            raise ValueError(f"[{op}] x must be a non-empty array of samples")
        self.y = None if y is None else np.asarray(y)
        if self.y is not None and (self.y.ndim == 0 or self.y.shape[0] != self.x.shape[0]):
            raise ValueError(
                f"[{op}] x has {self.x.shape[0]} samples but y has {'none' if self.y.ndim == 0 else self.y.shape[0]}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"[{op}] batch_size must be an integer >= 1, got {batch_size!r}")
        if drop_last and batch_size > self.x.shape[0]:
            raise ValueError(
                f"[{op}] batch_size={batch_size} with drop_last=True leaves no batch of {self.x.shape[0]} samples"
            )
        _rng(seed, op, 0)  # validates the seed
        self.batch_size, self.shuffle, self.seed, self.drop_last = (
            int(batch_size),
            bool(shuffle),
            int(seed),
            bool(drop_last),
        )
        self.epoch = 0

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of pass ``epoch``."""
        n = self.x.shape[0]
        if not self.shuffle:
            return np.arange(n)
        return _rng(self.seed, "batches", 1 + epoch).permutation(n)

    def __iter__(self) -> Iterator:
        order = self.order(self.epoch)
        self.epoch += 1
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.x[idx] if self.y is None else (self.x[idx], self.y[idx])


def batches(x, y=None, batch_size: int = 32, shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> Batches:
    """A :class:`Batches` iterator over ``(x, y)``: ``for xb, yb in cm.data.batches(x, y, 64, seed=1): ...``."""
    return Batches(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
