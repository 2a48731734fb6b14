"""customml.Array: n-d arrays on a customml device, and zero-copy exchange with other
libraries through DLPack.

An Array is what the ops return on "cuda" (so they need no CuPy), and what
``from_dlpack`` makes of any object with ``__dlpack__`` (PyTorch, CuPy, JAX, NumPy)
without copying. It exposes ``__dlpack__`` / ``__dlpack_device__`` in turn, so
``torch.from_dlpack(a)``, ``cupy.from_dlpack(a)`` and ``numpy.from_dlpack(a)`` view it
without a copy too; "cuda-emulated" memory is host memory and is exported as such.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from . import _core

Array = _core.Array

__all__ = ["Array", "asarray", "empty", "from_dlpack"]


def empty(shape: Union[int, Sequence[int]], dtype="float32", *, device: str = "cpu") -> Array:
    """An uninitialized C-contiguous Array on ``device`` (float32, float16, float64, int8,
    uint8, int32 or int64), from the device's allocator."""
    return _core.array_empty(shape, np.dtype(dtype), device)


def asarray(obj, *, device: str = "cpu", dtype=None) -> Array:
    """A new Array on ``device`` holding a copy of ``obj`` (anything ``numpy.asarray``
    takes; ``dtype`` converts first)."""
    return _core.array_from_host(np.asarray(obj, dtype=dtype, order="C"), device)


def from_dlpack(x, *, device: Optional[str] = None) -> Array:
    """An Array viewing ``x``'s memory (no copy) through DLPack; ``x`` stays alive until
    the Array is gone. ``device`` defaults to where the memory is ("cpu" for host memory,
    "cuda:N" for GPU N); "cuda-emulated" may view host memory. The memory must be
    C-contiguous. ``customml.Array(x)`` is the same."""
    return _core.from_dlpack(x, device)
