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
    # results must be the same bits (batches below MR take the small-m path, which reads the
    # packed panels in place; the unpacked call reads W row-major).
    model = _mlp()
    x = np.random.default_rng(1).standard_normal((batch, 37)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x), _chain(model, x))


@pytest.mark.parametrize("batch", [1, 3, 13])
def test_alternating_column_order_changes_no_bits(isa, batch):
    # Planned passes alternate the order in which the small-m path visits a packed layer's
    # column blocks (odd passes last to first, for the L2): every pass must give the same
    # bits. Widths 300 and 129 have whole blocks and a remainder at every ISA level; 13
    # rows are a tiled block plus one small-m row.
    model = _mlp(widths=(300, 129, 10))
    x = np.random.default_rng(5).standard_normal((batch, 37)).astype(np.float32)
    first = model.predict(x)
    for _ in range(3):
        np.testing.assert_array_equal(model.predict(x), first)
    np.testing.assert_array_equal(first, _chain(model, x))


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


def _normalized(mean, std, seed=4):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((50, 37)) * std + mean).astype(np.float32)
    norm = cm.layers.Normalization()
    norm.adapt(x)
    model = cm.Sequential([norm, cm.layers.Dense(65, activation="relu"), cm.layers.Dense(10)], input_dim=37, seed=5)
    scale, shift = norm._affine(37)
    return model, x, x * scale + shift


def test_normalization_is_folded_into_the_first_dense_layer():
    # Inputs near unit range (pixels in [0, 1] here: mean 0.4, std 0.3): the plan folds the
    # normalization into the first kernel, so predict skips the preprocessing pass. The
    # folded sum rounds differently: each product x s w is at most a few times as large as
    # (x s + t) w when |t| <= 8, so the difference is a few float32 ulps of the row's
    # sum of |terms|, bounded here by 1e-5 relative to the largest output.
    model, x, xn = _normalized(0.4, 0.3)
    plain = cm.Sequential([cm.layers.Dense(65, activation="relu"), cm.layers.Dense(10)], input_dim=37, seed=5)
    unfolded = _chain(plain, xn)
    got = model.predict(x)
    assert not np.array_equal(got, unfolded), "expected the folded rounding, not the two-pass result"
    np.testing.assert_allclose(got, unfolded, rtol=0, atol=1e-5 * np.abs(unfolded).max())


def test_normalization_far_from_zero_is_not_folded():
    # A feature whose mean is 100 standard deviations from 0 would cancel catastrophically in
    # the folded sum: the plan keeps the preprocessing pass, and predict is the two-pass
    # result bit for bit.
    model, x, xn = _normalized(1000.0, 10.0)
    plain = cm.Sequential([cm.layers.Dense(65, activation="relu"), cm.layers.Dense(10)], input_dim=37, seed=5)
    np.testing.assert_array_equal(model.predict(x), _chain(plain, xn))
