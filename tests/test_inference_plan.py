"""The executor's inference plan (DESIGN decision 10): Dense weights pre-packed once for
the CPU GEMM, dropped and rebuilt after every weight change, and predictions that do not
depend on whether the packed copy or the weights themselves are read."""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm
from customml import _core, ops
from support import ISA_ORDER, active_isa


def _mlp(input_dim=37, widths=(65, 33, 10), seed=0, device="cpu") -> cm.Sequential:
    layers = [cm.layers.Dense(w, activation="relu") for w in widths[:-1]] + [cm.layers.Dense(widths[-1])]
    return cm.Sequential(layers, input_dim=input_dim, device=device, seed=seed)


def _chain(model: cm.Sequential, x: np.ndarray) -> np.ndarray:
    """The same layers through ops.dense_forward, which packs B on every call."""
    for layer in model.layers:
        w, b = layer.get_weights()
        x = ops.dense_forward(x, w, b, activation=layer.activation)
    return x


@pytest.mark.parametrize("batch", [1, 4, 5, 12, 13, 130])
def test_packed_predict_is_bit_identical_to_the_unpacked_gemm(batch):
    # Pre-packing changes where the microkernel reads B from, not the sum order: the
    # results must be the same bits (batches <= 4 take the row path, which never packs).
    model = _mlp()
    x = np.random.default_rng(1).standard_normal((batch, 37)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x), _chain(model, x))


def test_plan_follows_weight_changes():
    model = _mlp()
    x = np.random.default_rng(2).standard_normal((40, 37)).astype(np.float32)
    model._net.prepare()
    first = model.predict(x)
    w, b = model.layers[1].get_weights()
    model.layers[1].set_weights([w * 2.0, b + 1.0])
    np.testing.assert_array_equal(model.predict(x), _chain(model, x))
    assert not np.array_equal(model.predict(x), first)
    model.compile(optimizer=cm.optimizers.SGD(0.1), loss="softmax_cross_entropy")
    model.fit(x, np.arange(40, dtype=np.int32) % 10, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(model.predict(x), _chain(model, x))


def test_packed_for_one_isa_and_run_under_another():
    # The packed panel width belongs to the variant that packed it; under a ceiling with a
    # different microkernel the executor must read the weights instead, never misread.
    model = _mlp()
    x = np.random.default_rng(3).standard_normal((64, 37)).astype(np.float32)
    original = active_isa()
    try:
        model._net.prepare()
        for level in ISA_ORDER:
            if ISA_ORDER.index(_core._set_isa(level)) < ISA_ORDER.index(level):
                continue
            np.testing.assert_array_equal(model.predict(x), _chain(model, x))
    finally:
        _core._set_isa(original)
