"""CUDA availability. The CPU path works unchanged where CUDA is not available."""

from __future__ import annotations

from . import _core

__all__ = ["is_available", "unavailable_reason"]


def is_available() -> bool:
    """True when customml was built with CUDA and a usable GPU and driver are present."""
    return bool(_core.cuda_available())


def unavailable_reason() -> str:
    """Why ``is_available()`` is False ("" when it is True)."""
    return "" if is_available() else _core.cuda_unavailable_reason()
