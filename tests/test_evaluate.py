"""evaluate's loss and accuracy against NumPy on the logits predict gives, for every loss,
on every device."""

from __future__ import annotations

import numpy as np

from model_reference import log_softmax64, make_model
from support import U32


def test_evaluate_matches_numpy_from_predict(device):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((301, 12)).astype(np.float32)
    y = rng.integers(0, 4, 301).astype(np.int32)
    model = make_model(widths=(20, 4), input_dim=12, seed=5, device=device)
    model.compile("adam", metrics=["accuracy"])
    model.fit(x, y, epochs=2, verbose=0)
    result = model.evaluate(x, y)
    assert set(result) == {"loss", "accuracy"}
    assert all(isinstance(v, float) for v in result.values())
    logits = model.predict(x)
    want_loss = float(-log_softmax64(logits)[np.arange(301), y].mean())
    want_acc = float((np.argmax(logits, axis=1) == y).mean())
    # Same logits (evaluate runs the same forward); the loss kernel takes exp in float32
    # (1 ulp each) and sums in float64, so the mean differs by a few ulp of float32.
    assert abs(result["loss"] - want_loss) <= 8 * U32 * max(1.0, want_loss)
    assert result["accuracy"] == want_acc
    # batch size only changes how the float64 sum is grouped
    small = model.evaluate(x, y, batch_size=7)
    assert small["accuracy"] == result["accuracy"]
    assert abs(small["loss"] - result["loss"]) <= 1e-12 * result["loss"]


def test_evaluate_binary_and_mse(device):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((50, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = make_model(widths=(8, 1), input_dim=4, seed=2, device=device)
    model.compile("adam", loss="binary_cross_entropy", metrics=["accuracy"])
    result = model.evaluate(x, y)
    z = model.predict(x).astype(np.float64)[:, 0]
    want = np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
    assert set(result) == {"loss", "accuracy"}
    # The kernel's max(z, 0) - z t is float64 on float32 logits; its log1p(exp(-|z|))
    # is float32 (cpp/cpu/vmath.h) within 6u of the term (argued in
    # tests/test_binary_cross_entropy.py), plus the float64 summation order.
    log_term = np.log1p(np.exp(-np.abs(z)))
    assert abs(result["loss"] - want) <= 6 * U32 * log_term.mean() + 1e-12 * max(1.0, want)
    assert result["accuracy"] == float(((z > 0) == (y == 1)).mean())

    t = rng.standard_normal((50, 2)).astype(np.float32)
    reg = make_model(widths=(8, 2), input_dim=4, seed=2, device=device)
    reg.compile("sgd", loss="mse")
    result = reg.evaluate(x, t)
    assert set(result) == {"loss"}
    want = np.mean((reg.predict(x).astype(np.float64) - t) ** 2)
    # the executor rounds each difference to float32 (u relative), then squares and sums
    # in float64: the mean is off by at most 2u relative
    assert abs(result["loss"] - want) <= 2 * U32 * want
