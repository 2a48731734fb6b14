"""feature_affine (the preprocessing layers' per-feature map) against tests/reference.py
on every device."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import reference
from customml import ops
from support import TINY32, U32, VALUE_KINDS, assert_close, assert_float32_array, make_values, nan_filled, seeds, sizes

# (rows, cols, x kind, scale kind, seed)
problems = st.tuples(sizes, sizes, st.sampled_from(VALUE_KINDS), st.sampled_from(VALUE_KINDS), seeds).filter(
    lambda p: p[0] * p[1] <= 1 << 15
)


@given(problem=problems)
@example(problem=(1025, 33, "normal", "mixed", 1))
@example(problem=(1, 1, "subnormal", "huge", 2))
@example(problem=(3, 784, "ints", "tiny", 3))
def test_feature_affine_matches_reference(device, problem):
    rows, cols, x_kind, scale_kind, seed = problem
    rng = np.random.default_rng(seed)
    x = make_values(rng, (rows, cols), x_kind, huge=1e18)
    scale = make_values(rng, (cols,), scale_kind, huge=1e18)
    shift = make_values(rng, (cols,), "normal")
    y = nan_filled((rows, cols))
    ret = ops.feature_affine(x, scale, shift, out=y, device=device)
    assert ret is y
    assert_float32_array(y, (rows, cols), "y")
    ref = reference.feature_affine(x, scale, shift)
    # A float32 product then a float32 sum (on CUDA hardware one fused rounding): u |x s|
    # for the product, carried through the sum, plus u |y|; underflow of the product adds
    # at most TINY32.
    tol = U32 * (np.abs(x.astype(np.float64) * scale) + np.abs(ref)) + 2 * TINY32
    assert_close(y, ref, tol, "y")


def test_feature_affine_allocates_out(device):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = ops.feature_affine(x, np.array([1, 2, 0.5], np.float32), np.array([0, -1, 1], np.float32), device=device)
    assert np.array_equal(y, [[0, 1, 2], [3, 7, 3.5]])


def _call(device, **over):
    kw = dict(
        x=np.zeros((4, 3), np.float32),
        scale=np.ones(3, np.float32),
        shift=np.zeros(3, np.float32),
        out=np.zeros((4, 3), np.float32),
        device=device,
    )
    kw.update(over)
    return lambda: ops.feature_affine(kw.pop("x"), kw.pop("scale"), kw.pop("shift"), **kw)


OP = r"\[feature_affine\]"
BAD = {
    "x float64": (dict(x=np.zeros((4, 3))), TypeError, OP + " x must be float32"),
    "scale int32": (dict(scale=np.ones(3, np.int32)), TypeError, OP + " scale must be float32"),
    "x 1-D": (dict(x=np.zeros(3, np.float32)), ValueError, OP + " x must be 2-D"),
    "scale length": (dict(scale=np.ones(4, np.float32)), ValueError, OP + " scale has shape"),
    "shift 2-D": (dict(shift=np.zeros((1, 3), np.float32)), ValueError, OP + " shift must be 1-D"),
    "out shape": (dict(out=np.zeros((3, 4), np.float32)), ValueError, OP + " y has shape"),
    "x strided": (dict(x=np.zeros((4, 6), np.float32)[:, ::2]), ValueError, OP + " x must be C-contiguous"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_feature_affine_rejects_bad_input(device, case):
    over, exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        _call(device, **over)()


def test_feature_affine_rejects_in_place(device):
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=OP + " y shares memory with x"):
        ops.feature_affine(x, np.ones(3, np.float32), np.zeros(3, np.float32), out=x, device=device)
