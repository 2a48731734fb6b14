"""16-bit copies with padded rows (docs/decisions.md, CUDA): every 16-bit copy the
tensor-core GEMMs read (the layer input's, the weights' twin, dz's) has its rows
half_ld(cols) apart, cols rounded up to a multiple of 8 (cpp/backend.h), so that a layer
whose width is not a multiple of 8 (the README MLP's 10-wide top layer) still has copies
cp.async can move in 16-byte runs: its forward and backward take the instance that copies A
and B (no per-element conversion in the loop). The pads are never read: the hooks here fill
them with NaN bits, so a kernel reading one, or a copy read at the float's stride, makes NaN
or wrong sums."""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm
import reference
from customml import _core
from support import sass_report_module

pytestmark = pytest.mark.skipif(not cm.build_info()["simt_emulation"], reason="built with CUSTOMML_SIMT_EMULATION=OFF")

DEVICE = "cuda-emulated"
U32 = 2.0**-24
# (batch, in, out): the README MLP's top layer (256 -> 10), a 10-wide layer on a 13-wide
# input (both copies padded), 5 wide on 20 (pads of 3 and 4), one wide on one (a float
# operand's strides both 1: the copy's padded stride gives its direction), and widths that
# are multiples of 8 (no pads: the layout as before)
SHAPES = [(72, 256, 10), (33, 13, 10), (9, 20, 5), (17, 1, 1), (72, 48, 40)]


def _bf16_values(rng, shape):
    return reference.bf16_to_float(reference.to_bf16(rng.standard_normal(shape).astype(np.float32)))


@pytest.mark.parametrize(("batch", "n_in", "n_out"), SHAPES)
def test_the_backward_reads_the_padded_copies(batch, n_in, n_out):
    """Given padded copies of 2 dz and 4 x (exact in bf16 from bf16 values; the pads NaN),
    dW is 8 x^T dz and dx 2 dz W^T (the twin's rows padded too): the products read the
    copies, at their own strides, and no pad. db sums the float dz. Bounds as
    test_dense_dz.py's: each sum of n terms within gamma_n of the sum of |terms|."""
    rng = np.random.default_rng(n_in * n_out)
    dz, x, w = _bf16_values(rng, (batch, n_out)), _bf16_values(rng, (batch, n_in)), _bf16_values(rng, (n_in, n_out))
    y = np.ones((batch, n_in), np.float32)  # relu's derivative 1 everywhere
    got_dx, got_dw, got_db, got_dx16, _ = _core._dense_backward_below(
        dz, x, w, "relu", y, None, "bf16", reference.to_bf16(2 * dz), reference.to_bf16(4 * x), DEVICE
    )
    gamma = lambda n: n * U32 / (1 - n * U32)  # noqa: E731
    want_dw = 8 * (x.T.astype(np.float64) @ dz)
    np.testing.assert_array_less(np.abs(got_dw - want_dw), 8 * gamma(batch) * (np.abs(x.T) @ np.abs(dz)) + 1e-30)
    want_db = dz.astype(np.float64).sum(axis=0)
    np.testing.assert_array_less(np.abs(got_db - want_db), gamma(batch) * np.abs(dz).sum(axis=0) + 1e-30)
    want_dx = 2 * (dz.astype(np.float64) @ w.T)
    np.testing.assert_array_less(np.abs(got_dx - want_dx), 2 * gamma(n_out) * (np.abs(dz) @ np.abs(w.T)) + 1e-30)
    # the dx store's copy of the layer below's dz, its rows padded too
    np.testing.assert_array_equal(got_dx16, reference.to_bf16(got_dx))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize(("batch", "n_in", "n_out"), SHAPES)
def test_the_forward_reads_the_padded_copies(batch, n_in, n_out, precision):
    """y = x W + b from padded copies of x and the twin (NaN pads) against NumPy on the
    rounded operands (products exact in float32; the sum within gamma_in of the sum of
    |terms|), and y's padded 16-bit copy."""
    rng = np.random.default_rng(n_in + n_out)
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    y, _, y16 = _core._dense_forward_half(x, w, b, "identity", precision, True, DEVICE)

    def rounded(a):
        return (
            a.astype(np.float16).astype(np.float64)
            if precision == "fp16"
            else reference.bf16_to_float(reference.to_bf16(a)).astype(np.float64)
        )

    xa, wa = rounded(x), rounded(w)
    bound = (n_in + 2) * U32 * (np.abs(xa) @ np.abs(wa) + np.abs(b)) + 1e-30
    np.testing.assert_array_less(np.abs(y - (xa @ wa + b)), bound)
    want16 = y.astype(np.float16).view(np.uint16) if precision == "fp16" else reference.to_bf16(y)
    np.testing.assert_array_equal(y16, want16)


def test_a_step_through_padded_copies_gives_the_exact_update():
    """One bf16 SGD step of a 20 -> 16 -> 10 model (the input's copy padded to 24 wide, the
    top layer's twin and the loss's dz copy to 16) on integer data, where every value is exact
    in bf16 and every sum exact in float32: h = x W1 + b1 and pred = h W2 + b2 integers, the
    mse targets pred + 5k so that dz = 2 (pred - target) / (8 x 10) = -k / 8, and the
    gradients dyadic sums. So the weights after the step equal NumPy's bit for bit: a copy
    written or read at another stride (the loss's dz copy, the dx store's, the batch's, the
    twin's) or a pad read would move them."""
    rng = np.random.default_rng(10)
    rows, n_in, hidden, out = 8, 20, 16, 10
    x = rng.integers(-2, 3, (rows, n_in)).astype(np.float32)
    w1 = rng.integers(-2, 3, (n_in, hidden)).astype(np.float32)
    b1 = rng.integers(-2, 3, hidden).astype(np.float32)
    w2 = rng.integers(-2, 3, (hidden, out)).astype(np.float32)
    b2 = rng.integers(-2, 3, out).astype(np.float32)
    k = rng.integers(-2, 3, (rows, out)).astype(np.float32)
    h = x.astype(np.float64) @ w1 + b1
    pred = h @ w2 + b2
    assert np.abs(h).max() < 256 and np.abs(pred).max() < 2**24  # exact in bf16 / float32
    target = (pred + 5 * k).astype(np.float32)

    model = cm.Sequential([cm.layers.Dense(hidden), cm.layers.Dense(out)], input_dim=n_in, device=DEVICE, seed=0)
    model.compile(optimizer=cm.optimizers.SGD(0.25), loss="mse", precision="bf16")
    model.set_weights([w1, b1, w2, b2])
    model.fit(x, target, epochs=1, batch_size=rows, shuffle=False, verbose=0)

    dz = -k.astype(np.float64) / 8
    dw2, db2 = h.T @ dz, dz.sum(axis=0)
    dx = dz @ w2.T
    dw1, db1 = x.T.astype(np.float64) @ dx, dx.sum(axis=0)
    want = [w1 - 0.25 * dw1, b1 - 0.25 * db1, w2 - 0.25 * dw2, b2 - 0.25 * db2]
    for got, w in zip(model.get_weights(), want):
        np.testing.assert_array_equal(got, w.astype(np.float32))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_the_sass_report_mirrors_the_instance_choice(precision):
    """bench/sass_report.py's estimates and instruction counts name, for each README MLP
    layer, the gemm_tc_kernel instance a training step's launches take (kCopies): the one
    copying A and B (2) where the device reads the copies of x and dz both ways
    (Backend::dense_half_reads, the rule half_copies applies), the 10-wide top layer included."""
    for what, backward, problems, copies in sass_report_module().dense_shapes():
        if not what.startswith("MLP"):
            continue
        m, n, k = problems[0]
        n_in, n_out = (m - 1, n) if backward else (k, n)
        reads = _core._dense_half_reads(n_in, n_out, precision, DEVICE)
        assert (copies == 2) == all(reads), (what, reads)
