"""customml.prune and GradualPruning: masks that hold through training on every device,
exact magnitude / N:M / structured pruning, sparse inference equal to dense, compressed
model files that load back bit for bit, and clear errors.

Small models keep the emulated device fast; latency measurement (choose_formats) runs on
cpu only, and its timings are checked for consistency with the choice, never for speed.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import customml as cm
from customml import _formats, ops, prune


def _data(n=64, d=20, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int32)
    return x, y


def _model(device="cpu", sizes=(20, 24, 16, 5), activation="relu", optimizer=None, seed=3):
    layers = []
    for units in sizes[1:-1]:
        layers += [cm.layers.Dense(units, activation=activation), cm.layers.Dropout(0.1)]
    layers.append(cm.layers.Dense(sizes[-1]))
    model = cm.Sequential(layers, input_dim=sizes[0], device=device, seed=seed)
    model.compile(optimizer or cm.optimizers.Adam(1e-2), "softmax_cross_entropy", metrics=["accuracy"])
    return model


def _dense_indices(model):
    return [i for i, layer in enumerate(model.layers) if isinstance(layer, cm.layers.Dense)]


def _kernels(model):
    return {i: model.layers[i].get_weights()[0] for i in _dense_indices(model)}


# ------------------------------------------------------------------------------------
# Masks during training
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: cm.optimizers.Adam(1e-2),
        lambda: cm.optimizers.AdamW(1e-2, weight_decay=0.1),
        lambda: cm.optimizers.SGD(1e-2, momentum=0.9, nesterov=True),
    ],
    ids=["adam", "adamw", "sgd_momentum"],
)
def test_masks_hold_through_fit(device, optimizer):
    model = _model(device, optimizer=optimizer())
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # optimizer state is nonzero before pruning
    prune.magnitude(model, 0.7, measure=False)
    masks = {i: k.copy() for i, k in model._masks.items()}
    model.fit(x, y, epochs=5, batch_size=8, verbose=0)  # 40 updates with momentum / moments built up
    for i, kernel in _kernels(model).items():
        # pruned weights exactly zero, and +0.0 (the mask writes zeros, it does not scale)
        assert kernel[~masks[i]].tobytes() == np.zeros((~masks[i]).sum(), np.float32).tobytes()
        # the kept ones kept training
        assert np.count_nonzero(kernel[masks[i]]) == masks[i].sum()
        assert model._net.masked(i)


def test_magnitude_layer_scope_exact_counts(device):
    model = _model(device)
    before = _kernels(model)
    for sparsity in (0.0, 0.1, 0.29, 0.5, 0.9):
        model = _model(device)
        report = prune.magnitude(model, sparsity, measure=False)
        for row in report.layers:
            i, kernel, keep = row["index"], before[row["index"]], model._masks[row["index"]]
            # round(0.29 * 100) is 29 although 0.29 * 100 is 28.999...: the nearest count
            assert (~keep).sum() == round(sparsity * kernel.size)
            # every kept magnitude is at least every pruned one
            if 0 < (~keep).sum() < kernel.size:
                assert np.abs(kernel[keep]).min() >= np.abs(kernel[~keep]).max()
            after = model.layers[i].get_weights()
            np.testing.assert_array_equal(after[0], np.where(keep, kernel, 0))
            assert row["sparsity"] == pytest.approx((~keep).sum() / kernel.size)
            assert row["params_after"] == np.count_nonzero(after[0]) + np.count_nonzero(after[1])


def test_magnitude_global_scope_exact_count():
    model = _model()
    # Scale one layer up so that global pruning takes more from the others.
    k, b = model.layers[2].get_weights()
    model.layers[2].set_weights([k * 10, b])
    before = _kernels(model)
    prune.magnitude(model, 0.6, scope="global", measure=False)
    total = sum(k.size for k in before.values())
    pruned = sum((~model._masks[i]).sum() for i in before)
    assert pruned == round(0.6 * total)
    kept = np.concatenate([np.abs(before[i][model._masks[i]]) for i in before])
    gone = np.concatenate([np.abs(before[i][~model._masks[i]]) for i in before])
    assert kept.min() >= gone.max()
    assert (~model._masks[2]).mean() < 0.6 < (~model._masks[0]).mean()


def test_magnitude_ties_are_deterministic_and_masks_only_grow():
    model = _model(sizes=(4, 6, 3))
    model.layers[0].set_weights([np.ones((4, 6), np.float32), np.zeros(6, np.float32)])
    prune.magnitude(model, 0.5, measure=False)
    # equal magnitudes: the earlier weights (row-major) go first
    np.testing.assert_array_equal(model._masks[0].ravel(), np.arange(24) >= 12)
    first = {i: k.copy() for i, k in model._masks.items()}
    prune.magnitude(model, 0.75, measure=False)
    for i, keep in model._masks.items():
        assert not (keep & ~first[i]).any()


def test_biases_are_never_pruned():
    model = _model()
    for i in _dense_indices(model):
        k, _ = model.layers[i].get_weights()
        model.layers[i].set_weights([k, np.full(k.shape[1], 1e-9, np.float32)])  # tinier than any weight
    prune.magnitude(model, 0.9, scope="global", measure=False)
    for i in _dense_indices(model):
        assert (model.layers[i].get_weights()[1] == np.float32(1e-9)).all()


# ------------------------------------------------------------------------------------
# N:M
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (3, 8), (4, 4)])
def test_n_m_pattern(device, n, m):
    # 20 and 24 inputs: a short last group of 20 % 8 = 4 rows for m=8
    model = _model(device)
    before = _kernels(model)
    prune.n_m(model, n, m, measure=False)
    for i, kernel in before.items():
        keep = model._masks[i]
        rows = kernel.shape[0]
        for g in range(0, rows, m):
            group_keep = keep[g : g + m]
            assert (group_keep.sum(axis=0) == min(n, group_keep.shape[0])).all()
            mags = np.abs(kernel[g : g + m])
            for j in range(kernel.shape[1]):
                if group_keep[:, j].all() or not group_keep[:, j].any():
                    continue
                assert mags[group_keep[:, j], j].min() >= mags[~group_keep[:, j], j].max()
        assert model._nm[i] == (n, m)


# ------------------------------------------------------------------------------------
# Sparse inference
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csr", "nm"])
def test_sparse_predict_matches_dense(device, fmt):
    model = _model(device, sizes=(37, 33, 17, 5))
    x, _ = _data(n=70, d=37)
    if fmt == "csr":
        prune.magnitude(model, 0.8, measure=False)
    else:
        prune.n_m(model, 2, 4, measure=False)
    dense = model.predict(x)
    for i in _dense_indices(model):
        model._net.set_sparse_format(i, fmt, prune.UNBOUNDED)
    sparse = model.predict(x)
    assert sparse.shape == dense.shape and sparse.dtype == np.float32
    # The sparse kernels add the same nonzero products as the dense GEMM in another order
    # (over at most 37 terms per output): float32 reassociation error is at most about
    # 37 * 2**-24 of the sum of |products|, which is O(1) here, so 1e-5 absolute on outputs
    # of size O(1) bounds it with room for the second and third layer's propagation.
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-5)
    # a batch above max_batch runs dense again: bit for bit the dense result
    for i in _dense_indices(model):
        model._net.set_sparse_format(i, fmt, 8)
    assert model.predict(x, batch_size=70).tobytes() == dense.tobytes()


@pytest.mark.parametrize("fmt", ["csr", "nm"])
@pytest.mark.parametrize("batch", [1, 2, 3, 8, 9, 70])
def test_sparse_plan_runs_the_prepared_product(isa, fmt, batch):
    # The plan prepares each sparse layer's nonzeros as ops.sparse_pack does (with AVX-512:
    # the packed layout, whichever the format) and must run the same kernel: the same bits
    # as the op on the prepared weight, layer by layer, where the packed layout serves the
    # batch, and as the format's own op elsewhere.
    model = _model(sizes=(300, 140, 17))
    x, _ = _data(n=batch, d=300)
    if fmt == "csr":
        prune.magnitude(model, 0.9, measure=False)
    else:
        prune.n_m(model, 2, 4, measure=False)
    for i in _dense_indices(model):
        model._net.set_sparse_format(i, fmt, prune.UNBOUNDED)
    # The packed layout serves every batch where at least half its lanes hold a nonzero: 2:4
    # here (every step takes a nonzero from every output; the 140- and 17-output layers'
    # last blocks leave at most 15 of 32 lanes empty), a layout less full only up to 8
    # rows, after which the op on the prepared weight runs the CSR kernel, as the plan does.
    packed_path = "sparse_dense_packed" in cm.build_info()["kernels"]
    h = x
    for i in _dense_indices(model):
        kernel, bias = model.layers[i].get_weights()
        act = model.layers[i].activation
        if packed_path or fmt == "csr":
            packed = ops.sparse_pack(*ops.csr_from_dense(kernel), kernel.shape[0])
            h = ops.sparse_dense_forward(h, packed, bias=bias, activation=act)
        else:
            h = ops.nm_dense_forward(h, *ops.nm_from_dense(kernel), bias, activation=act)
    assert model.predict(x, batch_size=batch).tobytes() == h.tobytes()


def test_choose_formats_follows_its_measurements():
    model = _model(sizes=(256, 256, 10))
    prune.magnitude(model, 0.9, measure=False)
    chosen = prune.choose_formats(model, batch_sizes=(1, 8, 32), repeats=3)
    assert set(chosen) == {0, 2}  # the Dense layers, around the dropout
    for i, c in chosen.items():
        lat = c["latency_us"]
        assert set(lat) == {"dense", "csr"} and set(lat["dense"]) == {1, 8, 32}
        assert model._net.sparse_format(i) == (c["format"], c["max_batch"])
        assert model._net.sparse_min_batch(i) == c["min_batch"]
        assert (c["min_batch"], c["max_batch"]) == _formats.batch_range(lat["dense"], lat["csr"])
        assert c["format"] == ("dense" if c["max_batch"] == 0 else "csr")


def test_choose_formats_times_a_size_again_before_it_breaks_a_run(monkeypatch):
    # The first timing has csr clearly slower at batch 8 (a noisy probe); the second, of
    # that size alone, a tie. The choice rests on the faster time of the two for every
    # probe, so csr runs from batch 1 on. Sizes where csr is not slower are not timed again.
    model = _model(sizes=(256, 256, 10))
    prune.magnitude(model, 0.9, measure=False)
    calls = []

    def fake_time_probes(probes, sizes, repeats):
        calls.append(tuple(sizes))
        if len(calls) % 2 == 1:  # each layer's first timing
            return {"dense": {1: 10.0, 8: 50.0, 32: 200.0}, "csr": {1: 5.0, 8: 80.0, 32: 100.0}}
        return {"dense": {8: 55.0}, "csr": {8: 50.0}}

    monkeypatch.setattr(_formats, "time_probes", fake_time_probes)
    chosen = prune.choose_formats(model, batch_sizes=(1, 8, 32))
    assert calls == [(1, 8, 32), (8,)] * 2
    for c in chosen.values():
        assert (c["format"], c["min_batch"], c["max_batch"]) == ("csr", 1, U)
        assert c["latency_us"] == {"dense": {1: 10.0, 8: 50.0, 32: 200.0}, "csr": {1: 5.0, 8: 50.0, 32: 100.0}}


U = prune.UNBOUNDED


@pytest.mark.parametrize(
    "sparse, want",
    [
        ({1: 5, 8: 50, 128: 500}, (1, U)),  # faster everywhere
        ({1: 10.3, 8: 50, 128: 500}, (8, U)),  # a tie at batch 1: sparse from the first win
        ({1: 5, 8: 82, 128: 500}, (1, U)),  # a tie (within 5%) in the middle does not break the run
        ({1: 5, 8: 50, 128: 2000}, (1, 8)),  # clearly slower at 128
        ({1: 5, 8: 90, 128: 500}, (128, U)),  # two runs, broken at 8: the one saving more time
        ({1: 5, 8: 90, 128: 2000}, (1, 1)),
        ({1: 11, 8: 50, 128: 500}, (8, U)),  # clearly slower at batch 1 only: sparse from 8 on
        ({1: 10, 8: 100, 128: 1000}, (1, 0)),  # never faster: dense throughout
    ],
)
def test_batch_range_rule(sparse, want):
    dense = {1: 10, 8: 80, 128: 1000}
    assert _formats.batch_range(dense, sparse) == want


def test_sparse_runs_only_inside_its_batch_range(device):
    model = _model(device, sizes=(37, 33, 5))
    x, _ = _data(n=40, d=37)
    prune.magnitude(model, 0.8, measure=False)

    def run(fmt, batch, **kw):
        for i in (0, 2):
            model._net.set_sparse_format(i, fmt, kw.get("max_batch", prune.UNBOUNDED), min_batch=kw.get("min_batch", 1))
        return model.predict(x, batch_size=batch).tobytes()

    dense = {b: run("dense", b) for b in (5, 10, 40)}
    sparse = {b: run("csr", b) for b in (5, 10, 40)}
    # with the range [10, 20], batches of 10 run the sparse kernel, those of 5 and 40 dense
    ranged = {b: run("csr", b, min_batch=10, max_batch=20) for b in (5, 10, 40)}
    assert ranged == {5: dense[5], 10: sparse[10], 40: dense[40]}
    assert model._net.sparse_min_batch(0) == 10


def test_report_table_and_dict():
    model = _model(sizes=(64, 32, 10))
    report = prune.magnitude(model, 0.5, batch_sizes=(1, 128))
    assert model.pruning_report is report
    text = str(report)
    assert "Pruning report (magnitude)" in text and "dense_1" in text and "b128 us dense / sparse" in text
    d = report.as_dict()
    # nonzeros: the biases start at zero
    assert d["params_before"] == 64 * 32 + 32 * 10
    assert d["params_after"] == 64 * 32 // 2 + 32 * 10 // 2
    assert set(d["layers"][0]["latency_us"]["dense"]) == {1, 128}


# ------------------------------------------------------------------------------------
# Structured pruning
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_structured_removes_dead_units_without_changing_predictions(device, activation):
    model = _model(device, activation=activation)
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    # Kill half the units of each hidden layer: zero incoming weights (and, for the first
    # layer, zero bias). Sigmoid units then still output sigmoid(bias), which structured
    # must fold into the next layer's bias.
    for i, dead in ((0, [1, 4, 5, 7, 8, 9, 12, 13, 20, 21, 22, 23]), (2, [0, 2, 3, 5, 11, 12, 14, 15])):
        k, b = model.layers[i].get_weights()
        k[:, dead] = 0
        if i == 0:
            b[dead] = 0
        model.layers[i].set_weights([k, b])
    want = model.predict(x)
    original = [w.tobytes() for w in model.get_weights()]
    smaller = prune.structured(model, 0.5, measure=False)
    assert [layer.units for layer in smaller.layers if isinstance(layer, cm.layers.Dense)] == [12, 8, 5]
    assert smaller.count_params() < model.count_params()
    assert [w.tobytes() for w in model.get_weights()] == original  # the original is untouched
    got = smaller.predict(x)
    assert got.shape == want.shape
    # The removed units contributed exact zeros (or, folded into the bias, the same
    # constants), so only the order of the float32 sums changes: reassociation over at
    # most 24 terms of size O(1), far below 1e-5.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # same compile configuration, fresh optimizer state; it trains
    assert type(smaller._optimizer) is type(model._optimizer) and smaller._metrics == model._metrics
    smaller.fit(x, y, epochs=1, batch_size=16, verbose=0)


def test_structured_criteria_and_limits():
    model = _model(sizes=(3, 4, 2))
    # unit 0: l1 = 3, l2 = 1.73; unit 1: l1 = 2.5, l2 = 2.5; units 2, 3 large
    k = np.array([[1, 2.5, 5, 5], [1, 0, 5, 5], [1, 0, 5, 5]], np.float32)
    model.layers[0].set_weights([k, np.zeros(4, np.float32)])
    l2 = prune.structured(model, 0.25, "l2", measure=False)
    l1 = prune.structured(model, 0.25, "l1", measure=False)
    np.testing.assert_array_equal(l2.layers[0].get_weights()[0][:, 0], k[:, 1])  # unit 0 went
    np.testing.assert_array_equal(l1.layers[0].get_weights()[0][:, 0], k[:, 0])  # unit 1 went
    # at least one unit stays; the last layer's outputs never go
    tiny = prune.structured(model, 0.99, measure=False)
    assert [tiny.layers[0].units, tiny.layers[-1].units] == [1, 2]


def test_structured_carries_masks_and_reports():
    model = _model(sizes=(20, 24, 5))
    prune.magnitude(model, 0.5, measure=False)
    smaller = prune.structured(model, 0.5)
    for i in (0, 2):
        kernel = smaller.layers[i].get_weights()[0]
        assert smaller._masks[i].shape == kernel.shape
        assert not kernel[~smaller._masks[i]].any()
    rows = smaller.pruning_report.layers
    assert rows[0]["shape"] == (20, 24) and rows[0]["new_shape"] == (20, 12)
    assert set(rows[0]["latency_us"]) == {"before", "after"}
    assert "20x24 -> 20x12" in str(smaller.pruning_report)


# ------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------


def _dense_copy(model):
    """The same weights in a model that is not pruned."""
    copy = cm.Sequential(
        [
            type(layer)(layer.units, activation=layer.activation)
            if isinstance(layer, cm.layers.Dense)
            else cm.layers.Dropout(layer.rate)
            for layer in model.layers
        ],
        input_dim=model.input_dim,
        seed=0,
    )
    copy.set_weights(model.get_weights())
    return copy


def test_save_load_bit_exact_and_compressed(device, tmp_path):
    model = _model(device, sizes=(64, 256, 128, 10))
    x, y = _data(d=64, classes=10)
    prune.magnitude(model, 0.9, measure=False)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    model._net.set_sparse_format(0, "csr", 32, min_batch=4)
    # a kept weight that is exactly zero stays kept: the mask is saved, not the nonzeros
    k, b = model.layers[2].get_weights()
    kept = np.argwhere(model._masks[2])[0]
    k[tuple(kept)] = 0.0
    model.layers[2].set_weights([k, b])
    path = tmp_path / "pruned.cml"
    model.save(path)
    dense_path = tmp_path / "dense.cml"
    _dense_copy(model).save(dense_path)
    assert dense_path.stat().st_size >= 4 * path.stat().st_size
    loaded = cm.load(path, device=device)
    assert [w.tobytes() for w in loaded.get_weights()] == [w.tobytes() for w in model.get_weights()]
    assert set(loaded._masks) == {0, 2, 4}
    for i in (0, 2, 4):
        np.testing.assert_array_equal(loaded._masks[i], model._masks[i])
        assert loaded._net.masked(i)
    assert loaded._net.sparse_format(0) == ("csr", 32) and loaded._net.sparse_min_batch(0) == 4
    assert loaded._net.sparse_format(2) == ("dense", 0)
    assert loaded.predict(x).tobytes() == model.predict(x).tobytes()
    # fine-tuning after the load keeps the masks
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for i in (0, 2, 4):
        assert not loaded.layers[i].get_weights()[0][~model._masks[i]].any()


def test_save_load_with_optimizer_state_and_n_m(tmp_path):
    model = _model()
    x, y = _data()
    prune.n_m(model, 2, 4, measure=False)
    model._net.set_sparse_format(0, "nm", prune.UNBOUNDED, 2, 4)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "m.cml", include_optimizer=True)
    loaded = cm.load(tmp_path / "m.cml")
    assert loaded._nm == model._nm and loaded._net.sparse_format(0) == ("nm", prune.UNBOUNDED)
    # resumed training equals continued training, bit for bit
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert [w.tobytes() for w in loaded.get_weights()] == [w.tobytes() for w in model.get_weights()]


def test_load_weights_restores_and_clears_masks(tmp_path):
    pruned = _model()
    prune.magnitude(pruned, 0.5, measure=False)
    pruned.save(tmp_path / "p.cml")
    target = _model(seed=9)
    target.load_weights(tmp_path / "p.cml")
    assert set(target._masks) == set(pruned._masks)
    _model().save(tmp_path / "d.cml")  # not pruned
    target.load_weights(tmp_path / "d.cml")
    assert target._masks == {} and not target._net.masked(0)


def _split(raw: bytes):
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), bytearray(raw[8 + n :])


def _reseal(header: dict, data: bytes) -> bytes:
    """The file with its checksum recomputed as io.py documents it, so the edit reaches
    the CSR checks."""
    meta = header["__metadata__"]
    h = hashlib.sha256()
    for key in sorted(meta):
        if key != "checksum":
            h.update(key.encode() + b"\0" + meta[key].encode() + b"\0")
    h.update(bytes(data))
    meta["checksum"] = "sha256:" + h.hexdigest()
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + bytes(data)


@pytest.mark.parametrize(
    "tensor, position, value, match",
    [
        ("index", 0, 20, r"holds input 20, outside \[0, 20\)"),
        ("index", 0, -1, r"holds input -1"),
        ("index", 1, 0, "not strictly increasing"),
        ("offsets", 3, 0, "decreases at row"),
        ("offsets", 0, 1, "must run from 0"),
        ("offsets", -1, 5, "must run from 0"),
    ],
)
def test_corrupt_csr_is_refused(tmp_path, tensor, position, value, match):
    model = _model()
    prune.magnitude(model, 0.5, measure=False)
    header, data = _split(cm.io.dumps(model))
    assert header["__metadata__"]["format_version"] == "3"
    entry = header[f"layers.0.kernel.{tensor}"]
    dtype = {"I16": "<i2", "I32": "<i4", "I64": "<i8"}[entry["dtype"]]
    begin, end = entry["data_offsets"]
    array = np.frombuffer(bytes(data[begin:end]), dtype=dtype).copy()
    if tensor == "index" and position == 1:
        array[1] = array[0]  # the first output's first two inputs: a repeated position
    else:
        array[position] = value
    data[begin:end] = array.tobytes()
    with pytest.raises(ValueError, match=match):
        cm.io.loads(_reseal(header, data))


def test_unpruned_files_keep_their_version():
    header, _ = _split(cm.io.dumps(_model()))
    assert header["__metadata__"]["format_version"] == "1" and "pruning" not in header["__metadata__"]


# ------------------------------------------------------------------------------------
# Gradual pruning
# ------------------------------------------------------------------------------------


class _Record(cm.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.sparsity = {}

    def on_batch_end(self, batch, logs=None):
        masks = self.model._masks
        self.sparsity[int(self.model._net.step)] = sum((~k).sum() for k in masks.values())


def test_gradual_pruning_follows_the_schedule(device):
    model = _model(device)
    x, y = _data()
    gradual = cm.callbacks.GradualPruning(
        0.8, initial_sparsity=0.1, begin_step=4, end_step=34, frequency=10, measure=False
    )
    record = _Record()
    model.fit(x, y, epochs=6, batch_size=8, callbacks=[gradual, record], verbose=0)  # 48 steps
    sizes = [k.size for k in _kernels(model).values()]
    expected = {}
    for step in range(1, 49):
        pruned_at = [t for t in (4, 14, 24, 34) if t <= step]
        if pruned_at:
            s = gradual.sparsity(pruned_at[-1])
            expected[step] = sum(round(s * n) for n in sizes)
    for step, count in expected.items():
        assert record.sparsity[step] == count, step
    assert gradual.sparsity(4) == pytest.approx(0.1) and gradual.sparsity(34) == pytest.approx(0.8)
    # s_t = s_f + (s_i - s_f)(1 - (t - t0) / (n dt))^3
    assert gradual.sparsity(14) == pytest.approx(0.8 + (0.1 - 0.8) * (1 - 10 / 30) ** 3)
    for _i, kernel in _kernels(model).items():
        assert (kernel == 0).sum() >= round(0.8 * kernel.size)


def test_gradual_pruning_chooses_formats_at_the_end():
    model = _model(sizes=(64, 64, 10))
    x, y = _data(d=64, classes=10)
    gradual = cm.callbacks.GradualPruning(0.9, end_step=8, frequency=4)
    model.fit(x, y, epochs=2, batch_size=8, callbacks=[gradual], verbose=0)
    assert model.pruning_report is not None and len(model.pruning_report.layers) == 2
    assert model.pruning_report.layers[0]["sparsity"] == pytest.approx(round(0.9 * 64 * 64) / (64 * 64))


# ------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: prune.magnitude(m, 1.0), r"\[prune.magnitude\] sparsity must be a number in \[0, 1\), got 1.0"),
        (lambda m: prune.magnitude(m, -0.1), r"sparsity must be a number in \[0, 1\)"),
        (lambda m: prune.magnitude(m, True), r"sparsity must be a number"),
        (lambda m: prune.magnitude(m, "0.5"), r"sparsity must be a number"),
        (lambda m: prune.magnitude(m, float("nan")), r"sparsity must be a number"),
        (lambda m: prune.magnitude(m, 0.5, scope="model"), r"scope must be 'layer' or 'global'"),
        (lambda m: prune.structured(m, 1.0), r"\[prune.structured\] fraction must be a number in \[0, 1\)"),
        (lambda m: prune.structured(m, 0.5, criterion="l3"), r"criterion must be 'l2' or 'l1'"),
        (lambda m: prune.n_m(m, 5, 4), r"\[prune.n_m\] n must be <= m"),
        (lambda m: prune.n_m(m, 0, 4), r"n must be an integer in \[1, 255\]"),
        (lambda m: prune.n_m(m, 2, 256), r"m must be an integer in \[1, 255\]"),
        (lambda m: prune.choose_formats(m, batch_sizes=(0,)), r"batch_sizes must be positive integers"),
        (lambda m: prune.choose_formats(m, formats=("coo",)), r"formats must name 'csr' and/or 'nm'"),
        (lambda m: cm.callbacks.GradualPruning(1.0, end_step=10), r"final_sparsity must be a number in \[0, 1\)"),
        (lambda m: cm.callbacks.GradualPruning(0.5, end_step=10, begin_step=10), r"end_step must be > begin_step"),
        (lambda m: cm.callbacks.GradualPruning(0.5, end_step=10, frequency=0), r"frequency must be an integer >= 1"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(_model())


def test_bad_models():
    with pytest.raises(TypeError, match=r"\[prune.magnitude\] model must be a customml Sequential"):
        prune.magnitude("model", 0.5)
    with pytest.raises(ValueError, match=r"\[prune.magnitude\] the model is not built"):
        prune.magnitude(cm.Sequential([cm.layers.Dense(2)]), 0.5)
    with pytest.raises(ValueError, match=r"needs at least two Dense layers"):
        prune.structured(_model(sizes=(4, 2)), 0.5)


def test_pop_and_add_keep_the_other_layers_masks(device):
    # The kept layers keep their masks (enforced through the next fit), the new head has
    # none, and the model still saves and loads.
    x, y = _data()
    model = _model(device)
    prune.magnitude(model, 0.5)
    model.pop()
    model.add(cm.layers.Dense(3))
    # Dense layers at 0, 2 and 4 (Dropout between): the new head is the one at 4
    assert sorted(model._masks) == [0, 2] and model._net.masked(0) and model._net.masked(2)
    assert not model._net.masked(4)
    model.fit(x, y % 3, epochs=2, batch_size=16, verbose=0)
    for i in (0, 2):
        kernel = model.layers[i].get_weights()[0]
        assert (kernel[~model._masks[i]] == 0).all()
    np.testing.assert_array_equal(cm.io.loads(cm.io.dumps(model), device=device).predict(x), model.predict(x))


def test_structured_keeps_frozen_layers_and_preprocessing(device):
    x, y = _data()
    norm = cm.layers.Normalization()
    norm.adapt(x)
    model = cm.Sequential(
        [norm, cm.layers.Dense(24, activation="relu"), cm.layers.Dense(5)], input_dim=20, device=device, seed=3
    )
    model.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy")
    model.layers[1].trainable = False
    smaller = prune.structured(model, 0.25)
    assert isinstance(smaller.layers[0], cm.layers.Normalization) and not smaller.layers[1].trainable
    np.testing.assert_array_equal(smaller.layers[0].mean, norm.mean)
    frozen = smaller.layers[1].get_weights()
    smaller.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for before, after in zip(frozen, smaller.layers[1].get_weights()):
        np.testing.assert_array_equal(before, after)


def test_gradual_pruning_resumed_mid_schedule_is_bit_exact(tmp_path):
    # A fit resumed between two pruning steps prunes at the last scheduled step's sparsity,
    # as the uninterrupted run did, so both end with the same masks and weights.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 20)).astype(np.float32)
    y = rng.integers(0, 4, 256).astype(np.int32)

    def model():
        m = cm.Sequential([cm.layers.Dense(32, activation="relu"), cm.layers.Dense(4)], input_dim=20, seed=1)
        m.compile(optimizer="adam", loss="softmax_cross_entropy")
        return m

    def schedule():
        return cm.callbacks.GradualPruning(0.8, end_step=24, frequency=5, measure=False)

    straight = model()
    straight.fit(x, y, epochs=4, batch_size=32, verbose=0, callbacks=[schedule()])
    first = model()
    first.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[schedule()])
    assert first._net.step == 16  # between the pruning steps 15 and 20
    first.save(tmp_path / "ckpt.cml", include_optimizer=True)
    resumed = cm.load(tmp_path / "ckpt.cml")
    resumed.fit(x, y, epochs=4, initial_epoch=2, batch_size=32, verbose=0, callbacks=[schedule()])
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    for i in straight._masks:
        np.testing.assert_array_equal(straight._masks[i], resumed._masks[i])
