"""The training step's losses (Backend::<loss>_metrics): the loss, its gradient and the
epoch's loss sum, correct count, confusion matrix and regression sums in one launch on the
CUDA devices (issue 22), against tests/reference.py and, bit for bit, against the ops they
replace (the loss op, accumulate, count_correct, confusion_matrix_update,
regression_stats_update), which the CPU runs."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

import reference
from customml import _core, ops
from support import ROW_WEIGHTS, assert_close, assert_same_bits, row_weights_of, sizes
from test_binary_cross_entropy import tolerances as bce_tolerances
from test_mse import tolerances as mse_tolerances
from test_softmax_cross_entropy import build, sce_problems, tolerances

SUMS = st.sampled_from([0.0, -0.0, 1.5, 1e300, float("nan")])
ROWS = st.sampled_from([1.0, 128.0, 0.37, 0.0])
COUNTS = st.sampled_from([0, 7, 2**40])


def check_sums(device, loss, loss_sum, loss_rows, new_sum):
    """accumulate's sum += loss x rows, rounded once or (a GPU's fused multiply-add) not at
    all in between: both are within one rounding of the exact value, so within 1 ulp of
    each other; the emulation and the CPU round as Python does."""
    want = np.float64(loss_sum) + np.float64(loss) * np.float64(loss_rows)
    if device == "cuda":
        assert_close(new_sum, want, abs(float(np.spacing(want))), "loss_sum")
    else:
        assert np.float64(new_sum).tobytes() == want.tobytes(), (new_sum, want)


@given(
    problem=sce_problems,
    weights=st.sampled_from((None,) + ROW_WEIGHTS),
    loss_sum=SUMS,
    loss_rows=ROWS,
    correct=COUNTS,
)
# One block (8 rows), blocks of 8 with a short last one, more rows than one block's threads
# sum (the last block's slices of the row losses), and the block-per-row kernel.
@example(problem=(8, 10, "normal", "none", 0.0, 1), weights=None, loss_sum=0.0, loss_rows=8.0, correct=0)
@example(problem=(129, 10, "mixed", "random", 0.1, 2), weights="random", loss_sum=3.0, loss_rows=129.0, correct=5)
@example(problem=(1025, 10, "huge", "none", 0.1, 3), weights=None, loss_sum=0.0, loss_rows=1025.0, correct=0)
@example(problem=(3, 1025, "mixed", "random", 0.0, 4), weights="wide", loss_sum=1.0, loss_rows=3.0, correct=1)
@example(problem=(7, 5, "normal", "all_zero", 0.2, 5), weights="all_zero", loss_sum=0.0, loss_rows=7.0, correct=0)
def test_softmax_step_loss_matches_the_reference_and_the_separate_ops(
    device, problem, weights, loss_sum, loss_rows, correct
):
    logits, labels, cw, smoothing = build(problem)
    rw = None if weights is None else row_weights_of(np.random.default_rng(problem[-1]), logits.shape[0], weights)
    loss, grad, new_sum, new_correct, confusion = _core._loss_metrics(
        "softmax_cross_entropy", logits, labels, None, cw, rw, smoothing, loss_sum, loss_rows, correct, device
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
    check_sums(device, loss, loss_sum, loss_rows, new_sum)
    # count_correct's rule (the first maximal logit), exact in integers.
    assert new_correct == correct + ops.count_correct(logits, labels, device=device)
    check_confusion(device, confusion, logits, labels)


def check_confusion(device, confusion, logits, labels):
    """The step's confusion matrix is confusion_matrix_update's, exact in integers."""
    k = 2 if logits.shape[1] == 1 else logits.shape[1]
    want = ops.confusion_matrix_update(np.zeros((k, k), np.int64), logits, labels, device=device)
    np.testing.assert_array_equal(confusion, want)
    assert confusion.sum() == logits.shape[0]


pointwise_problems = st.tuples(sizes, sizes, st.integers(0, 2**32 - 1)).filter(lambda p: p[0] * p[1] <= 1 << 15)


@given(
    problem=pointwise_problems,
    weights=st.sampled_from((None,) + ROW_WEIGHTS),
    loss_sum=SUMS,
    loss_rows=ROWS,
    correct=COUNTS,
)
# One column (the executor's case: the kernel counts the rows right), several (count_correct
# does), a grid-stride loop over more elements than the grid's threads.
@example(problem=(128, 1, 1), weights=None, loss_sum=0.0, loss_rows=128.0, correct=0)
@example(problem=(129, 1, 2), weights="random", loss_sum=2.0, loss_rows=129.0, correct=3)
@example(problem=(7, 3, 3), weights="with_zeros", loss_sum=0.0, loss_rows=7.0, correct=0)
@example(problem=(1000, 32, 4), weights=None, loss_sum=0.0, loss_rows=1000.0, correct=0)
def test_binary_step_loss_matches_the_reference_and_the_separate_ops(
    device, problem, weights, loss_sum, loss_rows, correct
):
    rows, cols, seed = problem
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((rows, cols)) * 4).astype(np.float32)
    logits[rng.random((rows, cols)) < 0.05] = 0.0  # a tie at the threshold: not "> 0"
    labels = rng.integers(0, 2, rows).astype(np.int32)
    targets = np.repeat(labels[:, None], cols, axis=1).astype(np.float32)
    rw = None if weights is None else row_weights_of(rng, rows, weights)
    loss, grad, new_sum, new_correct, confusion = _core._loss_metrics(
        "binary_cross_entropy", logits, labels, targets, None, rw, 0.0, loss_sum, loss_rows, correct, device
    )
    loss_ref, grad_ref = reference.binary_cross_entropy_with_logits(logits, targets, row_weights=rw)
    loss_tol, grad_tol = bce_tolerances(logits, targets, rw)
    assert_close(loss, loss_ref, loss_tol, "loss")
    assert_close(grad, grad_ref, grad_tol, "grad")
    grad_op = np.full_like(logits, np.nan)
    loss_op, _ = ops.binary_cross_entropy_with_logits(logits, targets, row_weights=rw, grad_out=grad_op, device=device)
    assert np.float64(loss).tobytes() == np.float64(loss_op).tobytes()
    assert_same_bits(grad, grad_op, "grad")
    check_sums(device, loss, loss_sum, loss_rows, new_sum)
    assert new_correct == correct + ops.count_correct(logits, labels, device=device)
    check_confusion(device, confusion, logits, labels)


@given(problem=pointwise_problems, weights=st.sampled_from((None,) + ROW_WEIGHTS), loss_sum=SUMS, loss_rows=ROWS)
@example(problem=(128, 4, 1), weights=None, loss_sum=0.0, loss_rows=128.0)
@example(problem=(1000, 32, 2), weights="wide", loss_sum=1.0, loss_rows=1000.0)
def test_mse_step_loss_matches_the_reference_and_the_separate_ops(device, problem, weights, loss_sum, loss_rows):
    rows, cols, seed = problem
    rng = np.random.default_rng(seed)
    pred = rng.standard_normal((rows, cols)).astype(np.float32)
    target = rng.standard_normal((rows, cols)).astype(np.float32)
    rw = None if weights is None else row_weights_of(rng, rows, weights)
    loss, grad, new_sum, new_correct, stats = _core._loss_metrics(
        "mse", pred, None, target, None, rw, 0.0, loss_sum, loss_rows, 5, device
    )
    loss_ref, grad_ref = reference.mse(pred, target, row_weights=rw)
    loss_tol, grad_tol = mse_tolerances(pred, target, rw)
    assert_close(loss, loss_ref, loss_tol, "loss")
    assert_close(grad, grad_ref, grad_tol, "grad")
    grad_op = np.full_like(pred, np.nan)
    loss_op, _ = ops.mse(pred, target, row_weights=rw, grad_out=grad_op, device=device)
    assert np.float64(loss).tobytes() == np.float64(loss_op).tobytes()
    assert_same_bits(grad, grad_op, "grad")
    check_sums(device, loss, loss_sum, loss_rows, new_sum)
    assert new_correct == 5  # a regression loss counts nothing
    # regression_stats_update's sums (each column's rows in order, float64), bit for bit
    want = ops.regression_stats_update(np.zeros((4, cols)), pred, target, target[0].astype(np.float64), device=device)
    assert stats.tobytes() == want.tobytes(), (stats, want)
