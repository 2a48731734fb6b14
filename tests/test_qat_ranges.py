"""symmetric_scales and observe_range, the two ops that keep quantization-aware training's
ranges on the device, against tests/reference.py on every device: exactly (a maximum and a
minimum are exact in any order, the float64 average is the reference's sequence of roundings,
and the encoding is the same float32 arithmetic), over sizes, value families, NaN (left out
of every range) and infinities, and every bad argument rejected with a message naming it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import reference
from customml import ops
from support import VALUE_KINDS, make_values, seeds, sizes

KINDS = VALUE_KINDS + ("positive", "negative", "zeros", "nan", "inf")


def values(rng, shape, kind):
    if kind in ("positive", "negative"):
        return np.abs(make_values(rng, shape, "normal")) * (1 if kind == "positive" else -1)
    if kind == "zeros":
        return np.zeros(shape, np.float32)
    x = make_values(rng, shape, "normal")
    if kind in ("nan", "inf"):
        flat = x.reshape(-1)
        picks = rng.integers(0, flat.size, max(1, flat.size // 7))
        flat[picks] = np.nan if kind == "nan" else rng.choice(np.array([np.inf, -np.inf], np.float32), picks.size)
        return x
    return make_values(rng, shape, kind)


@given(rows=sizes, cols=sizes, axis=st.sampled_from(("column", "tensor")), kind=st.sampled_from(KINDS), seed=seeds)
@example(rows=1, cols=1, axis="column", kind="zeros", seed=0)
@example(rows=785, cols=257, axis="column", kind="nan", seed=1)
@example(rows=33, cols=1025, axis="tensor", kind="mixed", seed=2)
def test_symmetric_scales_matches_reference(device, isa, rows, cols, axis, kind, seed):
    w = values(np.random.default_rng(seed), (rows, cols), kind)
    out = np.full(cols if axis == "column" else 1, np.nan, np.float32)
    assert ops.symmetric_scales(w, axis=axis, out=out, device=device) is out
    np.testing.assert_array_equal(out, reference.symmetric_scales(w, axis))
    if kind == "zeros":
        assert (out == 1).all()


def test_symmetric_scales_of_a_column_of_nan_and_zeros_is_one(device):
    w = np.array([[np.nan, 2.0], [0.0, -127.0]], np.float32)
    np.testing.assert_array_equal(ops.symmetric_scales(w, device=device), [1.0, 1.0])
    np.testing.assert_array_equal(ops.symmetric_scales(w, axis="tensor", device=device), [1.0])


@given(
    rows=sizes,
    cols=sizes,
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=4),
    momentum=st.sampled_from((0.0, 0.5, 0.9, 0.99, 0.999999)),
    seed=seeds,
)
@example(rows=128, cols=785, kinds=["normal", "positive", "mixed"], momentum=0.9, seed=0)
@example(rows=1, cols=1, kinds=["zeros", "zeros"], momentum=0.9, seed=1)
@example(rows=3, cols=5, kinds=["inf", "normal"], momentum=0.5, seed=2)
def test_observe_range_matches_reference_over_batches(device, isa, rows, cols, kinds, momentum, seed):
    rng = np.random.default_rng(seed)
    got_range = np.full(2, np.nan)
    want_range = (np.nan, np.nan)
    for step, kind in enumerate(kinds):
        x = values(rng, (rows, cols), kind)
        scale, zero = np.full(1, np.nan, np.float32), np.full(1, -1, np.int32)
        got = ops.observe_range(
            x, got_range, momentum=momentum, first=step == 0, scale_out=scale, zero_out=zero, device=device
        )
        assert got[0] is scale and got[1] is zero
        want_range, want_scale, want_zero = reference.observe_range(x, want_range, momentum=momentum, first=step == 0)
        np.testing.assert_array_equal(got_range, np.array(want_range), err_msg=f"batch {step}")
        np.testing.assert_array_equal(scale, [want_scale], err_msg=f"batch {step}")
        assert zero[0] == want_zero, f"batch {step}"
        assert 0 <= zero[0] <= 255 and scale[0] > 0


def test_observe_range_encoding_is_activation_encoding(device):
    # The encoding the int8 plan is given (customml.quantize.activation_encoding).
    from customml.quantize import activation_encoding

    x = np.array([[-1.5, 0.25, 3.0, np.nan]], np.float32)
    r = np.zeros(2)
    scale, zero = ops.observe_range(x, r, momentum=0.9, first=True, device=device)
    assert (r == [-1.5, 3.0]).all()
    assert (float(scale[0]), int(zero[0])) == activation_encoding(-1.5, 3.0)


X = np.ones((2, 3), np.float32)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda d: ops.symmetric_scales(X, axis="row", device=d), ValueError, r"\[symmetric_scales\] axis must be"),
        (lambda d: ops.symmetric_scales(X, axis="diagonal", device=d), ValueError, r"axis must be 'tensor'"),
        (
            lambda d: ops.symmetric_scales(X, out=np.zeros(2, np.float32), device=d),
            ValueError,
            r"\[symmetric_scales\] out has shape \(2,\), expected \(3,\)",
        ),
        (
            lambda d: ops.symmetric_scales(X.astype(np.float64), device=d),
            TypeError,
            r"\[symmetric_scales\] w must be float32",
        ),
        (
            lambda d: ops.observe_range(X, np.zeros(2, np.float32), momentum=0.9, device=d),
            TypeError,
            r"\[observe_range\] range must be float64",
        ),
        (
            lambda d: ops.observe_range(X, np.zeros(3), momentum=0.9, device=d),
            ValueError,
            r"\[observe_range\] range has shape \(3,\), expected \(2,\)",
        ),
        (
            lambda d: ops.observe_range(X, np.zeros(2), momentum=1.0, device=d),
            ValueError,
            r"\[observe_range\] momentum must be in \[0, 1\)",
        ),
        (
            lambda d: ops.observe_range(X, np.zeros(2), momentum=0.9, zero_out=np.zeros(1, np.float32), device=d),
            TypeError,
            r"\[observe_range\] zero_out must be int32",
        ),
    ],
)
def test_rejected_with_a_message_naming_the_argument(device, call, error, message):
    with pytest.raises(error, match=message):
        call(device)
