"""The training step's softmax cross-entropy (Backend::softmax_cross_entropy_metrics): the
loss, its gradient and the epoch's loss sum and correct count in one launch on the CUDA
devices (issue 22), against tests/reference.py and, bit for bit, against the three ops
it replaces (softmax_cross_entropy, accumulate, count_correct), which the CPU runs."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

import reference
from customml import _core, ops
from support import ROW_WEIGHTS, assert_close, assert_same_bits, row_weights_of
from test_softmax_cross_entropy import build, sce_problems, tolerances


@given(
    problem=sce_problems,
    weights=st.sampled_from((None,) + ROW_WEIGHTS),
    loss_sum=st.sampled_from([0.0, -0.0, 1.5, 1e300, float("nan")]),
    loss_rows=st.sampled_from([1.0, 128.0, 0.37, 0.0]),
    correct=st.sampled_from([0, 7, 2**40]),
)
# One block (8 rows), blocks of 8 with a short last one, more rows than one block's threads
# sum (the last block's slices of the row losses), and the block-per-row kernel.
@example(problem=(8, 10, "normal", "none", 0.0, 1), weights=None, loss_sum=0.0, loss_rows=8.0, correct=0)
@example(problem=(129, 10, "mixed", "random", 0.1, 2), weights="random", loss_sum=3.0, loss_rows=129.0, correct=5)
@example(problem=(1025, 10, "huge", "none", 0.1, 3), weights=None, loss_sum=0.0, loss_rows=1025.0, correct=0)
@example(problem=(3, 1025, "mixed", "random", 0.0, 4), weights="wide", loss_sum=1.0, loss_rows=3.0, correct=1)
@example(problem=(7, 5, "normal", "all_zero", 0.2, 5), weights="all_zero", loss_sum=0.0, loss_rows=7.0, correct=0)
def test_step_loss_matches_the_reference_and_the_separate_ops(device, problem, weights, loss_sum, loss_rows, correct):
    logits, labels, cw, smoothing = build(problem)
    rw = None if weights is None else row_weights_of(np.random.default_rng(problem[-1]), logits.shape[0], weights)
    loss, grad, new_sum, new_correct = _core._softmax_cross_entropy_metrics(
        logits, labels, cw, rw, smoothing, loss_sum, loss_rows, correct, device
    )
    loss_ref, grad_ref = reference.softmax_cross_entropy(
        logits, labels, class_weights=cw, label_smoothing=smoothing, row_weights=rw
    )
    loss_tol, grad_tol = tolerances(logits, labels, cw, smoothing, rw)
    assert_close(loss, loss_ref, loss_tol, "loss")
    assert_close(grad, grad_ref, grad_tol, "grad")
    # The op computes the same loss and gradient (on the CUDA devices, the same kernel
    # without the metrics; on the CPU, the first of the three ops).
    grad_op = np.full_like(logits, np.nan)
    loss_op, _ = ops.softmax_cross_entropy(
        logits, labels, class_weights=cw, label_smoothing=smoothing, row_weights=rw, grad_out=grad_op, device=device
    )
    assert np.float64(loss).tobytes() == np.float64(loss_op).tobytes()
    assert_same_bits(grad, grad_op, "grad")
    # accumulate's sum += loss x rows, rounded once or (a GPU's fused multiply-add) not at
    # all in between: both are within one rounding of the exact value, so within 1 ulp of
    # each other; the emulation and the CPU round as Python does.
    want = np.float64(loss_sum) + np.float64(loss) * np.float64(loss_rows)
    if device == "cuda":
        assert_close(new_sum, want, abs(float(np.spacing(want))), "loss_sum")
    else:
        assert np.float64(new_sum).tobytes() == want.tobytes(), (new_sum, want)
    # count_correct's rule (the first maximal logit), exact in integers.
    assert new_correct == correct + ops.count_correct(logits, labels, device=device)
