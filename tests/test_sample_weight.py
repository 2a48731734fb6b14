"""fit(sample_weight=) end to end on every device and for every loss: a batch's loss is
sum_i w_i l_i / sum_i w_i (w_i = sample weight x class weight), so integer weights act
as repeated rows and zero weights as absent rows."""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm

LOSSES = ("softmax_cross_entropy", "binary_cross_entropy", "mse")
# float32 training over a few full-batch steps: the weighted and the repeated runs add
# the same terms in different orders (float64 sums, float32 GEMMs over different row
# counts), so parameters agree to a few float32 roundings amplified by a few steps.
RTOL, ATOL = 2e-5, 2e-6


def _data(loss, n=24, features=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    if loss == "mse":
        y = rng.normal(size=(n, 2)).astype(np.float32)
    else:
        y = rng.integers(0, 2 if loss == "binary_cross_entropy" else 3, n).astype(np.int32)
    return x, y


def _model(loss, device, features=5, class_weights=None):
    out = {"softmax_cross_entropy": 3, "binary_cross_entropy": 1, "mse": 2}[loss]
    model = cm.Sequential(
        [cm.layers.Dense(7, activation="tanh"), cm.layers.Dense(out)], input_dim=features, device=device, seed=3
    )
    lossobj = cm.losses.SoftmaxCrossEntropy(class_weights=class_weights) if class_weights is not None else loss
    model.compile(optimizer=cm.optimizers.SGD(0.1), loss=lossobj)
    return model


def _fit_full_batch(model, x, y, **kw):
    model.fit(x, y, epochs=3, batch_size=x.shape[0], shuffle=False, verbose=0, **kw)
    return model.get_weights()


def _close(a, b):
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("loss", LOSSES)
def test_integer_weights_equal_repeated_rows(device, loss):
    x, y = _data(loss)
    w = np.random.default_rng(1).integers(1, 4, x.shape[0]).astype(np.float32)
    weighted = _fit_full_batch(_model(loss, device), x, y, sample_weight=w)
    rep = np.repeat(np.arange(x.shape[0]), w.astype(int))
    repeated = _fit_full_batch(_model(loss, device), x[rep], y[rep])
    _close(weighted, repeated)


@pytest.mark.parametrize("loss", LOSSES)
def test_zero_weights_remove_rows(device, loss):
    x, y = _data(loss)
    keep = np.arange(x.shape[0]) % 3 != 0
    w = keep.astype(np.float32)
    # The rows that weigh nothing get other targets: they must not matter.
    y_noisy = y.copy()
    y_noisy[~keep] = (y[~keep] + 1) % 2 if loss != "mse" else 1e3
    weighted = _fit_full_batch(_model(loss, device), x, y_noisy, sample_weight=w)
    subset = _fit_full_batch(_model(loss, device), x[keep], y[keep])
    _close(weighted, subset)


@pytest.mark.parametrize("loss", LOSSES)
def test_only_ratios_matter(device, loss):
    # Scaling every weight by a power of two is exact: the same bits.
    x, y = _data(loss)
    w = np.random.default_rng(2).uniform(0.1, 2.0, x.shape[0]).astype(np.float32)
    a = _fit_full_batch(_model(loss, device), x, y, sample_weight=w)
    b = _fit_full_batch(_model(loss, device), x, y, sample_weight=8 * w)
    for u, v in zip(a, b):
        assert np.array_equal(u, v)


def test_combines_with_class_weights(device):
    loss = "softmax_cross_entropy"
    x, y = _data(loss)
    cw = np.array([0.5, 2.0, 1.0], np.float32)
    sw = np.random.default_rng(4).uniform(0.1, 2.0, x.shape[0]).astype(np.float32)
    both = _fit_full_batch(_model(loss, device, class_weights=cw), x, y, sample_weight=sw)
    product = _fit_full_batch(_model(loss, device), x, y, sample_weight=cw[y] * sw)
    _close(both, product)


def test_mini_batches_and_reported_loss(device):
    # Mini-batches with a shuffle: trains, and equals the unweighted run for unit weights
    # (up to the weighted path's rounding of the gradient scale).
    x, y = _data("mse", n=50)
    a = _model("mse", device)
    ha = a.fit(x, y, epochs=2, batch_size=16, verbose=0, sample_weight=np.ones(50, np.float32))
    b = _model("mse", device)
    hb = b.fit(x, y, epochs=2, batch_size=16, verbose=0)
    _close(a.get_weights(), b.get_weights())
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-5)


def test_validation_split_drops_the_validation_weights():
    x, y = _data("softmax_cross_entropy", n=40)
    w = np.ones(40, np.float32)
    w[-10:] = -1.0  # checked as a whole before the split
    model = _model("softmax_cross_entropy", "cpu")
    with pytest.raises(ValueError, match=r"\[fit\] sample_weight must be >= 0"):
        model.fit(x, y, sample_weight=w, validation_split=0.25, verbose=0)
    w[-10:] = 5.0
    history = model.fit(x, y, sample_weight=w, validation_split=0.25, verbose=0)
    assert "val_loss" in history.history


BAD = {
    "wrong length": (np.ones(23, np.float32), ValueError, r"\[fit\] sample_weight has shape \(23,\), expected \(24,\)"),
    "2-D": (np.ones((24, 2), np.float32), ValueError, r"\[fit\] sample_weight has shape"),
    "negative": (np.r_[np.ones(23), -1.0], ValueError, r"\[fit\] sample_weight must be >= 0, got -1.0 at index 23"),
    "NaN": (np.r_[np.nan, np.ones(23)], ValueError, r"\[fit\] sample_weight contains NaN or inf"),
    "strings": (np.array(["a"] * 24), TypeError, r"\[fit\] sample_weight must be numeric"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_sample_weight(case):
    w, exc, match = BAD[case]
    x, y = _data("softmax_cross_entropy")
    model = _model("softmax_cross_entropy", "cpu")
    before = model.get_weights()
    with pytest.raises(exc, match=match):
        model.fit(x, y, sample_weight=w, verbose=0)
    for u, v in zip(before, model.get_weights()):
        assert np.array_equal(u, v)


def test_executor_checks_each_batch():
    # The executor does not trust its caller: a negative weight in the batch is refused
    # before any update.
    x, y = _data("softmax_cross_entropy")
    model = _model("softmax_cross_entropy", "cpu")
    w = np.ones(24, np.float32)
    w[5] = -2.0
    with pytest.raises(ValueError, match=r"\[fit\] sample_weight\[5\] = -2.0+ must be finite and >= 0"):
        model._net.train_batch(x, y, np.arange(8, dtype=np.int64), w)
    with pytest.raises(ValueError, match=r"\[fit\] sample_weight has shape \(3,\)"):
        model._net.train_batch(x, y, np.arange(8, dtype=np.int64), np.ones(3, np.float32))
    with pytest.raises(TypeError, match=r"\[fit\] sample_weight must be float32"):
        model._net.train_batch(x, y, np.arange(8, dtype=np.int64), np.ones(24))
    assert model._net.step == 0
