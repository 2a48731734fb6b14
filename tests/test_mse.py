"""mse against tests/reference.py on every device."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import reference
from customml import ops
from support import (
    TINY32,
    U32,
    U64,
    VALUE_KINDS,
    assert_close,
    assert_float32_array,
    assert_same_bits,
    make_values,
    nan_filled,
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


def tolerances(pred, target):
    """d = fl32(pred - target) errs by <= u |d| (exact in the subnormal range), so d^2
    (exact in float64) by <= 2.01u d^2; the float64 sum of n squares adds (n + 2) u64.
    The gradient fl32(2 / n) * d: three float32 roundings of the result, plus underflow."""
    d = pred.astype(np.float64) - target.astype(np.float64)
    n = d.size
    loss_tol = (2.01 * U32 + (n + 2) * U64) * (d * d).sum() / n
    grad_tol = 3.01 * U32 * np.abs(2.0 * d / n) + 2 * TINY32
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
    "empty": (dict(pred=np.zeros((0, 3), np.float32), target=np.zeros((0, 3), np.float32)), ValueError,
              r"\[mse\] pred is empty"),
    "pred strided": (dict(pred=np.zeros((4, 6), np.float32)[:, ::2]), ValueError, r"\[mse\] pred must be C-contiguous"),
    "target transposed": (dict(target=np.zeros((3, 4), np.float32).T), ValueError, r"\[mse\] target must be C-contiguous"),
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
