"""The NumPy <-> device-array bridge of the test suite: on "cuda" the ops take device memory
only, while the tests build NumPy arrays. ``bridged_ops(device)`` wraps every function of
customml.ops so that each C-contiguous NumPy argument (lists of them too) is copied to a
customml.Array on the device, the op runs, every such argument is copied back into its NumPy
array (in-place updates, out= buffers), and results come back as the NumPy arrays passed in
or as new NumPy arrays. Arrays a device array cannot stand for (non-contiguous, read-only,
non-native byte order, bool, or distinct views over shared memory) stay NumPy: on
"cuda-emulated" the op's own checks then see them, and on "cuda" the test is skipped with the
reason, since the check it exercises is about a host array layout that device memory does not
have (it runs on "cpu" and "cuda-emulated"). conftest.py applies the bridge to tests on
"cuda"; CUSTOMML_TEST_BRIDGE=1 applies it to "cuda-emulated" too, which is how the bridge
itself is checked without a GPU (the whole emulated suite passes through it)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import customml as cm
from customml import ops

# Functions of customml.ops that only build formats in NumPy: nothing to move.
HOST_ONLY = {"csr_from_dense", "nm_from_dense"}


def _movable(a) -> bool:
    return (
        isinstance(a, np.ndarray)
        and a.flags.c_contiguous
        and a.flags.writeable
        and a.dtype.isnative
        and a.dtype.kind in "fiu"
    )


def _numpy_arrays(values):
    for v in values:
        if isinstance(v, (list, tuple)):
            yield from _numpy_arrays(v)
        elif isinstance(v, np.ndarray):
            yield v


def _why(a: np.ndarray) -> str:
    if not a.flags.c_contiguous:
        return "not C-contiguous"
    if not a.flags.writeable:
        return "read-only"
    if not a.dtype.isnative:
        return "non-native byte order"
    if a.dtype.kind not in "fiu":
        return f"dtype {a.dtype}"
    return "a view sharing memory with another argument"


def _arrays(values):
    for v in values:
        if isinstance(v, (list, tuple)):
            yield from _arrays(v)
        elif _movable(v):
            yield v


def bridged(fn, device: str):
    @functools.wraps(fn)
    def call(*args, **kwargs):
        moved = []  # (NumPy array, its device copy)
        # Distinct arrays over shared memory (a view inside another) stay NumPy, all of them,
        # so that the op's aliasing checks see them; the same array twice becomes one device
        # array.
        candidates = list(_arrays(list(args) + list(kwargs.values())))
        overlapping = set()
        for i, a in enumerate(candidates):
            for b in candidates[i + 1 :]:
                if a is not b and np.may_share_memory(a, b):
                    overlapping.update((id(a), id(b)))

        def to_device(a):
            if _movable(a) and id(a) not in overlapping:
                for h, d in moved:
                    if h is a:
                        return d
                d = cm.asarray(a, device=device)
                moved.append((a, d))
                return d
            if isinstance(a, (list, tuple)) and any(_movable(v) for v in a):
                return type(a)(to_device(v) for v in a)
            return a

        def to_host(r):
            for h, d in moved:
                if r is d:
                    return h
            if isinstance(r, cm.Array):
                return r.numpy()
            if isinstance(r, tuple):
                return tuple(to_host(v) for v in r)
            return r

        args = [to_device(a) for a in args]
        kwargs = {k: to_device(v) for k, v in kwargs.items()}
        if device != "cuda-emulated":
            stay = list(_numpy_arrays(args + list(kwargs.values())))
            if stay:
                pytest.skip(
                    f"{fn.__name__} got a NumPy array that no device array can stand for "
                    f"({_why(stay[0])}): the check it exercises runs on cpu and cuda-emulated"
                )
        result = fn(*args, **kwargs)
        for h, d in moved:
            np.copyto(h, d.numpy())
        return to_host(result)

    return call


def bridged_ops(monkeypatch, device: str) -> None:
    """Replaces customml.ops' functions by bridged ones for the rest of the test."""
    for name in ops.__all__:
        if name not in HOST_ONLY:
            monkeypatch.setattr(ops, name, bridged(getattr(ops, name), device))
