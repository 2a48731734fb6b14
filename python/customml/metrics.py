"""Metrics derived at epoch end from the sufficient statistics the C++ executor
accumulates per batch (no pass over predictions in Python).

Classification metrics come from the confusion matrix (rows = true labels, columns =
predictions: the first maximal logit, or ``logit > 0`` with one output); ROC AUC from
the (score, label) pairs the executor keeps and ranks in C++; regression metrics from
per-output sums of ``|e|``, ``e**2``, ``y`` and ``y**2``. Conventions are
scikit-learn's (see each function). Everything here is O(classes^2) or O(outputs).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

__all__ = ["CLASSIFICATION", "REGRESSION", "NAMES", "needs", "from_confusion", "from_regression_stats"]

_AVERAGED = tuple(f"{m}_{a}" for m in ("precision", "recall", "f1") for a in ("binary", "macro", "micro", "weighted"))
# "precision", "recall" and "f1" are binary (positive class 1) for two classes or one
# logit, macro otherwise: scikit-learn's default where it applies, macro where it
# would raise.
CLASSIFICATION = ("accuracy", "precision", "recall", "f1") + _AVERAGED + ("confusion_matrix", "roc_auc")
REGRESSION = ("mae", "rmse", "r2")
NAMES = CLASSIFICATION + REGRESSION


def needs(metrics: Tuple[str, ...]) -> dict:
    """The executor statistics that the metrics need (``Network.set_metric_stats``)."""
    return {
        "confusion": any(m in CLASSIFICATION and m not in ("accuracy", "roc_auc") for m in metrics),
        "regression": any(m in REGRESSION for m in metrics),
        "scores": "roc_auc" in metrics,
    }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # scikit-learn's zero_division default: 0 where the denominator is 0 (it warns).
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def from_confusion(counts: np.ndarray, name: str) -> float:
    """A classification metric of a confusion matrix (classes, classes), as
    sklearn.metrics' precision/recall/f1_score(average=...). Macro and weighted average
    over the classes present in the true labels or the predictions (sklearn's
    ``labels=None``); binary reports class 1."""
    counts = np.asarray(counts, dtype=np.int64)
    classes = counts.shape[0]
    if name in ("precision", "recall", "f1"):
        name = f"{name}_{'binary' if classes == 2 else 'macro'}"
    metric, average = name.rsplit("_", 1)
    tp = np.diag(counts).astype(np.float64)
    true = counts.sum(axis=1).astype(np.float64)
    pred = counts.sum(axis=0).astype(np.float64)
    if average == "micro":
        # Single-label: every false positive is another class's false negative, so
        # micro precision, recall and F1 are all the accuracy.
        return float(_ratio(tp.sum(), true.sum()))
    per_class = {"precision": _ratio(tp, pred), "recall": _ratio(tp, true), "f1": _ratio(2.0 * tp, true + pred)}[metric]
    if average == "binary":
        if classes != 2:
            raise ValueError(f"metric {name!r} needs two classes, the model has {classes}")
        return float(per_class[1])
    if average == "weighted":
        return float(_ratio((per_class * true).sum(), true.sum()))
    present = (true + pred) > 0
    return float(per_class[present].mean()) if present.any() else 0.0


def from_regression_stats(stats: np.ndarray, n: int, name: str) -> float:
    """mae, rmse or r2 of stats (4, outputs) = per output sums of ``|e|``, e^2, y - s and
    (y - s)^2 over n rows (s: a shift the executor picks, the first target row), each averaged over the outputs as scikit-learn's ``multioutput=
    'uniform_average'`` (rmse: the mean of the per-output RMSEs, as
    sklearn.metrics.root_mean_squared_error). r2 as sklearn.metrics.r2_score with
    ``force_finite=True``: an output with constant targets scores 1 if predicted
    exactly, else 0."""
    abs_err, sq_err, sum_y, sum_y2 = np.asarray(stats, dtype=np.float64)
    if n == 0:
        return float("nan")
    if name == "mae":
        return float(np.mean(abs_err / n))
    if name == "rmse":
        return float(np.mean(np.sqrt(sq_err / n)))
    # Total sum of squares from the shifted moments (it does not depend on the shift):
    # its rounding error is about n u64 sum((y - s)^2), and s, a target, is within a few
    # standard deviations of the mean, so no catastrophic cancellation.
    ss_tot = np.maximum(sum_y2 - sum_y * sum_y / n, 0.0)
    r2 = np.where(ss_tot > 0, 1.0 - _ratio(sq_err, ss_tot), np.where(sq_err == 0, 1.0, 0.0))
    return float(np.mean(r2))
