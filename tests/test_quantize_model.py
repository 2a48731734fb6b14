"""customml.quantize.int8: the quantized model against a NumPy simulation of the same
int8 arithmetic on every device, each calibration method, per-channel and per-tensor
weights, dynamic inputs, the accuracy-budget fallback, the report, save/load, the CLI
and bad input.

The simulation (``_simulate``) is the spec: inputs quantized to uint8 with the layer's
encoding, the int32 product (exact, here in int64), then
act(a_scale w_scale (acc - a_zero colsum) + bias) and, between two static int8 layers,
the requantization of that to the next layer's uint8 codes. It runs the float epilogue in
float64 where the kernels use float32; see ``_compare`` for the tolerance this implies.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import customml as cm
import reference
from customml import _model_file, cli, io, quantize
from support import assert_close
from test_gemm_s8 import f32_bound


def _digits_model(hidden=(64,), device="cpu", epochs=15, seed=1):
    (x_train, y_train), (x_test, y_test) = cm.datasets.load("digits")
    layers = []
    for units in hidden:
        layers += [cm.layers.Dense(units, activation="relu"), cm.layers.Dropout(0.1)]
    layers.append(cm.layers.Dense(10))
    model = cm.Sequential(layers, input_dim=64, seed=seed, device=device)
    model.compile(optimizer=cm.optimizers.Adam(3e-3), loss="softmax_cross_entropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    return model, (x_train, y_train), (x_test, y_test)


@pytest.fixture(scope="module")
def digits():
    """A digits MLP trained on the cpu (about 0.05 s) and its data; tests move it to their
    device through the file format."""
    return _digits_model()


def _on(model, device):
    return io.loads(io.dumps(model), device=device)


def _activate(z, act):
    return reference.activation_forward(act, z)


def _codes(x, a_scale, a_zero):
    """uint8 codes of float32 x (rows, in) with per-row a_scale, a_zero (rows, 1), as int64."""
    return reference.quantize(x, a_scale[:, 0], a_zero[:, 0], dtype="uint8", axis="row").astype(np.int64)


def _simulate(model, x, tie=1e-4):
    """predict of an int8 model in NumPy, following the executor's plan: returns the
    output and, per row, how many requantized codes sat within `tie` codes of a rounding tie
    (where float32 and float64 epilogues may round apart: the kernel's float32 y is within
    a few ulp of the float64 one, and y / scale <= 255 codes, so 4 ulp are at most
    4 * 2^-24 * 255 = 6.1e-5 of a code: the default 1e-4)."""
    dense = [i for i, layer in enumerate(model.layers) if isinstance(layer, cm.layers.Dense)]
    cur = np.asarray(x, dtype=np.float32)
    codes = None  # the uint8 input of the current layer when the previous one requantized
    ties = np.zeros(x.shape[0], dtype=np.int64)
    for n, i in enumerate(dense):
        layer = model.layers[i]
        q = model._net.quantization(i)
        _, bias = layer.get_weights()
        if q is None:
            kernel, _ = layer.get_weights()
            cur = _activate(cur.astype(np.float64) @ kernel + bias, layer.activation)
            codes = None
            continue
        if q["in_scale"] > 0:
            a_scale = np.float32(q["in_scale"]) * np.ones((x.shape[0], 1), np.float32)
            a_zero = np.full((x.shape[0], 1), q["in_zero"], np.int64)
            if codes is None:
                codes = _codes(cur.astype(np.float32), a_scale, a_zero)
        else:
            xf = cur.astype(np.float32)
            lo = np.minimum(xf.min(axis=1, keepdims=True), 0)
            hi = np.maximum(xf.max(axis=1, keepdims=True), 0)
            a_scale = ((hi - lo) / np.float32(255)).astype(np.float32)
            a_scale[a_scale == 0] = 1
            a_zero = np.clip(np.rint(-lo / a_scale), 0, 255).astype(np.int64)
            codes = _codes(xf, a_scale, a_zero)
        w = q["w_q"].astype(np.int64)
        acc = codes @ w - a_zero * w.sum(axis=0)
        y = _activate(a_scale.astype(np.float64) * q["w_scale"].astype(np.float64) * acc + bias, layer.activation)
        nxt = model._net.quantization(dense[n + 1]) if n + 1 < len(dense) else None
        if nxt is not None and nxt["in_scale"] > 0:
            t = y / np.float64(np.float32(nxt["in_scale"]))
            ties += np.count_nonzero(np.abs(t - np.floor(t) - 0.5) < tie, axis=1)
            codes = np.clip(np.rint(t) + nxt["in_zero"], 0, 255).astype(np.int64)
        else:
            codes = None
        cur = y
    return cur, ties


def _compare(qmodel, x):
    """predict against _simulate. Rows without a near-tie requantization must agree to
    float32 rounding of the epilogue: 1e-4 relative to the row's largest output (the
    float32 epilogue rounds a_scale w_scale acc + bias to 2^-24 relative, and the
    next layer sums up to 64 such terms of either sign, which loses a few more bits).
    Rows with one (a code one step apart) may differ by one input step times the next
    layer's largest |weight| per flipped code; the share of such rows is small."""
    got = qmodel.predict(x)
    want, ties = _simulate(qmodel, x)
    assert got.shape == want.shape and got.dtype == np.float32
    scale = np.abs(want).max(axis=1, keepdims=True) + 1e-6
    err = np.abs(got - want) / scale
    strict = ties == 0
    assert strict.mean() > 0.9, f"too many near-tie rows ({(~strict).sum()} of {len(ties)})"
    assert err[strict].max() < 1e-4, f"max relative error {err[strict].max():.3g} on rows without ties"
    dense = [i for i, layer in enumerate(qmodel.layers) if isinstance(layer, cm.layers.Dense)]
    last = qmodel._net.quantization(dense[-1])
    if (~strict).any() and last is not None and last["in_scale"] > 0:
        step = last["in_scale"] * np.abs(qmodel.layers[dense[-1]].get_weights()[0]).max()
        bound = ties[~strict] * step / scale[~strict, 0] + 1e-4
        assert (err[~strict].max(axis=1) <= bound).all()
    return got


# ---------------------------------------------------------------------------------------
# Encodings and calibration methods (NumPy only)
# ---------------------------------------------------------------------------------------


def test_weight_codes_are_symmetric_round_half_even_per_channel_and_per_tensor():
    # Column 0 spans max 127 steps with exact ties k + 0.5 in between; column 1 is zero.
    steps = np.array([127.0, 0.5, 1.5, 2.5, -2.5, -0.5, -127.0], dtype=np.float32)
    kernel = np.stack([steps * 0.25, np.zeros_like(steps), steps * 0.5], axis=1)
    codes, scale = quantize.quantize_weights(kernel, per_channel=True)
    assert codes.dtype == np.int8 and codes.shape == kernel.shape and scale.shape == (3,)
    np.testing.assert_array_equal(scale, np.float32([0.25, 1.0, 0.5]))  # zero column: scale 1
    np.testing.assert_array_equal(codes[:, 0], [127, 0, 2, 2, -2, 0, -127])  # half to even
    np.testing.assert_array_equal(codes[:, 1], 0)
    codes, scale = quantize.quantize_weights(kernel, per_channel=False)
    assert scale.shape == (1,) and scale[0] == np.float32(0.5)
    assert codes.min() >= -127 and codes.max() == 127


def test_activation_encoding_keeps_zero_exact():
    for lo, hi in ((0.0, 6.0), (-1.0, 3.0), (-2.0, -0.5), (0.3, 0.7), (0.0, 0.0)):
        scale, zero = quantize.activation_encoding(lo, hi)
        assert scale > 0 and 0 <= zero <= 255 and isinstance(zero, int)
        # the range is widened to contain 0, whose code is the zero point: exact
        assert scale * (zero - zero) == 0.0
        assert scale * (0 - zero) <= min(lo, 0.0) + scale / 2
        assert scale * (255 - zero) >= max(hi, 0.0) - scale / 2


@pytest.mark.parametrize("method", quantize.METHODS)
def test_methods_choose_a_range_inside_the_data_containing_zero(method):
    rng = np.random.default_rng(0)
    relu = np.maximum(rng.laplace(size=200_000), 0).astype(np.float32)  # heavy upper tail
    two_sided = rng.standard_t(3, size=200_000).astype(np.float32)
    for x in (relu, two_sided):
        lo, hi = quantize._RANGES[method](x, percentile=99.9, num_bins=2048)
        assert x.min() - 1e-6 <= lo <= 0.0 <= hi <= x.max() + 1e-6
        if x is relu:
            assert lo == 0.0  # nothing negative: no code spent on it
        if method == "minmax":
            assert (lo, hi) == (min(float(x.min()), 0.0), float(x.max()))
        else:
            # heavy tails: every other method clips the few extreme values
            assert hi < x.max()


# ---------------------------------------------------------------------------------------
# The quantized model
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_predict_matches_the_int8_simulation(digits, device, per_channel, static):
    model, (x_train, _), (x_test, _) = digits
    model = _on(model, device)
    qmodel = quantize.int8(model, calibration=x_train[:256], per_channel=per_channel, static=static)
    for i in (0, 2):
        q = qmodel._net.quantization(i)
        assert q is not None and q["w_q"].dtype == np.int8
        assert q["w_scale"].shape == ((qmodel.layers[i].units,) if per_channel else (1,))
        assert (q["in_scale"] > 0) == static
    _compare(qmodel, x_test)
    _compare(qmodel, x_test[:1])  # batch 1, the latency path


@pytest.mark.parametrize("method", quantize.METHODS)
def test_each_method_keeps_digits_accuracy_within_one_point(digits, method):
    model, (x_train, _), (x_test, y_test) = digits
    qmodel = quantize.int8(model, calibration=x_train[:512], method=method, validation=(x_test, y_test))
    report = qmodel.quantization_report
    assert report.float_accuracy == pytest.approx(model.evaluate(x_test, y_test)["accuracy"])
    assert report.int8_accuracy == pytest.approx(qmodel.evaluate(x_test, y_test)["accuracy"])
    assert report.accuracy_drop <= 0.01
    _compare(qmodel, x_test)


def test_original_model_is_untouched(digits):
    model, (x_train, _), (x_test, _) = digits
    before = model.get_weights(), model.predict(x_test)
    qmodel = quantize.int8(model, calibration=x_train[:256])
    assert qmodel is not model and all(model._net.quantization(i) is None for i in (0, 2))
    for a, b in zip(before[0], model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(before[1], model.predict(x_test))
    # the copy keeps the compile configuration
    assert qmodel._loss.name == model._loss.name and qmodel._metrics == model._metrics


@pytest.mark.parametrize("activation", reference.ACTIVATIONS)
@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_simulate_layer_is_the_int8_layer_a_model_runs(activation, static):
    # The report's error figures rest on simulate_layer: it is what an int8 layer of a
    # model computes, bit for bit (the same ops), and within the float32 epilogue's
    # rounding of the ops' NumPy specification.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 37)).astype(np.float32)
    x[3] = 0  # an all-zero row: a dynamic encoding's empty range
    w_q, w_scale = quantize.quantize_weights(rng.standard_normal((37, 11)).astype(np.float32))
    bias = rng.standard_normal(11).astype(np.float32)
    in_scale, in_zero = quantize.activation_encoding(-1.5, 2.0) if static else (0.0, 0)
    y = quantize.simulate_layer(x, w_q, w_scale, bias, activation, in_scale, in_zero)
    assert y.shape == (50, 11) and y.dtype == np.float32
    model = cm.Sequential([cm.layers.Dense(11, activation)], input_dim=37, seed=0)
    model.layers[0].set_weights([np.zeros((37, 11), np.float32), bias])
    model._net.set_quantization(0, w_q, w_scale, in_scale, in_zero)
    assert y.tobytes() == model.predict(x).tobytes()
    if static:
        a_scale, a_zero = np.float32([in_scale]), np.int32([in_zero])
        a = reference.quantize(x, a_scale, a_zero)
    else:
        a, a_scale, a_zero = reference.quantize_rows_dynamic(x)
    z_ref = reference.gemm_s8(a, w_q, a_scale, a_zero, w_scale, bias=bias)
    y_ref = reference.activation_forward(activation, z_ref)
    assert_close(
        y,
        y_ref,
        f32_bound(activation, a, w_q, a_scale, a_zero, w_scale, bias, y_ref, z_ref),
        f"simulate_layer ({activation})",
    )


def test_report_contents(digits):
    model, (x_train, _), _ = digits
    calibration = x_train[:300]
    qmodel = quantize.int8(model, calibration=calibration, method="percentile", percentile=99.0)
    report = qmodel.quantization_report
    assert [row["index"] for row in report.layers] == [0, 2]
    for row in report.layers:
        q = qmodel._net.quantization(row["index"])
        assert row["shape"] == q["w_q"].shape
        assert row["weight_scale_min"] == pytest.approx(q["w_scale"].min())
        assert row["weight_scale_max"] == pytest.approx(q["w_scale"].max())
        assert row["weights_saturated"] == np.count_nonzero(np.abs(q["w_q"]) == 127) >= row["shape"][1]
        assert row["input_scale"] == q["in_scale"] and row["input_zero"] == q["in_zero"]
        assert row["inputs_seen"] == calibration.shape[0] * row["shape"][0]
        assert 0 <= row["inputs_clipped"] <= row["inputs_seen"]
        assert 0 < row["relative_rms_error"] < 0.05 and row["int8"]
    # the 99th percentile clips about 1 % of each layer's positive inputs
    assert report.layers[1]["inputs_clipped"] > 0
    assert report.float_accuracy is None and report.accuracy_drop is None
    d = report.to_dict()
    json.dumps(d)  # plain data
    assert d["method"] == "percentile" and d["per_channel"] and d["static"] and len(d["layers"]) == 2
    text = str(report)
    assert "percentile" in text and "dense_1" in text and "int8" in text and "rel. RMS err" in text


def test_fallback_returns_layers_to_float_until_the_drop_fits(digits):
    model, (x_train, _), (x_test, y_test) = digits
    # Calibrating on inputs 20 times too small clips nearly every real input: int8 loses
    # most of its accuracy, and only falling back restores it.
    bad = x_train[:256] * 0.05
    plain = quantize.int8(model, calibration=bad, validation=(x_test, y_test))
    assert plain.quantization_report.accuracy_drop > 0.05
    qmodel = quantize.int8(model, calibration=bad, validation=(x_test, y_test), max_accuracy_drop=0.01)
    report = qmodel.quantization_report
    assert report.accuracy_drop <= 0.01
    fell = [row["index"] for row in report.layers if not row["int8"]]
    assert fell, "some layer must have fallen back"
    for row in report.layers:
        assert (qmodel._net.quantization(row["index"]) is None) == (not row["int8"])
    # a layer that fell back has its original float weights again
    for i in fell:
        for a, b in zip(qmodel.layers[i].get_weights(), model.layers[i].get_weights()):
            np.testing.assert_array_equal(a, b)
    assert report.int8_accuracy == pytest.approx(qmodel.evaluate(x_test, y_test)["accuracy"])
    assert "fell back" in str(report)


def test_save_load_round_trip_is_bit_exact_and_smaller(tmp_path, device):
    model, (x_train, _), (x_test, _) = _digits_model(hidden=(256, 256), epochs=2)
    model = _on(model, device)
    float_path, int8_path = tmp_path / "f.cml", tmp_path / "q.cml"
    model.save(float_path)
    for static in (True, False):
        qmodel = quantize.int8(model, calibration=x_train[:256], static=static)
        qmodel.save(int8_path)
        loaded = cm.load(int8_path, device=device)
        np.testing.assert_array_equal(loaded.predict(x_test), qmodel.predict(x_test))
        for i in (0, 2, 4):
            a, b = loaded._net.quantization(i), qmodel._net.quantization(i)
            np.testing.assert_array_equal(a["w_q"], b["w_q"])
            np.testing.assert_array_equal(a["w_scale"], b["w_scale"])
            assert (a["in_scale"], a["in_zero"]) == (b["in_scale"], b["in_zero"])
        # the float kernel is not stored (it is scale * codes): int8 weights and float biases
        ratio = os.path.getsize(float_path) / os.path.getsize(int8_path)
        assert ratio >= 3.5, ratio
    # and a float file is still a version-1 file, readable by older customml
    assert json.loads(_header(float_path.read_bytes())[0]["__metadata__"]["format_version"]) == 1


def test_a_pruned_model_quantizes_saves_and_loads(tmp_path, digits):
    # Pruning then quantizing: the int8 codes hold the pruned zeros, and the file stores the
    # layers as int8 (no CSR and no mask for them), so it loads back bit-exact.
    model, (x_train, _), (x_test, _) = _digits_model(epochs=2)
    cm.prune.magnitude(model, 0.8)
    qmodel = quantize.int8(model, calibration=x_train[:256], pruned="int8")
    for i in (0, 2):  # the Dense layers (a Dropout sits between them)
        assert (qmodel._net.quantization(i)["w_q"] == 0).mean() >= 0.8
    qmodel.save(tmp_path / "pq.cml")
    loaded = cm.load(tmp_path / "pq.cml")
    np.testing.assert_array_equal(loaded.predict(x_test), qmodel.predict(x_test))


@pytest.mark.timing  # the choice follows latencies measured during the test
def test_a_pruned_layer_stays_sparse_float32_where_that_is_faster(tmp_path):
    # 99.9% of a 512 x 1024 layer pruned: its CSR holds about 500 weights against the
    # 512 kB that int8 reads, so at batch 1 and 8 the sparse float32 layer is 2-4x faster
    # (0.8 / 3.4 us against 3.6 / 7.6 us on the Zen 5) and stays float32, sparse, masked;
    # the file keeps it so. (At batch 64 the CSR kernel's transposition of x and y, 0.75 MB
    # of traffic for 32k multiply-adds, makes it 66 us against int8's 47 us on two threads:
    # there int8 is rightly chosen.)
    rng = np.random.default_rng(0)
    model = cm.Sequential([cm.layers.Dense(1024, activation="relu"), cm.layers.Dense(10)], input_dim=512, seed=2)
    x = rng.standard_normal((300, 512)).astype(np.float32)
    cm.prune.magnitude(model, 0.999, scope="layer", measure=False)
    qmodel = quantize.int8(model, calibration=x[:256], batch_sizes=(1, 8))
    row = qmodel.quantization_report.layers[0]
    assert not row["int8"] and row["sparse_float32"]["chosen"], row
    assert row["sparse_float32"]["format"] == "csr" and row["sparse_float32"]["min_batch"] == 1
    latency = row["sparse_float32"]["latency_us"]
    assert set(latency) == {"int8", "dense", "csr"} and all(set(t) == {1, 8} for t in latency.values())
    assert "float32 csr (faster than int8)" in str(qmodel.quantization_report)
    assert qmodel._net.quantization(0) is None and 0 in qmodel._masks
    assert qmodel._net.sparse_format(0)[0] == "csr"
    np.testing.assert_array_equal(qmodel.layers[0].get_weights()[0], model.layers[0].get_weights()[0])
    qmodel.save(tmp_path / "pq.cml")
    loaded = cm.load(tmp_path / "pq.cml")
    assert loaded.predict(x).tobytes() == qmodel.predict(x).tobytes()
    assert loaded._net.sparse_format(0) == qmodel._net.sparse_format(0) and 0 in loaded._masks
    # pruned="int8" quantizes every layer, the pruned ones included
    every = quantize.int8(model, calibration=x[:256], pruned="int8")
    assert all(r["int8"] and "sparse_float32" not in r for r in every.quantization_report.layers)
    with pytest.raises(ValueError, match=r"\[quantize.int8\] pruned must be 'measure' or 'int8'"):
        quantize.int8(model, calibration=x[:256], pruned="float")


def _header(raw: bytes):
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _rewrite(raw: bytes, name: str, value: np.ndarray) -> bytes:
    """The file with tensor `name` replaced and the checksum recomputed: what a
    deliberate tamperer (or a buggy writer) produces, which the checksum cannot catch."""
    header, data = _header(raw)
    begin, end = header[name]["data_offsets"]
    data = data[:begin] + value.tobytes() + data[end:]
    meta = header["__metadata__"]
    meta["checksum"] = _model_file._checksum(meta, [data])
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data


def test_load_rejects_tampered_int8_tensors(digits):
    model, (x_train, _), _ = digits
    raw = io.dumps(quantize.int8(model, calibration=x_train[:128]))
    header, _ = _header(raw)
    assert header["layers.0.kernel_q"]["dtype"] == "I8" and "layers.0.kernel" not in header
    codes = np.zeros(header["layers.0.kernel_q"]["shape"], np.int8)
    codes[3, 5] = -128
    scales = np.ones(header["layers.2.kernel_scale"]["shape"], "<f4")
    cases = [
        ("layers.0.kernel_q", codes, "-128"),
        ("layers.2.kernel_scale", np.where(np.arange(scales.size) == 4, 0, scales).astype("<f4"), "kernel_scale"),
        ("layers.2.kernel_scale", np.full(scales.shape, np.nan, "<f4"), "kernel_scale"),
        ("layers.0.input_scale", np.float32([-1.0]), "input_scale"),
        ("layers.2.input_zero", np.int32([300]), "input_zero"),
    ]
    for name, value, message in cases:
        with pytest.raises(ValueError, match=message):
            io.loads(_rewrite(raw, name, value))
    io.loads(_rewrite(raw, "layers.0.kernel_q", np.clip(codes, -127, 127)))  # the same edit within range loads


def test_bad_input_names_the_argument(digits):
    model, (x_train, _), (x_test, y_test) = digits
    x = x_train[:64]
    cases = [
        (dict(calibration=np.where(np.arange(64) == 3, np.nan, x)), ValueError, "calibration contains NaN"),
        (dict(calibration=x[:, :10]), ValueError, "calibration has 10 features"),
        (dict(calibration=x[:0]), ValueError, "calibration is empty"),
        (dict(), ValueError, "calibration is required"),
        (dict(calibration=x, method="kl"), ValueError, "method must be one of"),
        (dict(calibration=x, max_accuracy_drop=0.01), ValueError, "max_accuracy_drop needs validation"),
        (dict(calibration=x, max_accuracy_drop=-0.1, validation=(x_test, y_test)), ValueError, "max_accuracy_drop"),
        (dict(calibration=x, validation=(x_test, y_test[:5])), ValueError, "validation y"),
        (dict(calibration=x, validation=x_test), ValueError, "validation must be a tuple"),
        (dict(calibration=x, percentile=120), ValueError, "percentile"),
        (dict(calibration=x, num_bins=10), ValueError, "num_bins"),
        (dict(calibration=x, per_channel="yes"), TypeError, "per_channel"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            quantize.int8(model, **kwargs)
    with pytest.raises(ValueError, match="not built"):
        quantize.int8(cm.Sequential([cm.layers.Dense(3)]), calibration=x)


def test_cli_quantize_prints_the_report_and_writes_the_model(tmp_path, capsys, digits):
    model, (x_train, _), _ = digits
    src, out, calib = tmp_path / "m.cml", tmp_path / "q.cml", tmp_path / "calib.npy"
    model.save(src)
    np.save(calib, x_train[:200])
    rc = cli.main(
        ["quantize", str(src), "--calibration", str(calib), "--method", "mse", "--per-tensor", "-o", str(out)]
    )
    text, err = capsys.readouterr()
    assert rc == 0, err
    assert "int8 quantization: mse, weights per tensor, inputs static" in text and str(out) in text
    loaded = cm.load(out)
    assert loaded._net.quantization(0)["w_scale"].shape == (1,)
    rc = cli.main(["quantize", str(src), "--dataset", "digits", "--dynamic", "-o", str(out)])
    text, err = capsys.readouterr()
    assert rc == 0, err
    assert "inputs dynamic" in text and "validation accuracy: float32" in text
    assert cm.load(out)._net.quantization(2)["in_scale"] == 0.0
    rc = cli.main(["quantize", str(src), "-o", str(out)])
    assert rc == 2 and "--calibration FILE.npy or --dataset NAME" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Quantization-aware training
# ---------------------------------------------------------------------------------------


def _fake_weights(w, per_channel):
    codes, scale = quantize.quantize_weights(w, per_channel)
    return codes.astype(np.float64) * scale


def _fake_input(x, lo, hi):
    scale, zero = quantize.activation_encoding(lo, hi)
    codes = reference.quantize(x, np.float32([scale]), [zero], dtype="uint8").astype(np.int64)
    return (codes - zero) * np.float64(np.float32(scale))


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_fake_quantized_training_step_uses_fake_operands_and_straight_through_gradients(device, per_channel):
    rng = np.random.default_rng(3)
    model = cm.Sequential(
        [cm.layers.Dense(7, activation="relu"), cm.layers.Dense(3)], input_dim=5, seed=2, device=device
    )
    lr = 0.1
    model.compile(optimizer=cm.optimizers.SGD(lr), loss="mse")
    w0, b0, w1, b1 = (w.astype(np.float64) for w in model.get_weights())
    b0 = rng.uniform(-0.3, 0.3, 7)
    model.layers[0].set_weights([w0.astype(np.float32), b0.astype(np.float32)])
    b0 = b0.astype(np.float32).astype(np.float64)
    for i in (0, 1):
        model._net.set_fake_quantization(i, per_channel, True, 0.5)
    x = rng.standard_normal((9, 5)).astype(np.float32)
    t = rng.standard_normal((9, 3)).astype(np.float32)

    # The forward pass on fake operands, in float64.
    x0 = _fake_input(x, min(x.min(), 0), max(x.max(), 0))
    f0 = _fake_weights(w0.astype(np.float32), per_channel)
    a0 = np.maximum(x0 @ f0 + b0, 0)
    a0_32 = a0.astype(np.float32)
    x1 = _fake_input(a0_32, 0.0, a0_32.max())
    f1 = _fake_weights(w1.astype(np.float32), per_channel)
    out = x1 @ f1 + b1
    # The backward pass: the fake kernels carry dx, the rounding passes gradients unchanged.
    d_out = 2 * (out - t) / out.size
    dw1, db1 = x1.T @ d_out, d_out.sum(axis=0)
    d_z0 = (d_out @ f1.T) * (a0 > 0)
    dw0, db0 = x0.T @ d_z0, d_z0.sum(axis=0)

    model._net.reset_metrics()
    model._net.train_batch(x, t, np.arange(9, dtype=np.int64))
    loss_sum, _, count = model._net.metrics()  # the step leaves its loss on the device
    loss = loss_sum / count
    # float32 forward and backward over at most 9 terms per sum: 1e-5 relative is ~100 ulp
    assert loss == pytest.approx(float(np.mean((out - t) ** 2)), rel=1e-5)
    got = model.get_weights()
    for name, before, after, grad in (
        ("w0", w0, got[0], dw0),
        ("b0", b0, got[1], db0),
        ("w1", w1, got[2], dw1),
        ("b1", b1, got[3], db1),
    ):
        step = (before - after) / lr
        # the update is lr * grad computed in float32 from weights of size ~1: compare the
        # recovered gradient to 1e-4 of its largest entry (float32 cancellation in
        # before - after costs ~1e-7 / (lr * |grad|) of it)
        np.testing.assert_allclose(step, grad, atol=1e-4 * np.abs(grad).max() + 1e-6, err_msg=name)
    lo, hi = model._net.fake_input_range(0)
    assert (lo, hi) == pytest.approx((min(x.min(), 0), max(x.max(), 0)))
    # the second batch moves the range halfway (momentum 0.5) to its own
    model._net.train_batch(x * 2, t, np.arange(9, dtype=np.int64))
    assert model._net.fake_input_range(0) == pytest.approx((1.5 * lo, 1.5 * hi))
    # inference is not fake-quantized: predict is the float model
    model._net.clear_fake_quantization(0)
    with pytest.raises(ValueError, match="not fake-quantized"):
        model._net.fake_input_range(0)


def test_qat_fine_tunes_a_copy_and_returns_an_int8_model(digits):
    model, (x_train, y_train), (x_test, y_test) = digits
    before = model.get_weights()
    qmodel = quantize.qat(model, x_train, y_train, epochs=2, learning_rate=1e-3, validation=(x_test, y_test))
    report = qmodel.quantization_report
    assert all(row["int8"] for row in report.layers)
    assert report.int8_accuracy >= model.evaluate(x_test, y_test)["accuracy"] - 0.01
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    _compare(qmodel, x_test)
    with pytest.raises(ValueError, match="momentum"):
        quantize.qat(model, x_train, y_train, momentum=1.0)
    with pytest.raises(ValueError, match="compiled"):
        quantize.qat(cm.Sequential([cm.layers.Dense(3)], input_dim=64), x_train, y_train)


def test_static_calibration_sees_the_preprocessed_input(device):
    # An int8 layer is never folded with the preprocessing: the executor quantizes the
    # normalized input, so that is what static calibration must see. Features around 200
    # with a spread of 50 normalize to about [-4, 4]; calibrated on the raw values instead,
    # every negative input would clip to the zero point.
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((600, 8)) * 50 + 200).astype(np.float32)
    norm = cm.layers.Normalization()
    norm.adapt(x)
    model = cm.Sequential(
        [norm, cm.layers.Dense(16, activation="relu"), cm.layers.Dense(2)], input_dim=8, device=device, seed=0
    )
    qmodel = quantize.int8(model, calibration=x)
    ref = model.predict(x)
    # two layers of 8-bit inputs and weights: a few percent of the output's spread
    err = np.abs(qmodel.predict(x) - ref).max() / np.abs(ref).max()
    assert err < 0.05, err


def test_refused_load_weights_leaves_the_model_unchanged(digits, tmp_path):
    # Every int8 tensor is checked before anything is written: a refused file changes nothing.
    model, (x_train, _), (x_test, _) = digits
    raw = io.dumps(quantize.int8(model, calibration=x_train[:128]))
    header, _ = _header(raw)
    codes = np.zeros(header["layers.2.kernel_q"]["shape"], np.int8)
    codes[0, 0] = -128
    target = io.loads(io.dumps(model))
    before = target.predict(x_test)
    path = tmp_path / "tampered.cml"
    path.write_bytes(_rewrite(raw, "layers.2.kernel_q", codes))
    with pytest.raises(ValueError, match="-128"):
        target.load_weights(path)
    np.testing.assert_array_equal(target.predict(x_test), before)
    assert all(target._net.quantization(i) is None for i in (0, 2))


def test_pruning_an_int8_model_is_refused(digits):
    model, (x_train, _), _ = digits
    qmodel = quantize.int8(model, calibration=x_train[:128])
    with pytest.raises(ValueError, match="int8: prune the float model"):
        cm.prune.magnitude(qmodel, 0.5)
    # nor may a file claim a pruned int8 layer
    raw = io.dumps(qmodel)
    header, data = _header(raw)
    meta = header["__metadata__"]
    meta["pruning"] = json.dumps({"layers": {"0": {"masked": True, "format": "csr", "min_batch": 1, "max_batch": 8}}})
    meta["checksum"] = _model_file._checksum(meta, [data])
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with pytest.raises(ValueError, match="int8"):
        io.loads(len(text).to_bytes(8, "little") + text + data)


def test_summary_says_how_each_layer_runs(digits):
    model, (x_train, _), _ = digits
    lines = []
    quantize.int8(model, calibration=x_train[:128], static=False).summary(print_fn=lines.append)
    assert any("(relu, int8 dynamic)" in line for line in lines)
    assert lines[-1] == "Trainable params: 0"  # fit refuses a quantized model
    pruned = io.loads(io.dumps(model))
    cm.prune.magnitude(pruned, 0.5, measure=False)
    pruned._net.set_sparse_format(0, "csr", 64, min_batch=8)
    lines = []
    pruned.summary(print_fn=lines.append)
    assert any("(relu, 50% pruned, csr for batch 8-64)" in line for line in lines), lines
