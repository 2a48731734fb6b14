"""layers.Normalization (adapt, Keras semantics) and layers.Rescaling: run by the executor
as its first step (feature_affine) on every device, saved in the model file, restored by
load and load_weights. (ONNX export: tests/test_onnx.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

import customml as cm
from support import U32


def _data(n=80, features=5, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, features)) * [1, 10, 0.01, 100, 3] + [0, 50, -3, 1e3, 7]).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    return x, y


def test_adapt_matches_numpy_and_keras_flooring():
    x, _ = _data()
    x[:, 2] = 4.0  # a constant feature: std floored at 1e-7, only centred
    norm = cm.layers.Normalization()
    assert not norm.adapted
    norm.adapt(x)
    np.testing.assert_array_equal(norm.mean, x.astype(np.float64).mean(axis=0))
    np.testing.assert_array_equal(norm.variance, x.astype(np.float64).var(axis=0))
    scale, shift = norm._affine(5)
    assert scale.dtype == np.float32 and scale[2] == np.float32(1e7)
    assert (x[:, 2] * scale[2] + shift[2] == 0).all()  # exactly 0, not a rounding residue


def test_normalized_training_equals_training_on_normalized_data(device):
    # The executor's affine rounds as NumPy's float32 x * scale + shift (a product, then
    # a sum), so the two runs see the same inputs and give the same bits.
    x, y = _data()
    norm = cm.layers.Normalization()
    norm.adapt(x)
    scale, shift = norm._affine(5)
    xn = x * scale + shift
    a = cm.Sequential(
        [norm, cm.layers.Dense(8, activation="relu"), cm.layers.Dense(2)], input_dim=5, device=device, seed=3
    )
    b = cm.Sequential([cm.layers.Dense(8, activation="relu"), cm.layers.Dense(2)], input_dim=5, device=device, seed=3)
    for m in (a, b):
        m.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy")
    a.fit(x, y, epochs=2, batch_size=16, verbose=0)
    b.fit(xn, y, epochs=2, batch_size=16, verbose=0)
    for u, v in zip(a.get_weights(), b.get_weights()):
        assert np.array_equal(u, v)
    assert np.array_equal(a.predict(x), b.predict(xn))
    assert a.evaluate(x, y) == b.evaluate(xn, y)


def test_rescaling_then_normalization_compose(device):
    x, _ = _data()
    norm = cm.layers.Normalization(mean=np.full(5, 0.5), variance=np.full(5, 4.0))
    model = cm.Sequential(
        [cm.layers.Rescaling(1 / 255, offset=-1.0), norm, cm.layers.Dense(3)], input_dim=5, device=device, seed=1
    )
    w, b = model.layers[2].get_weights()
    r = x * np.float32(1 / 255) + np.float32(-1.0)
    s, t = norm._affine(5)
    want = (r * s + t).astype(np.float64) @ w + b
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-5, atol=1e-5)


def test_adapt_after_build_updates_the_executor():
    x, _ = _data()
    model = cm.Sequential([cm.layers.Normalization(), cm.layers.Dense(3)], input_dim=5, seed=1)
    w, b = model.layers[1].get_weights()
    # Unadapted, the layer is the identity (x * 1 + 0 is exact), so predict is the Dense
    # layer's float32 sum of 5 products and the bias: at most 6 roundings on any term's
    # path, whatever the order or FMA, so within gamma_6 (|x| |w| + |b|) of the exact value
    # (Higham 3.1). Feature 3 (about 1000) makes that up to 3e-4 here; measured: 1.6 u A.
    exact = x.astype(np.float64) @ w.astype(np.float64) + b
    a = np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64) + np.abs(b)
    np.testing.assert_array_less(np.abs(model.predict(x) - exact), 6 * U32 / (1 - 6 * U32) * a)
    model.layers[0].adapt(x)
    z = (x - x.mean(0)) / x.std(0)
    np.testing.assert_allclose(model.predict(x), z @ w + b, rtol=1e-4, atol=1e-4)


def test_unadapted_normalization_refuses_fit():
    x, y = _data()
    model = cm.Sequential([cm.layers.Normalization(), cm.layers.Dense(2)], input_dim=5)
    model.compile(loss="softmax_cross_entropy")
    with pytest.raises(ValueError, match=r"\[fit\] Normalization layer 'normalization' is not adapted"):
        model.fit(x, y, verbose=0)


def test_order_and_argument_errors():
    with pytest.raises(ValueError, match="must come first"):
        cm.Sequential([cm.layers.Dense(3), cm.layers.Rescaling(2.0)])
    with pytest.raises(ValueError, match="both mean and variance"):
        cm.layers.Normalization(mean=[0.0])
    with pytest.raises(ValueError, match="variance finite and >= 0"):
        cm.layers.Normalization(mean=[0.0], variance=[-1.0])
    with pytest.raises(ValueError, match="finite number"):
        cm.layers.Rescaling(float("inf"))
    with pytest.raises(ValueError, match=r"\[adapt\] x must be a non-empty 2-D"):
        cm.layers.Normalization().adapt(np.zeros(3))
    norm = cm.layers.Normalization()
    norm.adapt(np.ones((4, 3)))
    with pytest.raises(ValueError, match="adapted to 3 features, the model has 5"):
        cm.Sequential([norm, cm.layers.Dense(2)], input_dim=5)
    built = cm.Sequential([cm.layers.Normalization(), cm.layers.Dense(2)], input_dim=5)
    with pytest.raises(ValueError, match="has 5 features, got statistics for 3"):
        built.layers[0].adapt(np.ones((4, 3)))


def test_saved_and_loaded_bit_exactly(tmp_path, device):
    x, y = _data()
    norm = cm.layers.Normalization()
    norm.adapt(x)
    model = cm.Sequential(
        [norm, cm.layers.Rescaling(0.5, offset=2.0), cm.layers.Dense(4, activation="tanh"), cm.layers.Dense(2)],
        input_dim=5,
        device=device,
        seed=4,
    )
    model.compile(loss="softmax_cross_entropy")
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "m.cml"
    model.save(path)
    raw = path.read_bytes()
    meta = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    assert meta["format_version"] == "3"
    loaded = cm.load(path, device=device)
    assert [type(layer).__name__ for layer in loaded.layers] == ["Normalization", "Rescaling", "Dense", "Dense"]
    np.testing.assert_array_equal(loaded.layers[0].mean, norm.mean)
    assert np.array_equal(loaded.predict(x), model.predict(x))
    # load_weights restores the statistics (Keras keeps them as the layer's weights).
    fresh = cm.Sequential(
        [
            cm.layers.Normalization(),
            cm.layers.Rescaling(0.5, offset=2.0),
            cm.layers.Dense(4, activation="tanh"),
            cm.layers.Dense(2),
        ],
        input_dim=5,
        device=device,
    )
    fresh.load_weights(path)
    assert np.array_equal(fresh.predict(x), model.predict(x))
