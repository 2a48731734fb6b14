"""predict and predict_proba: the forward pass against NumPy for every activation on every
device, shapes, dtypes and out=, the fast path and its fallbacks, no allocation with out=,
probabilities, and results independent of the batch split."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import customml as cm
from model_reference import forward_bound, make_model, random_biases, sigmoid64, softmax64
from support import U32


@pytest.mark.parametrize("act", ["identity", "relu", "sigmoid", "tanh", "gelu"])
def test_predict_matches_numpy_forward(act, device):
    rng = np.random.default_rng(4)
    model = make_model(widths=(33, 4), acts=(act, None), input_dim=17, seed=1, device=device)
    random_biases(model, rng)
    x = rng.standard_normal((29, 17)).astype(np.float32)
    got = model.predict(x)
    assert got.shape == (29, 4) and got.dtype == np.float32
    ws = model.get_weights()
    want, a_out = forward_bound(x, [(ws[0], ws[1]), (ws[2], ws[3])], [act, None])
    # The same running-error bound as the step checks (tests/model_reference.py): the
    # absolute evaluation A of each output, times gamma_N with N = 17 + 33 roundings
    # of the two dot products plus 10 for the bias additions and the activation.
    np.testing.assert_array_less(np.abs(got - want), 60 * U32 * a_out)
    assert np.abs(want).max() > 0.5  # the outputs are not all tiny


def test_predict_shape_dtype_and_out():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((37, 5)).astype(np.float32)
    model = make_model()
    got = model.predict(x)
    assert isinstance(got, np.ndarray) and got.shape == (37, 3) and got.dtype == np.float32
    assert got.flags.c_contiguous and np.isfinite(got).all()
    buf = np.full((37, 3), np.nan, np.float32)
    ret = model.predict(x, out=buf)
    assert ret is buf
    np.testing.assert_array_equal(buf, got)
    # a float64 x is converted; the output still lands in buf
    buf[:] = np.nan
    assert model.predict(x.astype(np.float64), out=buf) is buf
    np.testing.assert_array_equal(buf, got)
    # lists work
    np.testing.assert_array_equal(model.predict(x[:2].tolist()), got[:2])


def test_predict_fast_path_output_and_fallbacks():
    """The executor takes float32 C-contiguous 2-D x as it is and allocates the output
    itself; every other x goes through the checked path, with the same result."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal((9, 5)).astype(np.float32)
    model = make_model()
    got = model.predict(x)
    assert type(got) is np.ndarray and got.shape == (9, 3) and got.dtype == np.float32
    assert got.flags.c_contiguous and got.flags.writeable and got.flags.owndata
    assert not np.shares_memory(got, x)
    again = model.predict(x)
    assert again is not got and not np.shares_memory(again, got)
    np.testing.assert_array_equal(again, got)
    # one row, and a contiguous slice of rows, take the fast path too
    np.testing.assert_array_equal(model.predict(x[4:5]), got[4:5])
    np.testing.assert_array_equal(model.predict(x[2:6]), got[2:6])
    # float32 under another dtype object, big-endian, strided, Fortran order, float64:
    # the checked path, the same values
    meta = x.astype(np.dtype(np.float32, metadata={"unit": "m"}))
    assert meta.dtype is not np.dtype(np.float32)
    for other in (meta, x.astype(">f4"), np.repeat(x, 2, axis=0)[::2], np.asfortranarray(x), x.astype(np.float64)):
        np.testing.assert_array_equal(model.predict(other), got)
        buf = np.full((9, 3), np.nan, np.float32)
        assert model.predict(other, out=buf) is buf
        np.testing.assert_array_equal(buf, got)
    # an out float32 under another dtype object is accepted, through the checked path
    out_meta = np.full((9, 3), np.nan, np.dtype(np.float32, metadata={"unit": "m"}))
    assert model.predict(x, out=out_meta) is out_meta
    np.testing.assert_array_equal(out_meta, got)


def test_try_predict_declines_without_touching_out():
    model = make_model()
    x = np.random.default_rng(15).standard_normal((4, 5)).astype(np.float32)
    net = model._net
    out = np.full((4, 3), np.nan, np.float32)
    for other in (x.tolist(), x.astype(np.float64), np.asfortranarray(x), x[0], x[:0], x.astype(">f4")):
        assert net.try_predict(other, out, 1024) is None
    assert net.try_predict(x, [[0.0] * 3] * 4, 1024) is None
    assert np.isnan(out).all()
    # taken: into out, or a new array when out is None
    assert net.try_predict(x, out, 1024) is out
    np.testing.assert_array_equal(net.try_predict(x, None, 1024), out)
    # the checked entry allocates too, and takes what try_predict declines
    np.testing.assert_array_equal(net.predict(x, None, 1024), out)
    np.testing.assert_array_equal(net.predict(x.astype(np.dtype(np.float32, metadata={"u": 1})), None, 1024), out)
    with pytest.raises(TypeError, match=r"\[predict\] x must be float32, got float64"):
        net.predict(x.astype(np.float64), None, 1024)
    # errors of arrays the fast path recognises come from the checked path, unchanged
    with pytest.raises(ValueError, match=r"\[predict\] x has 4 features but the model expects 5"):
        net.try_predict(x[:, :4].copy(), None, 1024)
    with pytest.raises(ValueError, match=r"out has shape \(4, 2\)"):
        net.try_predict(x, np.empty((4, 2), np.float32), 1024)
    with pytest.raises(ValueError, match=r"batch_size must be >= 1"):
        net.try_predict(x, None, 0)


def test_predict_out_allocates_nothing():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((4000, 32)).astype(np.float32)
    model = make_model(widths=(64, 50), acts=("relu", None), input_dim=32)
    out = np.empty((4000, 50), np.float32)
    model.predict(x, out=out)  # warm-up: workspace pool, packing buffers
    model.predict(x)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        model.predict(x)
        _, peak_alloc = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        model.predict(x, out=out)
        _, peak_out = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the measurement sees NumPy's allocations: without out= the 800 kB result shows
    assert peak_alloc >= out.nbytes
    # with out=, nothing close to an output array (a few hundred bytes of Python objects)
    assert peak_out < out.nbytes // 100, f"predict(out=) allocated {peak_out} bytes"


def test_predict_proba_softmax(device):
    rng = np.random.default_rng(14)
    x = rng.standard_normal((40, 5)).astype(np.float32)
    model = make_model(device=device)
    model.compile("adam")
    p = model.predict_proba(x)
    assert p.shape == (40, 3) and p.dtype == np.float32
    # float32 softmax: each entry within a few ulp of the float64 softmax of the same logits
    want = softmax64(model.predict(x))
    np.testing.assert_allclose(p, want, rtol=8 * U32, atol=8 * U32)
    # rows sum to 1 up to 3 float32 roundings of terms <= 1
    np.testing.assert_allclose(p.astype(np.float64).sum(axis=1), 1.0, rtol=0, atol=8 * U32)
    # huge logits: no overflow (warnings are errors here), probabilities stay in [0, 1]
    ws = model.get_weights()
    model.set_weights([ws[0] * 1e4, ws[1], ws[2] * 1e4, ws[3]])
    p = model.predict_proba(x)
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()


def test_predict_proba_binary_is_sigmoid(device):
    rng = np.random.default_rng(15)
    x = rng.standard_normal((40, 5)).astype(np.float32)
    model = make_model(widths=(7, 1), device=device)
    model.compile("adam", loss="binary_cross_entropy")
    p = model.predict_proba(x)
    assert p.shape == (40, 1) and p.dtype == np.float32
    np.testing.assert_allclose(p, sigmoid64(model.predict(x)), rtol=4 * U32, atol=0)
    ws = model.get_weights()
    model.set_weights([ws[0] * 1e5, ws[1], ws[2] * 1e5, ws[3]])  # logits of +-1e6: no overflow
    p = model.predict_proba(x)
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    reg = make_model(device=device)
    reg.compile("adam", loss="mse")
    with pytest.raises(ValueError, match="classification"):
        reg.predict_proba(x)


def test_predict_is_batch_invariant(isa):
    """predict(x)[i] == predict(x[i:i+1])[0] bit for bit: GEMMs of fewer than MR rows take
    the small-m path, larger ones the tiled microkernel; depth 300 and 1030 cross
    KC = 256, width 1030 crosses NC = 1024, 130 rows cross MC = 120."""
    rng = np.random.default_rng(16)
    model = cm.Sequential(
        [cm.layers.Dense(1030, activation="gelu"), cm.layers.Dense(40, activation="relu"), cm.layers.Dense(10)],
        input_dim=300,
        seed=1,
    )
    random_biases(model, rng, scale=0.1)
    x = rng.standard_normal((130, 300)).astype(np.float32)
    full = model.predict(x)
    assert full.shape == (130, 10) and full.dtype == np.float32
    for i in range(130):
        np.testing.assert_array_equal(model.predict(x[i : i + 1])[0], full[i], err_msg=f"row {i} alone")
    for b in (2, 3, 4, 5, 6, 7, 11, 12, 13, 25, 121):
        np.testing.assert_array_equal(model.predict(x[:b]), full[:b], err_msg=f"first {b} rows")
        np.testing.assert_array_equal(model.predict(x[-b:]), full[-b:], err_msg=f"last {b} rows")
    for bs in (1, 3, 4, 5, 64):
        np.testing.assert_array_equal(model.predict(x, batch_size=bs), full, err_msg=f"batch_size {bs}")
