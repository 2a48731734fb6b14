"""The ISA ceiling for a benchmark: like tests/support.py's use_isa, for the bench suite
(which does not import the tests)."""

from __future__ import annotations

import contextlib

import customml
from customml import _core

ISA_ORDER = ("portable", "avx2", "avx512", "avx512_vnni", "amx")


def isa_available(level: str) -> bool:
    return ISA_ORDER.index(customml.build_info()["isa_detected"]) >= ISA_ORDER.index(level)


@contextlib.contextmanager
def use_isa(level):
    """Caps the kernels at ``level`` (None: leave as is) for the block, then restores."""
    if level is None:
        yield
        return
    original = customml.build_info()["isa"]
    try:
        yield _core._set_isa(level)
    finally:
        _core._set_isa(original)
