"""Shared test support: sizes and float32 value families for hypothesis, NaN-filled
outputs, the ISA switch, and an elementwise tolerance check that names the worst offenders.

Values are generated with NumPy from a hypothesis-drawn seed and a hypothesis-drawn
"kind" (hypothesis draws the problem, NumPy fills it): drawing every element through
hypothesis would make 257 x 257 operands far too slow for the CI budget.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
import pytest
from hypothesis import assume
from hypothesis import strategies as st

import customml
from customml import _core

U32 = 2.0**-24  # unit roundoff of float32 (half an ulp of 1)
U64 = 2.0**-53  # unit roundoff of float64
TINY32 = 2.0**-149  # smallest float32 subnormal: the absolute error of one underflowing rounding is at most half of it

ISA_ORDER = ("portable", "avx2", "avx512", "avx512_vnni", "amx")

# .ci/sanitizers runs the GEMM property tests under AddressSanitizer with the hypothesis
# profile "sanitizer" (tests/conftest.py), where one large product takes up to a second on
# the emulated device and the NumPy reference and bounds several times their usual time.
SANITIZER = os.environ.get("HYPOTHESIS_PROFILE") == "sanitizer"


def large_example_once(problem, large: Sequence, activation: str, keep: Sequence[str]) -> None:
    """Under the sanitizer profile, runs an explicit example from ``large`` (the shapes that
    cross the MC / KC / NC blocking or the CUDA tiles many times) for the activations in
    ``keep`` only: the blocking and the addresses a large product reads and writes are the
    same for every activation, which changes only the arithmetic of one store path (bias and
    relu in registers, or the epilogue), and ``keep`` names one of each. Every other
    profile, and every drawn or small explicit example, runs for every activation.
    Hypothesis skips an explicit example that fails ``assume`` (a drawn one is never large)."""
    if SANITIZER and problem in large:
        assume(activation in keep)


def skip_above_portable_off_cpu(request, wanted: str) -> None:
    """The ISA cap selects CPU kernels only: ops on another device run that device's
    kernels (cuda-emulated's backend and emulator include no cpp/cpu code; backend.cpp hands
    out the CPU backend for "cpu" alone), so a cap above portable would repeat the portable
    run's work exactly (the same derandomized examples). Skipped, for CI time."""
    device = request.node.callspec.params.get("device", "cpu").partition(":")[0]
    if device != "cpu" and wanted != "portable":
        pytest.skip(f"the ISA cap does not reach {device}'s kernels: run once, at portable")


# 1, small odd sizes, and every GEMM blocking boundary +-1: MR = 4 / 6 / 12 rows,
# NR = 16 / 32 columns, MC = 120 rows, KC = 256 depth (NC = 1024 columns is reached by
# explicit examples, since a random size that large would dominate the run time).
TILE_SIZES = (1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 15, 16, 17, 31, 32, 33, 119, 120, 121, 255, 256, 257)
sizes = st.one_of(st.sampled_from(TILE_SIZES), st.integers(1, 40))
seeds = st.integers(0, 2**32 - 1)

# Value families. "ints" gives exact arithmetic, exact zeros (relu boundaries) and ties
# (argmax); "huge" and "tiny" reach overflow / underflow paths; "subnormal" is entirely
# below 2**-126; "mixed" sprinkles signed zeros, tiny, subnormal and huge entries
# into normal data.
VALUE_KINDS = ("normal", "wide", "ints", "tiny", "subnormal", "huge", "mixed")


def make_values(rng: np.random.Generator, shape, kind: str, *, scale: float = 1.0, huge: float = 1e20) -> np.ndarray:
    """A float32 array of ``shape`` from the family ``kind`` (see VALUE_KINDS)."""
    shape = tuple(shape)
    n = int(np.prod(shape, dtype=np.int64))
    if kind == "normal":
        a = rng.standard_normal(n) * scale
    elif kind == "wide":  # magnitudes spread over 1e-6 .. 1e6, random signs
        a = rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-6, 6, n) * scale
    elif kind == "ints":
        a = rng.integers(-3, 4, n).astype(np.float64)
    elif kind == "tiny":
        a = rng.standard_normal(n) * 1e-30
    elif kind == "subnormal":
        a = rng.integers(-(2**23) + 1, 2**23, n) * TINY32
    elif kind == "huge":
        a = rng.standard_normal(n) * scale
        pick = rng.random(n) < 0.25
        a[pick] = rng.choice([-huge, huge], int(pick.sum())) * rng.uniform(0.5, 1.0, int(pick.sum()))
    elif kind == "mixed":
        a = rng.standard_normal(n) * scale
        specials = np.array([0.0, -0.0, 1e-30, -1e-30, 3 * TINY32, -TINY32, huge, -huge])
        pick = rng.random(n) < 0.3
        a[pick] = rng.choice(specials, int(pick.sum()))
    else:
        raise ValueError(f"unknown value kind {kind!r}")
    return a.astype(np.float32).reshape(shape)


# Logit families of the classification ops: "huge" puts +-1e4 into rows (stability of the
# max shift), "ints" makes ties, "tiny"/"subnormal" make nearly uniform rows.
LOGIT_KINDS = ("normal", "wide_logits", "ints", "tiny", "subnormal", "huge", "mixed")


def logits_of(rng: np.random.Generator, shape, kind: str) -> np.ndarray:
    """Float32 logits of ``shape`` from the family ``kind`` (see LOGIT_KINDS)."""
    if kind == "wide_logits":
        return make_values(rng, shape, "normal", scale=30.0)
    if kind == "huge":
        return make_values(rng, shape, "huge", scale=3.0, huge=1e4)
    if kind == "mixed":
        return make_values(rng, shape, "mixed", scale=3.0, huge=1e4)
    return make_values(rng, shape, kind, scale=3.0)


def nan_filled(shape) -> np.ndarray:
    """An output buffer in which any element the kernel forgets to write stays NaN."""
    return np.full(shape, np.nan, np.float32)


# Guard elements on each side of the views at_alignment makes.
GUARD = 8


def at_alignment(values: np.ndarray, offset: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(buffer, view)``: a copy of 1-D float32 ``values`` whose address is ``4 * offset``
    bytes past a 16-byte boundary (offset 0-3: every alignment a float32 array can have),
    inside a buffer that is NaN for GUARD elements on either side, which a kernel must
    leave as it was (check_guards)."""
    raw = np.full(values.size + 2 * GUARD + 8, np.nan, np.float32)
    start = (-raw.ctypes.data % 16) // 4 + GUARD + offset  # GUARD (a multiple of 4) past an aligned element
    buf = raw[start - GUARD : start + values.size + GUARD]
    view = buf[GUARD : GUARD + values.size]
    view[...] = values
    assert view.ctypes.data % 16 == 4 * offset
    return buf, view


def check_guards(buf: np.ndarray, name: str) -> None:
    """The NaN guards of an at_alignment buffer are untouched (no write past either end)."""
    guards = np.concatenate([buf[:GUARD], buf[-GUARD:]])
    assert np.isnan(guards).all(), f"{name}: an element outside the array was written: {guards}"


def assert_float32_array(a, shape, name: str) -> None:
    assert isinstance(a, np.ndarray), f"{name} is {type(a).__name__}, not a NumPy array"
    assert a.shape == tuple(shape), f"{name} has shape {a.shape}, expected {tuple(shape)}"
    assert a.dtype == np.float32, f"{name} has dtype {a.dtype}, expected float32"


def assert_close(got, want, tol, name: str) -> None:
    """|got - want| <= tol elementwise, in float64. NaN in ``got`` fails wherever ``want``
    is not NaN (so unwritten NaN-filled outputs fail); equal infinities pass."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    tol = np.broadcast_to(np.asarray(tol, np.float64), want.shape)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != reference {want.shape}"
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(got - want)
        ok = (err <= tol) | (got == want) | (np.isnan(got) & np.isnan(want))
    if not ok.all():
        bad = np.argwhere(~ok.reshape(want.shape) if want.ndim else ~ok.reshape(1))
        lines = []
        for idx in bad[:5]:
            i = tuple(idx) if want.ndim else ()
            lines.append(f"  at {i}: got {got[i]!r}, want {want[i]!r}, |err| {err[i]!r} > tol {tol[i]!r}")
        raise AssertionError(f"{name}: {len(bad)} of {want.size} elements outside tolerance\n" + "\n".join(lines))


def assert_same_bits(a: np.ndarray, b: np.ndarray, name: str) -> None:
    """Bit-identical arrays (NaN payloads and the sign of zero included)."""
    assert a.shape == b.shape and a.dtype == b.dtype, f"{name}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
    if a.tobytes() != b.tobytes():
        diff = np.argwhere(a.view(np.uint32) != b.view(np.uint32))
        i = tuple(diff[0])
        raise AssertionError(f"{name}: {len(diff)} elements differ in their bits, first at {i}: {a[i]!r} vs {b[i]!r}")


def sass_report_module():
    """bench/sass_report.py as a module (bench/ is not a package), for the tests that compare
    its mirror of the GEMM dispatch with the C++."""
    spec = importlib.util.spec_from_file_location("sass_report", Path(__file__).parents[1] / "bench" / "sass_report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("sass_report", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def active_isa() -> str:
    return customml.build_info()["isa"]


@contextlib.contextmanager
def use_isa(level: str):
    """Caps the kernels at ``level`` for the block; yields the level actually active
    (lower when the CPU lacks ``level``) and restores the previous level afterwards."""
    original = active_isa()
    try:
        yield _core._set_isa(level)
    finally:
        _core._set_isa(original)


def isa_available(level: str) -> bool:
    return ISA_ORDER.index(customml.build_info()["isa_detected"]) >= ISA_ORDER.index(level)


@st.composite
def no_decay_segments(draw, n: int):
    """Sorted, disjoint [begin, end) ranges of [0, n), possibly empty or touching."""
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=6)))
    segs = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)]
    return segs


# Row (sample) weight families for the weighted losses: random in [0, 3), half of them 0,
# all 0 (the loss is then defined as 0), or spanning 1e-6 to 1e6.
ROW_WEIGHTS = ("random", "with_zeros", "all_zero", "wide")


def row_weights_of(rng, rows, kind):
    """float32 sample weights (rows,) of a ROW_WEIGHTS family."""
    if kind == "wide":
        return (10.0 ** rng.uniform(-6, 6, rows)).astype(np.float32)
    w = rng.uniform(0.0, 3.0, rows).astype(np.float32)
    if kind == "with_zeros":
        w[rng.random(rows) < 0.5] = 0.0
    elif kind == "all_zero":
        w[:] = 0.0
    return w
