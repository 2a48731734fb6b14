"""The argument checks that several modules share: what a user passes as features, a
count, a number, a fraction or a list of batch sizes, converted or refused with a
message that names the operation and the argument (STYLE rule 8). Python-level checks
only; the executor validates arrays once more at the boundary."""

from __future__ import annotations

import argparse
import math
import numbers
from typing import Callable, Optional, Tuple

import numpy as np

from . import _core

_FLOAT32 = np.dtype(np.float32)


def as_features(x, name: str, op: str) -> np.ndarray:
    """float32, C-contiguous, 2-D, non-empty; no copy when x already is."""
    if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous):
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"[{op}] {name} must be a numeric array, got {type(x).__name__}: {exc}") from None
        if x.dtype.kind == "O":  # e.g. a mixed pandas frame: numbers (None becomes NaN) or an error
            try:
                x = x.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"[{op}] {name} must be a numeric array, got objects: {exc}") from None
        # Booleans, integers and real floats only: complex would lose its imaginary part
        # and strings would be parsed, both silently.
        if x.dtype.kind not in "biuf":
            raise TypeError(f"[{op}] {name} must be a numeric array of real numbers, got dtype {x.dtype}")
        # Values beyond float32's range become inf here, and fit reports them as such.
        with np.errstate(over="ignore"):
            x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"[{op}] {name} must be 2-D (samples, features), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"[{op}] {name} is empty (0 samples)")
    return x


def check_finite(a: np.ndarray, name: str, op: str, why: str = "training on it would make the weights NaN") -> None:
    # float32 in C order (what as_features and the target and weight conversions give):
    # one C++ pass without the GIL or a boolean temporary; anything else through NumPy.
    if a.dtype == _FLOAT32 and a.flags.c_contiguous and a.dtype.isnative:
        flat = _core.first_nonfinite(a)
        if flat < 0:
            return
        where = np.unravel_index(flat, a.shape)
    else:
        bad = ~np.isfinite(a)
        if not bad.any():
            return
        where = np.argwhere(bad)[0]
    at = tuple(int(i) for i in where)
    place = f"{at}, row {at[0]}, column {at[1]}" if len(at) == 2 else f"index {at}"
    raise ValueError(f"[{op}] {name} contains NaN or inf: {a[at]} at {place}; {why}")


def boolean(op: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"[{op}] {name} must be True or False, got {value!r}")
    return bool(value)


def positive_int(value, name: str, op: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"[{op}] {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def number(
    owner: str, name: str, value, *, low: float = 0.0, high: Optional[float] = None, high_open: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{owner} {name} must be a finite number, got {value!r}")
    if value < low or (high is not None and (value >= high if high_open else value > high)):
        if high is None:
            raise ValueError(f"{owner} {name} must be >= {low:g}, got {value!r}")
        bound = f"[{low:g}, {high:g})" if high_open else f"[{low:g}, {high:g}]"
        raise ValueError(f"{owner} {name} must be in {bound}, got {value!r}")
    return float(value)


def fraction(op: str, name: str, value) -> float:
    # (typeshed's numbers.Real has no __ge__, so mypy cannot compare 0.0 <= Real)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0.0 <= value < 1.0):  # type: ignore[operator]
        raise ValueError(f"[{op}] {name} must be a number in [0, 1), got {value!r}")
    return float(value)


def batch_sizes(op: str, sizes) -> Tuple[int, ...]:
    """Positive integers, sorted, each once."""
    given = tuple(sizes)
    if not given or any(isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 1 for b in given):
        raise ValueError(f"[{op}] batch_sizes must be positive integers, got {sizes!r}")
    return tuple(sorted(set(int(b) for b in given)))


def argument_int(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum; argparse names the flag in its message and
    exits with status 2."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    return parse


def argument_number(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = True) -> Callable[[str], float]:
    """An argparse type: a finite number in the interval, its ends open or closed as given."""
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}") from None
        inside = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
        if not (math.isfinite(value) and inside):
            raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text!r}")
        return value

    return parse
