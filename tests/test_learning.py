"""Models learn real data: digits, breast cancer (binary) and a noiseless linear map, each to
a bar far from chance and below what the model reaches."""

from __future__ import annotations

import time

import numpy as np
import pytest

import customml as cm


@pytest.mark.timing  # the fit must take under 10 s
def test_learns_digits():
    (x_train, y_train), (x_test, y_test) = cm.datasets.load("digits")
    model = cm.Sequential(
        [cm.layers.Dense(64, activation="relu"), cm.layers.Dropout(0.1), cm.layers.Dense(10)], input_dim=64, seed=0
    )
    model.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy", metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=8, batch_size=32, verbose=0)
    assert time.perf_counter() - start < 10.0
    assert history.history["loss"][-1] < history.history["loss"][0]
    result = model.evaluate(x_test, y_test)
    # chance is 0.1; this network reaches ~0.97, 0.9 leaves a wide margin for seeds
    assert result["accuracy"] >= 0.9, result


def test_learns_breast_cancer_binary():
    (x_train, y_train), (x_test, y_test) = cm.datasets.load("breast_cancer")
    model = cm.Sequential([cm.layers.Dense(16, activation="relu"), cm.layers.Dense(1)], input_dim=30, seed=0)
    model.compile(optimizer=cm.optimizers.Adam(1e-2), loss="binary_cross_entropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=30, batch_size=32, verbose=0)
    result = model.evaluate(x_test, y_test)
    assert result["accuracy"] >= 0.9, result  # majority class is 0.63; this reaches ~0.97
    p = model.predict_proba(x_test)[:, 0]
    assert float(((p > 0.5) == (y_test == 1)).mean()) == result["accuracy"]


def test_regression_learns_a_linear_map():
    rng = np.random.default_rng(18)
    x = rng.standard_normal((512, 4)).astype(np.float32)
    w = np.array([1.0, -2.0, 0.5, 3.0])
    y = (x @ w + 0.5).astype(np.float32)  # 1-D targets for one output
    model = cm.Sequential([cm.layers.Dense(1)], input_dim=4, seed=0)
    model.compile(optimizer=cm.optimizers.Adam(5e-2), loss="mse")
    model.fit(x, y, epochs=60, batch_size=64, verbose=0)
    kernel, bias = model.get_weights()
    # noiseless linear data, convex loss: Adam gets within a few 1e-3 of the solution
    np.testing.assert_allclose(kernel[:, 0], w, atol=0.05)
    np.testing.assert_allclose(bias, [0.5], atol=0.05)
    assert model.evaluate(x, y)["loss"] < 1e-3
