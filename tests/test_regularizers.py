"""L1/L2 kernel regularization (customml.regularizers, Dense(kernel_regularizer=)):
one SGD step of the executor against a float64 NumPy reference on every device, the
penalty in the reported loss, biases untouched, validation and the file round trip.

How the tolerance of the step check is derived
----------------------------------------------
The model is x (8, 5) -> Dense(4, linear) -> Dense(3) -> softmax cross-entropy, so
every float32 value in the step is a sum of products reached through at most
5 + 4 + 3 (forward dot products) + 8 (batch sum of the kernel gradient) + 4 (back
through the second kernel) + 10 (softmax, its normalisation and the loss) = 34
roundings; with gamma_N = N u / (1 - N u) and N = 64 (twice that chain, covering the
softmax's condition, which at most doubles the logits' relative error) the computed
gradient g differs from the exact one by at most gamma_64 * A, where A is the same
expression over absolute values (Higham, 3.1). The update w - lr (g + l1 sign(w) +
2 l2 w) then adds at most 4 roundings of size u |w| + u lr |...|. The resulting bound
is ~1e-6 here, while the regularization moves each kernel element by lr (l1 + 2 l2 |w|)
>= 1e-3: the test asserts that gap too, so it cannot pass with the penalty missing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import customml as cm

U32 = 2.0**-24
GAMMA = 64 * U32 / (1 - 64 * U32)
L1, L2, LR = 0.01, 0.05, 0.1


def _data():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 5)).astype(np.float32)
    y = (np.arange(8) % 3).astype(np.int32)
    return x, y


def _model(device, regularizer):
    model = cm.Sequential(
        [cm.layers.Dense(4, kernel_regularizer=regularizer), cm.layers.Dense(3)], input_dim=5, seed=2, device=device
    )
    kernel, bias = model.layers[0].get_weights()
    kernel[0, :2] = 0.0  # sign(0) = 0: these elements take no L1 gradient
    model.layers[0].set_weights([kernel, np.linspace(-0.3, 0.3, 4).astype(np.float32)])
    model.compile(cm.optimizers.SGD(LR), "softmax_cross_entropy")
    return model


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_one_sgd_step_matches_numpy(device):
    x, y = _data()
    model = _model(device, cm.regularizers.l1_l2(L1, L2))
    (w0, b0), (w1, b1) = [[a.astype(np.float64) for a in layer.get_weights()] for layer in model.layers]
    history = model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)

    # float64 reference: forward, loss, backward, penalty, update
    x64 = x.astype(np.float64)
    h = x64 @ w0 + b0
    z = h @ w1 + b1
    p = _softmax(z)
    q = np.eye(3)[y]
    data_loss = -np.mean(np.log(p[np.arange(8), y]))
    penalty = L1 * np.abs(w0).sum() + L2 * (w0**2).sum()
    dz = (p - q) / 8
    dh = dz @ w1.T
    g0 = x64.T @ dh + L1 * np.sign(w0) + 2 * L2 * w0
    expected = w0 - LR * g0

    kernel, bias = model.layers[0].get_weights()
    assert kernel.shape == (5, 4) and kernel.dtype == np.float32
    # A: the gradient evaluated over absolute values (see the module docstring)
    a_g = np.abs(x64).T @ ((np.abs(dz) + (p + q) / 8) @ np.abs(w1).T) + L1 + 2 * L2 * np.abs(w0)
    tol = LR * GAMMA * a_g + 4 * U32 * (np.abs(w0) + LR * np.abs(g0))
    np.testing.assert_array_less(np.abs(kernel - expected), tol)
    effect = LR * (L1 * np.abs(np.sign(w0)) + 2 * L2 * np.abs(w0))
    moved = effect > 0
    assert (tol[moved] < 1e-2 * effect[moved]).all()  # the check is sharp enough to see the penalty
    assert (effect[0, :2] == 0).all()  # the zeros took no L1 step: what remains is data and L2 (0 here)

    # The reported loss includes the penalty at the weights the step started from; the
    # loss is a 10-rounding chain over values of size ~1, the penalty a double sum.
    assert history.history["loss"][0] == pytest.approx(data_loss + penalty, rel=64 * U32)


def test_biases_and_unregularized_layers_are_untouched(device):
    """The penalty's gradient goes to the regularized kernel only: the biases and the
    other layer's kernel update exactly as without a regularizer (bit for bit, since
    their gradients do not depend on it within one step)."""
    x, y = _data()
    plain, reg = _model(device, None), _model(device, cm.regularizers.l2(L2))
    for model in (plain, reg):
        model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    wp, wr = plain.get_weights(), reg.get_weights()
    assert wp[1].tobytes() == wr[1].tobytes()  # first bias
    assert wp[2].tobytes() == wr[2].tobytes() and wp[3].tobytes() == wr[3].tobytes()  # second layer
    assert not np.array_equal(wp[0], wr[0])


def test_evaluate_reports_the_penalty():
    x, y = _data()
    plain, reg = _model("cpu", None), _model("cpu", cm.regularizers.l1(L1))
    w0 = reg.layers[0].get_weights()[0].astype(np.float64)
    # Same weights: the losses differ by the penalty alone, a double sum of 20 terms
    # with the factor as the executor holds it (a C++ float); the two float32 data
    # losses are identical, so only double rounding (~1e-16 relative) remains.
    l1 = float(np.float32(L1))
    assert reg.evaluate(x, y)["loss"] - plain.evaluate(x, y)["loss"] == pytest.approx(l1 * np.abs(w0).sum(), rel=1e-12)


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda: cm.regularizers.l1(-1.0), "l1"),
        (lambda: cm.regularizers.l2(float("nan")), "l2"),
        (lambda: cm.regularizers.l1_l2(0.1, True), "l2"),
        (lambda: cm.layers.Dense(3, kernel_regularizer="l3"), "kernel_regularizer"),
        (lambda: cm.layers.Dense(3, kernel_regularizer=0.01), "kernel_regularizer"),
    ],
)
def test_bad_regularizers_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_names_take_keras_defaults():
    assert cm.layers.Dense(2, kernel_regularizer="l2").kernel_regularizer == cm.regularizers.L1L2(l2=0.01)
    assert cm.regularizers.l1_l2() == cm.regularizers.L1L2(0.01, 0.01)


def test_regularizer_round_trips_through_save_and_load(tmp_path):
    x, y = _data()
    model = _model("cpu", cm.regularizers.l1_l2(L1, L2))
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    model.save(tmp_path / "m.cml", include_optimizer=True)
    raw = (tmp_path / "m.cml").read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert header["__metadata__"]["format_version"] == "2"  # version-1 readers say "upgrade"
    loaded = cm.load(tmp_path / "m.cml")
    assert loaded.layers[0].kernel_regularizer == cm.regularizers.l1_l2(L1, L2)
    assert loaded.layers[1].kernel_regularizer is None
    for m in (model, loaded):
        m.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert [w.tobytes() for w in model.get_weights()] == [w.tobytes() for w in loaded.get_weights()]


def test_unregularized_models_write_what_version_1_wrote(tmp_path):
    """The key appears only when a regularizer is set, so version-1 readers still read
    every file without one (and tests/data/model_v1.cml, without it, still loads)."""
    model = _model("cpu", None)
    model.save(tmp_path / "m.cml")
    raw = (tmp_path / "m.cml").read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    layers = json.loads(header["__metadata__"]["architecture"])["layers"]
    assert all("kernel_regularizer" not in spec for spec in layers)
    assert header["__metadata__"]["format_version"] == "1"


# -- the op: customml.ops.l1_l2_penalty against tests/reference.py ------------------------

# Around the CUDA grid: 256 threads a block, 120 blocks a grid-stride pass (30720).
OP_SIZES = [1, 255, 256, 257, 30719, 30720, 30721]


@pytest.mark.parametrize("n", OP_SIZES)
def test_op_matches_reference(device, n):
    import reference
    from customml import ops

    rng = np.random.default_rng(n)
    param = rng.standard_normal(n).astype(np.float32)
    param[::7] = 0.0  # sign(0) = 0
    grad = rng.standard_normal(n).astype(np.float32)
    want_grad, want = reference.l1_l2_penalty(param, grad, L1, L2)
    got = ops.l1_l2_penalty(param, l1=L1, l2=L2, grad=grad, device=device)
    assert grad.shape == (n,) and grad.dtype == np.float32
    # grad + l1 sign(w) + (2 l2) w: 2 l2 is exact, so at most 3 float32 roundings (an FMA
    # only removes one): |error| <= gamma_3 (|g| + l1 + 2 l2 |w|) < 4 u (...).
    bound = (
        4
        * U32
        * (np.abs(want_grad - L1 * np.sign(param) - 2 * L2 * param.astype(np.float64)) + L1 + 2 * L2 * np.abs(param))
    )
    np.testing.assert_array_less(np.abs(grad - want_grad), bound + np.finfo(np.float32).tiny)
    # The penalty sums n non-negative float64 terms (|w| and w^2 of float32 values are
    # exact in float64) in some order, then scales twice and adds: relative error below
    # (n + 3) float64 roundings, for ours and NumPy's alike.
    assert got == pytest.approx(want, rel=2 * (n + 3) * 2.0**-53)
    assert ops.l1_l2_penalty(param, l1=L1, l2=L2, device=device) == got  # no grad: same penalty


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda ops, p, g: ops.l1_l2_penalty(p, l1=-1.0), ValueError, "l1 must be"),
        (lambda ops, p, g: ops.l1_l2_penalty(p, l2=float("inf")), ValueError, "l2 must be"),
        (lambda ops, p, g: ops.l1_l2_penalty(p, l1=0.1, grad=g[:3]), ValueError, "grad has shape"),
        (lambda ops, p, g: ops.l1_l2_penalty(p, l1=0.1, grad=g.astype(np.float64)), TypeError, "grad must be float32"),
        (lambda ops, p, g: ops.l1_l2_penalty(p.astype(np.float64), l1=0.1), TypeError, "param must be float32"),
        (lambda ops, p, g: ops.l1_l2_penalty(p, l1=0.1, grad=p), ValueError, "grad shares memory"),
    ],
)
def test_op_refuses_bad_arguments(call, error, match):
    from customml import ops

    p, g = np.ones(4, np.float32), np.zeros(4, np.float32)
    with pytest.raises(error, match=r"\[l1_l2_penalty\] " + match):
        call(ops, p, g)


# The folded step's variants (test_a_folded_penalty_step_gives_the_separate_kernels_bits):
# binary cross-entropy sums the penalties in its loss launch too; with clipping the norm
# comes from dW's slots, which then include the penalty's gradient (a bound of 1e6 that
# never clips, so that the weights keep the separate passes' bits: test_clip_slots checks a
# clipped step's). At 16 rows every product is tiled; at 3 the top layer's take the float32
# GEMV, at 48 split-K (the weight gradient's k is the batch: 3 parts); bf16 the tensor cores.
# frozen: the middle layer.
_FOLDED = {
    "sgd": dict(),
    "adam frozen": dict(optimizer="adam", frozen=True),
    "binary_ce": dict(loss="binary_cross_entropy"),
    "clipnorm frozen": dict(clipnorm=1e6, frozen=True),
    "binary_ce clipnorm": dict(loss="binary_cross_entropy", clipnorm=1e6),
    "clipnorm gemv": dict(clipnorm=1e6, batch=3),
    "clipnorm split-k": dict(clipnorm=1e6, batch=48),
    "clipnorm bf16 frozen": dict(clipnorm=1e6, precision="bf16", frozen=True),
}


@pytest.mark.parametrize("variant", sorted(_FOLDED))
def test_a_folded_penalty_step_gives_the_separate_kernels_bits(variant):
    """On the CUDA devices a training step sums the penalties in the loss launch and dW's
    store adds their gradients (Backend::folded_penalties, DenseShape::penalty: no launch
    of their own); a step in two halves (compute_gradients, apply_gradients, as
    data-parallel training runs it) keeps kernel_penalties. Both give the same bits:
    gradients, weights, optimizer state and the loss sum, a frozen regularized layer's
    penalty included (it counts in the loss, takes no gradient)."""
    v = _FOLDED[variant]
    batch, binary = v.get("batch", 16), v.get("loss") == "binary_cross_entropy"
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3 * batch, 12)).astype(np.float32)
    y = rng.integers(0, 2 if binary else 3, 3 * batch).astype(np.int32)
    reg = cm.regularizers

    def model():
        m = cm.Sequential(
            [
                cm.layers.Dense(40, "relu", kernel_regularizer=reg.l1_l2(1e-3, 1e-2)),
                cm.layers.Dense(24, "tanh", kernel_regularizer=reg.l2(5e-2)),
                cm.layers.Dense(1 if binary else 3, kernel_regularizer=reg.l1(2e-2)),
            ],
            input_dim=12,
            seed=4,
            device="cuda-emulated",
        )
        m.layers[1].trainable = not v.get("frozen", False)
        opt = cm.optimizers.Adam(1e-2) if v.get("optimizer") == "adam" else cm.optimizers.SGD(0.1, momentum=0.9)
        m.compile(opt, v.get("loss", "softmax_cross_entropy"), clipnorm=v.get("clipnorm"),
                  precision=v.get("precision", "fp32"))  # fmt: skip
        return m

    folded, halves = model(), model()
    n = folded._net.num_params
    grads = np.empty((2, n), np.float32)
    for step in range(3):
        index = np.arange(batch * step, batch * step + batch, dtype=np.int64)
        folded._net.train_batch(x, y, index)
        halves._net.compute_gradients(x, y, index)
        halves._net.apply_gradients(batch)
        folded._net.read_gradients(grads[0])
        halves._net.read_gradients(grads[1])
        assert grads[0].tobytes() == grads[1].tobytes(), f"step {step}"
        # the folded step clipped by dW's slots (so they included the penalty), the halves by global_norm
        assert (len(folded._net._read_norm_slots()) > 0) == ("clipnorm" in v)
    for a, b in zip(folded.get_weights(), halves.get_weights()):
        assert a.tobytes() == b.tobytes()
    for slot in range(folded._net.state_slots):
        assert folded._net.read_state(slot, 0, n).tobytes() == halves._net.read_state(slot, 0, n).tobytes()
    assert np.float64(folded._net.metrics()[0]).tobytes() == np.float64(halves._net.metrics()[0]).tobytes()
