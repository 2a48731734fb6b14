"""The activation encodings of int8 models and the calibration methods that choose their
ranges (customml.quantize's ``method``): values -> [lo, hi] -> (scale, zero)."""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np

# Activations are uint8: 256 codes, 255 steps across [lo, hi].
A_STEPS = 255


def activation_encoding(lo: float, hi: float) -> Tuple[float, int]:
    """[lo, hi] (widened to contain 0) -> (scale, zero) of asymmetric uint8:
    scale = (hi - lo) / 255, zero = round_half_even(-lo / scale) in [0, 255]; an empty
    range (all zeros) gets scale 1, zero 0, as the dynamic kernels do."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = np.float32((hi - lo) / A_STEPS)
    if not scale > 0:
        return 1.0, 0
    zero = int(np.clip(np.rint(np.float32(-lo) / scale), 0, A_STEPS))
    return float(scale), zero


# ---------------------------------------------------------------------------------------
# Calibration methods: values -> [lo, hi]
# ---------------------------------------------------------------------------------------


def _range_minmax(x: np.ndarray, **_) -> Tuple[float, float]:
    return min(float(x.min()), 0.0), max(float(x.max()), 0.0)


def _range_percentile(x: np.ndarray, percentile: float, **_) -> Tuple[float, float]:
    # Each side separately: a ReLU output's lower tail is 0 and must stay 0, while a
    # symmetric |x| percentile would spend codes on negatives that never occur.
    lo, hi = _range_minmax(x)
    if hi > 0:
        pos = x[x > 0]
        hi = float(np.percentile(pos, percentile))
    if lo < 0:
        neg = x[x < 0]
        lo = float(np.percentile(neg, 100.0 - percentile))
    return lo, hi


def _range_mse(x: np.ndarray, num_bins: int, **_) -> Tuple[float, float]:
    # The expected squared error of quantizing the histogram's bin centres with range
    # f [lo, hi], for candidate factors f: clipping error above the range, rounding error
    # within it. One common factor keeps the search one-dimensional; the candidates are a
    # loop, each evaluated over all bins at once.
    lo, hi = _range_minmax(x)
    if hi == lo:
        return lo, hi
    counts, edges = np.histogram(x, bins=num_bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    used = counts > 0
    counts, centres = counts[used].astype(np.float64), centres[used]
    best, best_err = 1.0, math.inf
    for f in np.linspace(0.05, 1.0, 96):
        scale, zero = activation_encoding(lo * f, hi * f)
        q = np.clip(np.rint(centres / scale) + zero, 0, A_STEPS)
        err = float(np.dot(counts, (centres - scale * (q - zero)) ** 2))
        if err < best_err:
            best, best_err = f, err
    return lo * best, hi * best


def _kl_threshold(hist: np.ndarray, levels: int) -> int:
    """TensorRT's entropy calibration: the number of histogram bins i >= levels whose
    clipped distribution P (outliers folded into the last bin) and its quantization Q to
    `levels` values (each merged group spread back evenly over its nonzero bins) have the
    smallest KL(P || Q)."""
    hist = hist.astype(np.float64)
    best_i, best_kl = len(hist), math.inf
    tail = np.cumsum(hist[::-1])[::-1]  # tail[i] = sum(hist[i:])
    for i in range(levels, len(hist) + 1):
        p = hist[:i].copy()
        if i < len(hist):
            p[i - 1] += tail[i]
        nonzero = hist[:i] > 0
        starts = (np.arange(levels) * i) // levels
        merged = np.add.reduceat(hist[:i], starts)
        support = np.add.reduceat(nonzero.astype(np.float64), starts)
        group: np.ndarray = np.repeat(np.arange(levels), np.diff(np.append(starts, i)))
        q = np.where(nonzero, merged[group] / np.maximum(support[group], 1.0), 0.0)
        ps, qs = p.sum(), q.sum()
        if ps == 0 or qs == 0:
            continue
        p, q = p / ps, q / qs
        m = p > 0
        if np.any(m & (q == 0)):
            kl = math.inf  # an observed value the quantized distribution cannot produce
        else:
            kl = float(np.sum(p[m] * np.log(p[m] / q[m])))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return best_i


def _range_entropy(x: np.ndarray, num_bins: int, **_) -> Tuple[float, float]:
    lo, hi = _range_minmax(x)
    amax = max(-lo, hi)
    if amax == 0:
        return lo, hi
    # One-signed inputs (ReLU, sigmoid) use all 255 steps on one side; two-signed ones
    # about half per side, TensorRT's 128 levels.
    levels = A_STEPS if lo == 0 or hi == 0 else 128
    hist, _ = np.histogram(np.abs(x), bins=num_bins, range=(0.0, amax))
    if num_bins <= levels:
        return lo, hi
    t = (_kl_threshold(hist, levels) + 0.5) * amax / num_bins
    return max(lo, -t), min(hi, t)


RANGES = {"minmax": _range_minmax, "percentile": _range_percentile, "mse": _range_mse, "entropy": _range_entropy}
