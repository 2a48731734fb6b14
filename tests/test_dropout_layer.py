"""The Dropout layer in a model: off in predict and evaluate, its mask scaling the kept units
in training, the same mask in the backward pass, and rate 0 as the identity. (The op and
its Philox stream: tests/test_dropout.py.)"""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm
from model_reference import make_model, random_biases, softmax64, step_data
from support import U32


def test_dropout_is_off_in_predict_and_evaluate():
    rng = np.random.default_rng(17)
    x = rng.standard_normal((60, 5)).astype(np.float32)
    y = rng.integers(0, 3, 60).astype(np.int32)
    drop = make_model(widths=(16, 9, 3), acts=("relu", "tanh", None), dropout=0.5, seed=2)
    plain = make_model(widths=(16, 9, 3), acts=("relu", "tanh", None), seed=9)
    assert [layer.name for layer in drop.layers] == ["dense", "dropout", "dense_1", "dropout_1", "dense_2"]
    plain.set_weights(drop.get_weights())
    np.testing.assert_array_equal(drop.predict(x), plain.predict(x))  # same GEMMs: bit for bit
    for m in (drop, plain):
        m.compile("adam", metrics=["accuracy"])
    assert drop.evaluate(x, y) == plain.evaluate(x, y)
    # ... and a trailing Dropout too
    tail = cm.Sequential(
        [cm.layers.Dense(16, activation="relu"), cm.layers.Dense(3), cm.layers.Dropout(0.5)], input_dim=5
    )
    tail.set_weights(
        drop.get_weights()[:2] + [rng.standard_normal((16, 3)).astype(np.float32), np.zeros(3, np.float32)]
    )
    ref = cm.Sequential([cm.layers.Dense(16, activation="relu"), cm.layers.Dense(3)], input_dim=5)
    ref.set_weights(tail.get_weights())
    np.testing.assert_array_equal(tail.predict(x), ref.predict(x))
    buf = np.full((60, 3), np.nan, np.float32)
    np.testing.assert_array_equal(tail.predict(x, out=buf), ref.predict(x))


@pytest.mark.parametrize("rate", [0.25, 0.5])
def test_dropout_mask_in_training(rate):
    """[Dropout(rate), Dense(1)] with a zero kernel, one row of ones, target 1, mse and
    SGD: the kernel gradient is -2 mask_j / (1 - rate), so after one step the kernel *is*
    the scaled mask: zeros where dropped, lr * 2 / (1 - rate) where kept."""
    d = 20000
    model = cm.Sequential(
        [cm.layers.Dropout(rate), cm.layers.Dense(1, kernel_initializer="zeros")], input_dim=d, seed=21
    )
    lr = 0.125
    model.compile(optimizer=cm.optimizers.SGD(lr), loss="mse")
    model.fit(np.ones((1, d), np.float32), np.ones((1, 1), np.float32), epochs=1, batch_size=1, verbose=0)
    kernel, bias = model.get_weights()
    assert kernel.shape == (d, 1) and kernel.dtype == np.float32
    k = kernel[:, 0].astype(np.float64)
    dropped = k == 0.0
    # binomial(d, rate): sd = sqrt(rate (1 - rate) / d) <= 0.0036; 5 sigma
    assert abs(dropped.mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / d)
    # kept: 1 / (1 - rate) scaling, then x 2 (mse) x lr; four float32 roundings
    np.testing.assert_allclose(k[~dropped], lr * 2.0 / (1.0 - rate), rtol=8 * U32)
    np.testing.assert_allclose(bias, [lr * 2.0], rtol=4 * U32)  # the bias sees no dropout


def test_dropout_backward_uses_the_forward_mask(device):
    """Dense(64, identity) -> Dropout(0.5) -> Dense(3), one sample, one SGD step with
    lr = 1. The second kernel's gradient row j is h_j m_j / (1 - rate) dz, so its zero
    rows show the forward mask m; the first kernel's gradient must then be
    x^T (dz W2^T * m / (1 - rate)): the backward pass applies the same mask, scaled."""
    rate = 0.5
    rng = np.random.default_rng(22)
    model = cm.Sequential(
        [cm.layers.Dense(64), cm.layers.Dropout(rate), cm.layers.Dense(3)], input_dim=6, seed=4, device=device
    )
    random_biases(model, rng)
    model.compile(optimizer=cm.optimizers.SGD(1.0), loss="softmax_cross_entropy")
    x = rng.standard_normal((1, 6)).astype(np.float32)
    y = np.array([1], np.int32)
    w1, b1, w2, b2 = (w.astype(np.float64) for w in model.get_weights())
    model.fit(x, y, epochs=1, batch_size=1, verbose=0)
    n1, nb1, n2, nb2 = (w.astype(np.float64) for w in model.get_weights())
    dw2 = w2 - n2
    kept = np.abs(dw2).max(axis=1) > 0
    # 64 units, binomial(64, 0.5): sd 4, so 10..54 kept is a 5.5-sigma band
    assert 10 <= kept.sum() <= 54, kept.sum()
    h = x.astype(np.float64) @ w1 + b1
    hd = h * kept / (1.0 - rate)
    z = hd @ w2 + b2
    g = softmax64(z)
    g[0, 1] -= 1.0
    dh = (g @ w2.T) * kept / (1.0 - rate)
    want = [x.T.astype(np.float64) @ dh, dh[0], hd.T @ g, g[0]]
    got = [w1 - n1, b1 - nb1, dw2, b2 - nb2]
    for name, a, b in zip(("kernel 0", "bias 0", "kernel 1", "bias 1"), got, want):
        # one row: sums of at most 64 products of O(1) values, then p - lr g rounding
        # (2**-24 of |p| <= 3): 1e-5 absolute is far above both, far below the gradients
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5, err_msg=name)
    assert np.abs(want[0]).max() > 0.1


def test_dropout_zero_rate_trains_like_no_dropout():
    """Dropout(0.0) is accepted and must be the identity in training too: the dense
    layer after it must see (and take its gradient from) the previous layer's output."""
    x, y = step_data("softmax_cross_entropy")
    plain = make_model(seed=3)
    zero = cm.Sequential(
        [cm.layers.Dense(7, activation="relu"), cm.layers.Dropout(0.0), cm.layers.Dense(3)], input_dim=5, seed=3
    )
    zero.set_weights(plain.get_weights())
    for m in (plain, zero):
        m.compile(optimizer=cm.optimizers.SGD(0.5), loss="softmax_cross_entropy")
        m.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    for i, (a, b) in enumerate(zip(zero.get_weights(), plain.get_weights())):
        np.testing.assert_array_equal(a, b, err_msg=f"weight {i} after one SGD step with Dropout(0.0)")


@pytest.mark.parametrize("rows", [2, 128])
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_fused_dropout_draws_the_cpus_mask(rows, precision):
    """On CUDA a Dense -> Dropout -> Dense step applies the mask in the dense layers'
    epilogues (the forward output and the backward dx: no dropout launch), by element
    index as dropout_kernel. Small integers, an output of 4, a power-of-two batch and
    SGD's lr 2^-6 make every value of the step exact (mse's gradient a multiple of 2^-8,
    the kept units doubled, every operand exact in tf32 and bf16 too), so the step on
    "cuda-emulated" equals the CPU's float32 step bit for bit whatever the summation
    order or precision: an element whose mask differed (index, stream) would show. Rows 2
    take the GEMV (fp32), 128 the README batch; 96 units end in half a tile."""
    rng = np.random.default_rng(5)
    x = rng.integers(-1, 2, (rows, 12)).astype(np.float32)
    y = rng.integers(-3, 4, (rows, 4)).astype(np.float32)
    weights = [
        rng.integers(-1, 2, (12, 96)).astype(np.float32),
        rng.integers(-1, 2, 96).astype(np.float32),
        rng.integers(-1, 2, (96, 4)).astype(np.float32),
        rng.integers(-1, 2, 4).astype(np.float32),
    ]
    got = {}
    for device in ("cpu", "cuda-emulated"):
        model = cm.Sequential(
            [cm.layers.Dense(96, activation="relu"), cm.layers.Dropout(0.5), cm.layers.Dense(4)],
            input_dim=12, seed=8, device=device,
        )  # fmt: skip
        model.set_weights(weights)
        model.compile(
            optimizer=cm.optimizers.SGD(2.0**-6), loss="mse", precision="fp32" if device == "cpu" else precision
        )
        model.fit(x, y, epochs=1, batch_size=rows, verbose=0)
        got[device] = model.get_weights()
    for i, (a, b) in enumerate(zip(got["cpu"], got["cuda-emulated"])):
        np.testing.assert_array_equal(a, b, err_msg=f"weight {i}")
        assert (a != weights[i]).any()
