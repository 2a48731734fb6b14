"""Reproducibility: the same seed gives bit-identical weights (initialization, shuffling
and dropout masks) for the same ISA level and thread count; other seeds differ; a
seed given to fit overrides the model's seed for shuffling and dropout.

Every comparison here is bit for bit (``tobytes``): the guarantee is exact identity,
not closeness, so no tolerance applies.
"""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm


def _data(n=203, d=12, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int32)
    return x, y


def _model(seed, dropout=0.3) -> cm.Sequential:
    layers = [cm.layers.Dense(32, activation="relu")]
    if dropout:
        layers.append(cm.layers.Dropout(dropout))
    layers += [cm.layers.Dense(16, activation="gelu")]
    if dropout:
        layers.append(cm.layers.Dropout(dropout))
    layers.append(cm.layers.Dense(4))
    model = cm.Sequential(layers, input_dim=12, seed=seed)
    model.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy", metrics=["accuracy"])
    return model


def _bits(model) -> list:
    return [w.tobytes() for w in model.get_weights()]


def _same(a, b) -> bool:
    return _bits(a) == _bits(b)


def test_same_seed_same_initial_weights():
    a, b = _model(7), _model(7)
    ws = a.get_weights()
    assert [w.shape for w in ws] == [(12, 32), (32,), (32, 16), (16,), (16, 4), (4,)]
    assert all(w.dtype == np.float32 for w in ws)
    assert _same(a, b)
    assert not _same(a, _model(8))
    # kernels differ everywhere, not in one corner
    for wa, wc in zip(a.get_weights()[::2], _model(8).get_weights()[::2]):
        assert (wa != wc).mean() > 0.99


def test_unseeded_models_differ():
    a = cm.Sequential([cm.layers.Dense(16)], input_dim=8)
    b = cm.Sequential([cm.layers.Dense(16)], input_dim=8)
    assert a.seed != b.seed
    assert not _same(a, b)
    # the drawn seed reproduces the model
    assert _same(a, cm.Sequential([cm.layers.Dense(16)], input_dim=8, seed=a.seed))


def test_same_seed_bit_identical_after_fit(isa):
    """Dropout, shuffling and validation_split: two runs agree bit for bit."""
    x, y = _data()
    runs = []
    for _ in range(2):
        model = _model(123)
        history = model.fit(x, y, epochs=3, batch_size=16, shuffle=True, validation_split=0.1, verbose=0)
        runs.append((model, history.history, model.predict(x)))
    (a, ha, pa), (b, hb, pb) = runs
    assert _same(a, b)
    assert ha == hb
    assert pa.tobytes() == pb.tobytes()


def test_different_seeds_differ_after_fit():
    x, y = _data()
    a, b = _model(1), _model(2)
    b.set_weights(a.get_weights())  # only the seeds for shuffling and dropout differ now
    for m in (a, b):
        m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert not _same(a, b)


def test_fit_seed_overrides_the_model_seed():
    x, y = _data()
    a, b, c = _model(5), _model(6), _model(5)
    b.set_weights(a.get_weights())
    a.fit(x, y, epochs=2, batch_size=16, seed=42, verbose=0)
    b.fit(x, y, epochs=2, batch_size=16, seed=42, verbose=0)
    c.fit(x, y, epochs=2, batch_size=16, seed=43, verbose=0)
    assert _same(a, b), "fit(seed=42) must not depend on the model's seed"
    assert not _same(a, c)
    with pytest.raises(ValueError, match="seed"):
        a.fit(x, y, epochs=1, seed=-1, verbose=0)


def test_fit_seed_drives_dropout_alone():
    """shuffle=False: only the dropout masks depend on the seed."""
    x, y = _data()
    a, b, c = _model(5), _model(5), _model(5)
    a.fit(x, y, epochs=1, batch_size=16, shuffle=False, seed=1, verbose=0)
    b.fit(x, y, epochs=1, batch_size=16, shuffle=False, seed=1, verbose=0)
    c.fit(x, y, epochs=1, batch_size=16, shuffle=False, seed=2, verbose=0)
    assert _same(a, b)
    assert not _same(a, c)


def test_fit_seed_drives_shuffling_alone():
    """No dropout: only the shuffling depends on the seed; without shuffling the seed
    has no effect at all."""
    x, y = _data()
    a, b, c, d = (_model(5, dropout=0) for _ in range(4))
    a.fit(x, y, epochs=1, batch_size=16, seed=1, verbose=0)
    b.fit(x, y, epochs=1, batch_size=16, seed=2, verbose=0)
    c.fit(x, y, epochs=1, batch_size=16, shuffle=False, seed=1, verbose=0)
    d.fit(x, y, epochs=1, batch_size=16, shuffle=False, seed=2, verbose=0)
    assert not _same(a, b)
    assert _same(c, d)


def test_epochs_in_one_fit_equal_successive_fits_without_randomness():
    x, y = _data()
    a, b = _model(9, dropout=0), _model(9, dropout=0)
    a.fit(x, y, epochs=3, batch_size=32, shuffle=False, verbose=0)
    for _ in range(3):
        b.fit(x, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
    assert _same(a, b)


def test_predict_is_repeatable():
    x, _ = _data(n=333)
    model = _model(3)
    first = model.predict(x)
    for _ in range(3):
        assert model.predict(x).tobytes() == first.tobytes()


@pytest.mark.parametrize("amsgrad", [False, True])
def test_optimizer_updates_are_bit_identical_across_isa_levels(amsgrad):
    # The SGD and Adam kernels use no fused multiply-add and round every operation as
    # the portable loop does (docs/decisions.md), so every ISA level gives the same bits.
    from support import isa_available, use_isa

    rng = np.random.default_rng(5)
    n = 1037  # not a multiple of any vector width: the tails too
    p0, g0 = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    m0, v0 = rng.standard_normal(n).astype(np.float32), rng.random(n).astype(np.float32)
    results = {}
    for level in ("portable", "avx2", "avx512"):
        if not isa_available(level):
            continue
        with use_isa(level):
            p, m, v = p0.copy(), m0.copy(), v0.copy()
            vmax = v0.copy() * 1.5 if amsgrad else None
            cm.ops.adam_update(
                p,
                g0,
                m,
                v,
                vmax,
                lr=1e-3,
                step=3,
                weight_decay=0.01,
                decoupled=True,
                amsgrad=amsgrad,
                no_decay=[(100, 200)],
            )
            q, vel = p0.copy(), m0.copy()
            cm.ops.sgd_update(q, g0, vel, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
            results[level] = [a.tobytes() for a in (p, m, v, q, vel)]
    first = next(iter(results.values()))
    for level, got in results.items():
        assert got == first, level
