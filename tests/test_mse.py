"""mse against tests/reference.py on every device."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import reference
from customml import ops
from support import (
    ROW_WEIGHTS,
    TINY32,
    U32,
    U64,
    VALUE_KINDS,
    assert_close,
    assert_float32_array,
    assert_same_bits,
    make_values,
    nan_filled,
    row_weights_of,
    seeds,
    sizes,
)

# (shape, pred kind, target kind, seed). "huge" stays at 1e30 here: a difference of
# 2e30 squared is 4e60, within float64, as the kernel's float64 accumulation needs.
mse_problems = st.tuples(
    st.lists(sizes, min_size=1, max_size=3).filter(lambda s: np.prod(s) <= 1 << 15),
    st.sampled_from(VALUE_KINDS),
    st.sampled_from(VALUE_KINDS),
    seeds,
)


def build(problem):
    shape, pred_kind, target_kind, seed = problem
    rng = np.random.default_rng(seed)
    return make_values(rng, shape, pred_kind, huge=1e30), make_values(rng, shape, target_kind, huge=1e30)


def tolerances(pred, target, row_weights=None):
    """d = fl32(pred - target) errs by <= u |d| (exact in the subnormal range), so d^2
    (exact in float64) by <= 2.01u d^2; the float64 sums of n squares (and, weighted, of
    the rows' w_i-weighted sums, the total weight and its reciprocal) add (n + 6) u64 of
    the weighted sum. The gradient fl32(scale) * d, scale = 2 / n or 2 w_i / (cols W):
    three float32 roundings of the result (scale's own float64 error is far below one;
    with one column the scale is fl32(fl32(2 / W) w_i), a fourth), plus underflow. s:
    each element's weight in the mean (reference.row_weight_scale)."""
    d = pred.astype(np.float64) - target.astype(np.float64)
    n = d.size
    s = reference.row_weight_scale(d.shape, row_weights)
    loss_tol = (2.01 * U32 + (n + 6) * U64) * (s * d * d).sum()
    grad_tol = (3.01 if row_weights is None else 4.01) * U32 * np.abs(2.0 * s * d) + 2 * TINY32
    return loss_tol, grad_tol


@given(problem=mse_problems)
@example(problem=([1025, 257], "normal", "mixed", 1))
@example(problem=([1], "subnormal", "tiny", 2))
@example(problem=([3, 1, 5], "huge", "ints", 3))
def test_mse_matches_reference(isa, device, problem):
    pred, target = build(problem)
    grad = nan_filled(pred.shape)
    loss, ret = ops.mse(pred, target, grad_out=grad, device=device)
    assert ret is grad
    assert isinstance(loss, float)
    assert_float32_array(grad, pred.shape, "grad_out")
    loss_ref, grad_ref = reference.mse(pred, target)
    loss_tol, grad_tol = tolerances(pred, target)
    assert_close(loss, loss_ref, loss_tol, "loss")
    assert_close(grad, grad_ref, grad_tol, "grad")
    loss2, none = ops.mse(pred, target, need_grad=False, device=device)
    assert none is None and loss2 == loss
    loss3, grad3 = ops.mse(pred, target, device=device)
    assert loss3 == loss
    assert_same_bits(grad3, grad, "grad of a second call")


@given(problem=mse_problems, kind=st.sampled_from(ROW_WEIGHTS))
@example(problem=([1025, 3], "normal", "mixed", 1), kind="random")
@example(problem=([17], "normal", "normal", 2), kind="all_zero")
@example(problem=([3, 1, 5], "huge", "ints", 3), kind="wide")
def test_mse_row_weights_match_reference(isa, device, problem, kind):
    pred, target = build(problem)
    w = row_weights_of(np.random.default_rng(problem[3]), pred.shape[0], kind)
    grad = nan_filled(pred.shape)
    loss, _ = ops.mse(pred, target, row_weights=w, grad_out=grad, device=device)
    assert_float32_array(grad, pred.shape, "grad_out")
    loss_ref, grad_ref = reference.mse(pred, target, w)
    loss_tol, grad_tol = tolerances(pred, target, w)
    assert_close(loss, loss_ref, loss_tol, "loss")
    assert_close(grad, grad_ref, grad_tol, "grad")
    if not w.any():  # no weight at all: loss 0 and a zero gradient, by definition
        assert loss == 0.0 and (grad == 0.0).all()
    loss2, _ = ops.mse(pred, target, row_weights=w, need_grad=False, device=device)
    assert loss2 == loss


def test_mse_unit_row_weights_equal_the_mean(isa, device):
    # Weights of 1 give the plain mean, up to the float64 summation order (rows first)
    # and the gradient scale's rounding: fl32(2 / n) directly, or fl32(2 fl64(1 / n)),
    # which may differ by one float32 rounding (2u relative with the product's).
    rng = np.random.default_rng(7)
    pred, target = rng.normal(size=(33, 5)).astype(np.float32), rng.normal(size=(33, 5)).astype(np.float32)
    loss, grad = ops.mse(pred, target, device=device)
    loss_w, grad_w = ops.mse(pred, target, row_weights=np.ones(33, np.float32), device=device)
    assert loss_w == pytest.approx(loss, rel=1e-14)
    assert_close(grad_w, grad, 2 * U32 * np.abs(grad), "grad with unit weights")


def test_mse_exact_for_equal_inputs(isa, device):
    x = np.array([[1.5, -0.0, 3e38], [1e-45, 0.0, -7.0]], np.float32)
    grad = nan_filled(x.shape)
    loss, _ = ops.mse(x, x.copy(), grad_out=grad, device=device)
    assert loss == 0.0 and (grad == 0.0).all()


def _call(device, **over):
    kw = dict(pred=np.zeros((4, 3), np.float32), target=np.zeros((4, 3), np.float32), device=device)
    kw.update(over)
    return lambda: ops.mse(kw.pop("pred"), kw.pop("target"), **kw)


BAD = {
    "pred float64": (dict(pred=np.zeros((4, 3))), TypeError, r"\[mse\] pred must be float32"),
    "target float16": (dict(target=np.zeros((4, 3), np.float16)), TypeError, r"\[mse\] target must be float32"),
    "grad_out int32": (dict(grad_out=np.zeros((4, 3), np.int32)), TypeError, r"\[mse\] grad_out must be float32"),
    "target shape": (dict(target=np.zeros((3, 4), np.float32)), ValueError, r"\[mse\] target has shape"),
    "target rank": (dict(target=np.zeros((4, 3, 1), np.float32)), ValueError, r"\[mse\] target has shape"),
    "grad_out shape": (dict(grad_out=np.zeros(12, np.float32)), ValueError, r"\[mse\] grad_out has shape"),
    "empty": (
        dict(pred=np.zeros((0, 3), np.float32), target=np.zeros((0, 3), np.float32)),
        ValueError,
        r"\[mse\] pred is empty",
    ),
    "pred strided": (dict(pred=np.zeros((4, 6), np.float32)[:, ::2]), ValueError, r"\[mse\] pred must be C-contiguous"),
    "target transposed": (
        dict(target=np.zeros((3, 4), np.float32).T),
        ValueError,
        r"\[mse\] target must be C-contiguous",
    ),
    "row_weights float64": (dict(row_weights=np.ones(4)), TypeError, r"\[mse\] row_weights must be float32"),
    "row_weights length": (dict(row_weights=np.ones(3, np.float32)), ValueError, r"\[mse\] row_weights has shape"),
    "row_weights 2-D": (dict(row_weights=np.ones((4, 1), np.float32)), ValueError, r"\[mse\] row_weights must be 1-D"),
    "negative row weight": (
        dict(row_weights=np.array([1, -1, 1, 1], np.float32)),
        ValueError,
        r"\[mse\] row_weights\[1\] = -1.0+ must be finite and >= 0",
    ),
    "NaN row weight": (
        dict(row_weights=np.array([1, 1, 1, np.nan], np.float32)),
        ValueError,
        r"\[mse\] row_weights\[3\]",
    ),
    "row_weights of a scalar": (
        dict(pred=np.zeros((), np.float32), target=np.zeros((), np.float32), row_weights=np.ones(1, np.float32)),
        ValueError,
        r"\[mse\] pred is a scalar",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_mse_rejects_bad_input(device, case):
    over, exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        _call(device, **over)()


@pytest.mark.parametrize("which", ["pred", "target"])
def test_mse_rejects_grad_aliasing_an_input(device, which):
    pred, target = np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32)
    alias = pred if which == "pred" else target
    with pytest.raises(ValueError, match=rf"\[mse\] grad_out shares memory with {which}"):
        ops.mse(pred, target, grad_out=alias, device=device)
