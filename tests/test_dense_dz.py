"""The backward pass reads a ready dz (docs/decisions.md, CUDA): on CUDA a Dense layer's dx
store writes the Dense layer below's dz = act'(dx; y, z) (after a fused Dropout's mask)
and, at bf16 / fp16, its 16-bit copy; the backward GEMMs then read dz, the layer input's
16-bit copy and the weights' twin as they are. The hook runs Backend::dense_backward as a
training step calls it for a layer whose dy is already dz."""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm
import reference
from customml import _core

pytestmark = pytest.mark.skipif(not cm.build_info()["simt_emulation"], reason="built with CUSTOMML_SIMT_EMULATION=OFF")

DEVICE = "cuda-emulated"
ACTIVATIONS = ["identity", "relu", "sigmoid", "tanh", "gelu"]
U32 = 2.0**-24


def _layer_below(rng, batch, width, activation):
    """The layer below's output y and pre-activation z, ties and -0 among them."""
    z = rng.standard_normal((batch, width)).astype(np.float32) * 2
    z.flat[:: max(1, z.size // 5)] = 0.0
    z.flat[1 :: max(1, z.size // 7)] = -0.0
    y = reference.activation_forward(activation, z).astype(np.float32)
    return y, z


@pytest.mark.parametrize("below", ACTIVATIONS)
@pytest.mark.parametrize(
    ("batch", "n_in", "n_out"),
    [(1, 7, 5), (2, 65, 3), (63, 64, 17), (65, 33, 64), (130, 65, 65)],  # GEMV, tile edges +-1, split-K
)
def test_the_dx_store_writes_the_layer_below_dz(below, batch, n_in, n_out):
    """dx = dz W^T through the layer below's derivative, dW = x^T dz and db = sum dz read
    dz as given (no derivative of this layer): against NumPy in float64. Bound: each of dx's
    and dW's sums of n terms is within gamma_n sum |terms| of the exact one (n <= 130),
    which the derivative scales by |act'|; its float32 expression adds a few units of
    rounding of dx (tanh's 1 - y^2 and gelu's sum cancel: relative to dx, not to dz)."""
    rng = np.random.default_rng(batch * 1000 + n_in)
    dz = rng.standard_normal((batch, n_out)).astype(np.float32)
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    w = rng.standard_normal((n_in, n_out)).astype(np.float32)
    y, z = _layer_below(rng, batch, n_in, below)
    got_dx, got_dw, got_db, *_ = _core._dense_backward_below(
        dz, x, w, below, y, z if below == "gelu" else None, "fp32", None, None, DEVICE
    )
    dx = dz.astype(np.float64) @ w.T.astype(np.float64)
    want_dx = reference.activation_backward(below, dx, y, z)
    bound_dx = np.abs(dz).astype(np.float64) @ np.abs(w.T).astype(np.float64)
    scale = np.abs(reference.activation_backward(below, np.ones_like(dx), y, z))
    gamma = n_out * U32 / (1 - n_out * U32)
    bound = gamma * bound_dx * scale + 16 * U32 * np.abs(dx) + 1e-30
    np.testing.assert_array_less(np.abs(got_dx - want_dx), bound)
    if below == "relu":  # exact zeros where y <= 0, as the layer's own loads would give
        assert (got_dx[y <= 0] == 0).all() and not np.signbit(got_dx[y <= 0]).any()
    gamma_k = batch * U32 / (1 - batch * U32)
    want_dw = x.T.astype(np.float64) @ dz.astype(np.float64)
    np.testing.assert_array_less(
        np.abs(got_dw - want_dw), gamma_k * (np.abs(x.T).astype(np.float64) @ np.abs(dz)) + 1e-30
    )
    want_db = dz.astype(np.float64).sum(axis=0)
    np.testing.assert_array_less(np.abs(got_db - want_db), gamma_k * np.abs(dz).sum(axis=0) + 1e-30)


def test_the_dx_store_matches_the_layers_own_derivative_bit_for_bit():
    """The derivative moved, not changed: dz below from the dx store equals the dense_backward
    op's route (dx first, then the layer below's derivative where its dz is read) bit for bit,
    seen through the layer below's weight gradient."""
    rng = np.random.default_rng(3)
    batch, n_in, n_out, n_below = 67, 40, 24, 9
    dz = rng.standard_normal((batch, n_out)).astype(np.float32)
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    w = rng.standard_normal((n_in, n_out)).astype(np.float32)
    x_below = rng.standard_normal((batch, n_below)).astype(np.float32)
    w_below = rng.standard_normal((n_below, n_in)).astype(np.float32)
    for below in ACTIVATIONS:
        y, z = _layer_below(rng, batch, n_in, below)
        zz = z if below == "gelu" else None
        fused, *_ = _core._dense_backward_below(dz, x, w, below, y, zz, "fp32", None, None, DEVICE)
        plain, _, _ = cm.ops.dense_backward(dz, x, w, np.zeros_like(dz), device=DEVICE)
        _, dw_op, db_op = cm.ops.dense_backward(plain, x_below, w_below, y, z=zz, activation=below, device=DEVICE)
        _, dw_fused, db_fused = cm.ops.dense_backward(fused, x_below, w_below, y, device=DEVICE)
        np.testing.assert_array_equal(dw_fused.view(np.uint32), dw_op.view(np.uint32), err_msg=below)
        np.testing.assert_array_equal(db_fused.view(np.uint32), db_op.view(np.uint32), err_msg=below)


@pytest.mark.parametrize("below", ["relu", "gelu"])
def test_the_backward_reads_the_16_bit_copies(below):
    """At bf16 the backward reads dz's 16-bit copy (dW's B, dx's A) and x's (dW's A), not the
    float arrays rounded: given copies of 2 dz and 4 x (exact in bf16 from bf16 values), dW
    is 8 x^T dz and dx 2 dz W^T (through the derivative below), while db sums the float dz
    (the float32 kernels' bits). Widths multiples of 8: the copies are copyable (copyable_16).
    The dx store writes the layer below's dz rounded to bf16 beside it."""
    rng = np.random.default_rng(8)
    batch, n_in, n_out = 72, 48, 40

    def bf16_values(shape):
        return reference.bf16_to_float(reference.to_bf16(rng.standard_normal(shape).astype(np.float32)))

    dz, x, w = bf16_values((batch, n_out)), bf16_values((batch, n_in)), bf16_values((n_in, n_out))
    y, z = _layer_below(rng, batch, n_in, below)
    got_dx, got_dw, got_db, got_dx16, _ = _core._dense_backward_below(
        dz, x, w, below, y, z if below == "gelu" else None, "bf16", reference.to_bf16(2 * dz),
        reference.to_bf16(4 * x), DEVICE,
    )  # fmt: skip
    want_dw = 8 * (x.T.astype(np.float64) @ dz)
    gamma_k = batch * U32 / (1 - batch * U32)
    np.testing.assert_array_less(np.abs(got_dw - want_dw), 8 * gamma_k * (np.abs(x.T) @ np.abs(dz)) + 1e-30)
    want_db = dz.astype(np.float64).sum(axis=0)
    np.testing.assert_array_less(np.abs(got_db - want_db), gamma_k * np.abs(dz).sum(axis=0) + 1e-30)
    dx = 2 * (dz.astype(np.float64) @ w.T)
    want_dx = reference.activation_backward(below, dx, y, z)
    scale = np.abs(reference.activation_backward(below, np.ones_like(want_dx), y, z))
    gamma_n = n_out * U32 / (1 - n_out * U32)
    bound = 2 * gamma_n * (np.abs(dz) @ np.abs(w.T)) * scale + 16 * U32 * np.abs(dx) + 1e-30
    np.testing.assert_array_less(np.abs(got_dx - want_dx), bound)
    np.testing.assert_array_equal(got_dx16, reference.to_bf16(got_dx))


@pytest.mark.parametrize("rows", [1, 63, 65])
@pytest.mark.parametrize(
    ("act1", "act2", "top"), [("relu", "gelu", "tanh"), ("gelu", "tanh", "gelu"), ("sigmoid", "identity", "sigmoid")]
)
def test_a_step_through_every_derivative_and_a_fused_dropout_matches_the_cpu(rows, act1, act2, top):
    """A training step whose dx stores apply each activation's derivative, one through a
    fused Dropout's mask (same Philox bits by element index), and whose loss applies the top
    layer's (LossMetrics::top), batch 1 and tile edges: the
    cuda-emulated weights after one SGD step against the CPU's. The devices sum in different
    orders (float32 rounding, ~1e-7 relative, through 3 layers and one step of lr 0.1); a
    derivative applied twice, skipped or read at the wrong offsets moves a weight by 1e-3 or
    more."""
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 13)).astype(np.float32)
    y = rng.standard_normal((rows, 3)).astype(np.float32)
    got = {}
    for device in ("cpu", DEVICE):
        model = cm.Sequential(
            [cm.layers.Dense(65, activation=act1), cm.layers.Dropout(0.5), cm.layers.Dense(17, activation=act2),
             cm.layers.Dense(3, activation=top)],
            input_dim=13, seed=4, device=device,
        )  # fmt: skip
        model.compile(optimizer=cm.optimizers.SGD(0.1), loss="mse")
        start = model.get_weights()
        model.fit(x, y, epochs=1, batch_size=rows, verbose=0)
        got[device] = model.get_weights()
    for i, (a, b) in enumerate(zip(got["cpu"], got[DEVICE])):
        assert (a != start[i]).any(), f"weight {i} did not move"
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * max(1.0, np.abs(a).max()), err_msg=f"weight {i}")


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize(
    ("top", "loss"),
    [("sigmoid", "binary_cross_entropy"), ("tanh", "mse"), ("gelu", "mse"), ("relu", "softmax_cross_entropy")],
)
def test_the_loss_launch_writes_the_top_layers_dz_bit_for_bit(top, loss, precision):
    """The top Dense layer's derivative moved into the loss launch (LossMetrics::top), not
    changed: the weights after two Adam steps equal bit for bit those of the same model
    ending in a Dropout of rate 0, whose top layer is not the model's last, so that its
    dense_backward still applies the derivative in its own launch. At bf16 / fp16 the loss
    also writes dz's 16-bit copy, which the top layer's tensor-core backward reads instead
    of rounding the float dz as it stages it (the same rounding); fp16 scales the gradient
    by its loss scale before the derivative, as before."""
    rng = np.random.default_rng(5)
    rows, outputs = 70, 1 if loss == "binary_cross_entropy" else 16
    x = rng.standard_normal((rows, 24)).astype(np.float32)
    if loss == "mse":
        y = rng.standard_normal((rows, outputs)).astype(np.float32)
    else:
        y = rng.integers(0, 2 if outputs == 1 else outputs, rows).astype(np.int32)
    got = []
    for tail in ([], [cm.layers.Dropout(0.0)]):
        model = cm.Sequential(
            [cm.layers.Dense(32, activation="relu"), cm.layers.Dense(outputs, activation=top), *tail],
            input_dim=24, seed=2, device=DEVICE,
        )  # fmt: skip
        model.compile(optimizer=cm.optimizers.Adam(1e-2), loss=loss, precision=precision)
        start = model.get_weights()
        model.fit(x, y, epochs=1, batch_size=rows // 2, shuffle=False, verbose=0)
        got.append(model.get_weights())
    for i, (fused, plain) in enumerate(zip(*got)):
        assert (fused != start[i]).any(), f"weight {i} did not move"
        np.testing.assert_array_equal(fused.view(np.uint32), plain.view(np.uint32), err_msg=f"weight {i}")
