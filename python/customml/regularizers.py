"""Weight regularizers for Dense kernels, as Keras': ``l1(0.01)``, ``l2(1e-4)``, ``l1_l2``.

The penalty ``l1 * sum|w| + l2 * sum w^2`` is computed by the C++ executor in the
training step: its gradient ``l1 * sign(w) + 2 * l2 * w`` is added to the kernel's
gradient before clipping, biases take none, and the penalty is part of the reported
loss (fit and evaluate), as in Keras.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Union

__all__ = ["Regularizer", "L1L2", "l1", "l2", "l1_l2", "get"]


def _factor(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"regularizer {name} must be a finite number >= 0, got {value!r}")
    return float(value)


class Regularizer:
    """Base class; only L1L2 exists (the executor implements it)."""


class L1L2(Regularizer):
    """``l1 * sum|w| + l2 * sum w^2`` over a Dense kernel."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        self.l1 = _factor("l1", l1)
        self.l2 = _factor("l2", l2)

    def get_config(self) -> dict:
        return {"l1": self.l1, "l2": self.l2}

    def __eq__(self, other) -> bool:
        return isinstance(other, L1L2) and (self.l1, self.l2) == (other.l1, other.l2)

    def __repr__(self) -> str:
        return f"L1L2(l1={self.l1}, l2={self.l2})"


def l1(l1: float = 0.01) -> L1L2:
    """``L1L2(l1=l1)``: ``l1 * sum|w|``, as ``keras.regularizers.l1``."""
    return L1L2(l1=l1)


def l2(l2: float = 0.01) -> L1L2:
    """``L1L2(l2=l2)``: ``l2 * sum w^2``, as ``keras.regularizers.l2``."""
    return L1L2(l2=l2)


def l1_l2(l1: float = 0.01, l2: float = 0.01) -> L1L2:
    """``L1L2(l1=l1, l2=l2)``, as ``keras.regularizers.l1_l2``."""
    return L1L2(l1=l1, l2=l2)


def get(value: Union[None, str, Regularizer]) -> Optional[L1L2]:
    """None, an L1L2, or a name ("l1", "l2", "l1_l2") with Keras' default factor 0.01."""
    if value is None or isinstance(value, L1L2):
        return value
    if isinstance(value, str) and value in ("l1", "l2", "l1_l2"):
        return {"l1": l1, "l2": l2, "l1_l2": l1_l2}[value]()
    raise ValueError(
        f"kernel_regularizer must be None, 'l1', 'l2', 'l1_l2' or a customml.regularizers.L1L2, got {value!r}"
    )
