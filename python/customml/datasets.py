"""Bundled real datasets, with a fixed split and scaling so results are comparable.

digits, breast_cancer, wine and iris are the files scikit-learn ships (no download):
a stratified 80/20 split with seed 0; features float32 scaled to [0, 1] with the
training split's minimum and maximum (digits: pixel / 16), so test values may fall
slightly outside. Labels are int32.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

__all__ = ["load", "names"]

_SKLEARN = {"digits": "load_digits", "breast_cancer": "load_breast_cancer", "wine": "load_wine",
            "iris": "load_iris"}

Split = Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


def names() -> Tuple[str, ...]:
    return tuple(_SKLEARN)


def load(name: str, path: Optional[str] = None) -> Split:
    """``(x_train, y_train), (x_test, y_test)`` for a bundled dataset."""
    if name not in _SKLEARN:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(_SKLEARN)}")
    if path is not None:
        raise ValueError(f"dataset {name!r} comes from scikit-learn's bundled files and takes no path")
    try:
        import sklearn.datasets
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"dataset {name!r} needs scikit-learn: pip install 'customml[datasets]'") from exc
    bunch = getattr(sklearn.datasets, _SKLEARN[name])()
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    if name == "digits":
        lo, scale = 0.0, 16.0  # 4-bit pixel intensities
    else:
        lo = x_train.min(axis=0)
        span = x_train.max(axis=0) - lo
        scale = np.where(span > 0, span, 1.0)
    x_train = ((x_train - lo) / scale).astype(np.float32)
    x_test = ((x_test - lo) / scale).astype(np.float32)
    return (np.ascontiguousarray(x_train), y_train), (np.ascontiguousarray(x_test), y_test)
