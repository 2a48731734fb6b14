"""softmax and sigmoid (a model's output probabilities: predict_proba) against
tests/reference.py on every device."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import reference
from customml import ops
from support import TINY32, U32, VALUE_KINDS, assert_close, assert_float32_array, make_values, nan_filled, seeds, sizes

# (rows, cols, value kind, seed)
problems = st.tuples(sizes, sizes, st.sampled_from(VALUE_KINDS), seeds).filter(lambda p: p[0] * p[1] <= 1 << 15)


@given(problem=problems)
@example(problem=(1, 1, "normal", 0))
@example(problem=(33, 1025, "wide", 1))
@example(problem=(4, 10, "ints", 2))  # ties in the maximum
def test_softmax_matches_reference(device, problem):
    rows, cols, kind, seed = problem
    rng = np.random.default_rng(seed)
    x = make_values(rng, (rows, cols), kind, huge=1e4)
    y = nan_filled((rows, cols))
    assert ops.softmax(x, out=y, device=device) is y
    assert_float32_array(y, (rows, cols), "y")
    ref = reference.softmax(x)
    # Relative error per element: x - m rounded in float32 moves e^(x - m) by up to
    # u |x - m|; the float32 exp adds at most 3 ulp (vmath's bound; expf's is lower), the
    # sum's rounding to float32 and the division one u each. Outputs below float32's
    # normal range are exact only to an absolute TINY32.
    shift = np.abs(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    tol = U32 * (shift + 2 * 3 + 2) * ref + 2 * TINY32
    assert_close(y, ref, tol, "y")


@given(n=sizes, kind=st.sampled_from(VALUE_KINDS), seed=seeds)
@example(n=1, kind="huge", seed=0)
def test_sigmoid_matches_reference(device, n, kind, seed):
    x = make_values(np.random.default_rng(seed), (n,), kind, huge=1e30)
    y = nan_filled((n,))
    assert ops.sigmoid(x, out=y, device=device) is y
    assert_float32_array(y, (n,), "y")
    ref = reference.sigmoid(x)
    # vmath's vsigmoid is within 3 ulp (subnormal results included); expf-based CUDA
    # within 1 ulp of exp plus two roundings: 3 ulp = 6 u of the result, plus TINY32.
    assert_close(y, ref, 6 * U32 * np.abs(ref) + 2 * TINY32, "y")


def test_nan_and_inf_propagate_as_in_numpy(device):
    x = np.array([[0.0, np.nan, 1.0], [np.inf, 0.0, 1.0], [-np.inf, 0.0, 0.0], [-np.inf] * 3], np.float32)
    y = ops.softmax(x, device=device)
    assert np.isnan(y[:2]).all() and np.isnan(y[3]).all()  # NaN, or inf - inf, makes the row NaN
    assert np.array_equal(y[2], [0.0, 0.5, 0.5])  # -inf is probability 0
    s = ops.sigmoid(np.array([np.nan, np.inf, -np.inf, 0.0], np.float32), device=device)
    assert np.isnan(s[0]) and np.array_equal(s[1:], [1.0, 0.0, 0.5])


def test_in_place(device):
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], np.float32)
    want = ops.softmax(x, device=device)
    assert ops.softmax(x, out=x, device=device) is x
    assert np.array_equal(x, want)
    z = np.array([-3.0, 0.0, 3.0], np.float32)
    want = ops.sigmoid(z, device=device)
    assert np.array_equal(ops.sigmoid(z, out=z, device=device), want)


BAD = {
    "x float64": (lambda d: ops.softmax(np.zeros((2, 3)), device=d), TypeError, r"\[softmax\] x must be float32"),
    "x 1-D": (lambda d: ops.softmax(np.zeros(3, np.float32), device=d), ValueError, r"\[softmax\] x must be 2-D"),
    "no columns": (
        lambda d: ops.softmax(np.zeros((2, 0), np.float32), device=d),
        ValueError,
        r"\[softmax\] x has 0 columns",
    ),
    "out shape": (
        lambda d: ops.softmax(np.zeros((2, 3), np.float32), out=np.zeros((3, 2), np.float32), device=d),
        ValueError,
        r"\[softmax\] y has shape",
    ),
    "overlap": (
        lambda d: (lambda b: ops.softmax(b[:4].reshape(2, 2), out=b[1:5].reshape(2, 2), device=d))(
            np.zeros(6, np.float32)
        ),
        ValueError,
        r"\[softmax\] y shares memory with x",
    ),
    "sigmoid int": (
        lambda d: ops.sigmoid(np.zeros(3, np.int32), device=d),
        TypeError,
        r"\[sigmoid\] x must be float32",
    ),
    "sigmoid out": (
        lambda d: ops.sigmoid(np.zeros(3, np.float32), out=np.zeros(4, np.float32), device=d),
        ValueError,
        r"\[sigmoid\] y has shape",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_rejects_bad_input(device, case):
    call, exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        call(device)
