"""customml.quantize.bf16: the bf16 model against the bf16 op layer by layer (the same kernel,
bit for bit), against the float model within the bf16 rounding, save / load (format version
4, BF16 kernels), ONNX export run in onnxruntime, and what bf16 models refuse: training,
int8 models, devices without a bf16 product.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import customml as cm
import reference
from customml import _core, _model_file, io, ops, quantize
from support import U32, assert_close, assert_same_bits


def _digits_model(device="cpu", seed=1):
    (x_train, y_train), (x_test, y_test) = cm.datasets.load("digits")
    model = cm.Sequential(
        [cm.layers.Dense(64, activation="relu"), cm.layers.Dropout(0.1), cm.layers.Dense(10)],
        input_dim=64,
        seed=seed,
        device=device,
    )
    model.compile(optimizer=cm.optimizers.Adam(3e-3), loss="softmax_cross_entropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=10, batch_size=64, verbose=0)
    return model, (x_test, y_test)


@pytest.fixture(scope="module")
def digits():
    return _digits_model()


def _header(raw: bytes) -> dict:
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n])


def _chain(model, x):
    """The bf16 op applied layer by layer with the model's weights (dropout skipped)."""
    cur = x
    for layer in model.layers:
        if isinstance(layer, cm.layers.Dense):
            kernel, bias = layer.get_weights()
            cur = ops.dense_forward_bf16(cur, ops.to_bf16(kernel), bias, activation=layer.activation)
    return cur


def test_predict_is_the_bf16_op_layer_by_layer(digits):
    model, (x, _) = digits
    q = quantize.bf16(model)
    assert q is not model and all(q._net.bf16(i) for i in (0, 2))
    assert not model._net.bf16(0)  # the float model is unchanged
    for rows in (x, x[:1], x[:7]):
        assert_same_bits(q.predict(rows), _chain(q, rows), f"predict of {len(rows)} rows")


def test_kernels_are_rounded_biases_kept(digits):
    model, _ = digits
    q = quantize.bf16(model)
    for i in (0, 2):
        k, b = model.layers[i].get_weights()
        qk, qb = q.layers[i].get_weights()
        np.testing.assert_array_equal(qk, reference.bf16_to_float(reference.to_bf16(k)))
        np.testing.assert_array_equal(qb, b)
    # A write rounds again: the layer's weights stay bf16 values.
    k, b = q.layers[0].get_weights()
    q.layers[0].set_weights([k + np.float32(1e-4), b])
    k2 = q.layers[0].get_weights()[0]
    np.testing.assert_array_equal(k2, reference.bf16_to_float(reference.to_bf16(k + np.float32(1e-4))))


def test_close_to_the_float_model(digits):
    """Each layer's input and kernel are rounded to bf16 (relative error at most 2**-9 each,
    so 2**-8 on each product to first order), then summed in float32: per layer the error is
    at most 2**-8 |x| |W| (plus the float32 sums), carried through relu (1-Lipschitz) and the
    next layer's |W|."""
    model, (x, _) = digits
    q = quantize.bf16(model)
    (k1, _), (k2, _) = model.layers[0].get_weights(), model.layers[2].get_weights()
    ax, a1, a2 = np.abs(x.astype(np.float64)), np.abs(k1.astype(np.float64)), np.abs(k2.astype(np.float64))
    u = 2.0**-8 + 4 * 64 * U32
    hidden = np.maximum(x.astype(np.float64) @ k1 + model.layers[0].get_weights()[1], 0)
    e1 = u * (ax @ a1)
    tol = 1.01 * ((e1 @ a2) + u * ((np.abs(hidden) + e1) @ a2))
    assert_close(q.predict(x), model.predict(x), tol, "bf16 vs float logits")


def test_save_load_is_bit_exact_and_half_the_weight_bytes(digits, tmp_path):
    model, (x, _) = digits
    q = quantize.bf16(model)
    path = tmp_path / "q.cml"
    q.save(path)
    loaded = cm.load(path)
    assert loaded._net.bf16(0) and loaded._net.bf16(2)
    assert_same_bits(loaded.predict(x), q.predict(x), "reloaded predict")
    raw = path.read_bytes()
    header = _header(raw)
    meta = header["__metadata__"]
    assert meta["format_version"] == "4"
    arch = json.loads(meta["architecture"])
    assert arch["layers"][0]["kernel_dtype"] == "bf16" and "kernel_dtype" not in arch["layers"][1]
    assert header["layers.0.kernel"]["dtype"] == "BF16" and header["layers.0.kernel"]["shape"] == [64, 64]
    assert header["layers.0.bias"]["dtype"] == "F32"
    # The BF16 kernels follow every 4-byte tensor.
    ends = {name: t["data_offsets"] for name, t in header.items() if name != "__metadata__"}
    assert min(ends["layers.0.kernel"][0], ends["layers.2.kernel"][0]) >= ends["layers.2.bias"][1]
    model.save(tmp_path / "f.cml")
    assert len(raw) < 0.6 * (tmp_path / "f.cml").stat().st_size
    # A float model still writes the older version.
    assert _header(io.dumps(model))["__metadata__"]["format_version"] != "4"


def _with_metadata(raw: bytes, key: str, value: str) -> bytes:
    """The file with one metadata entry replaced and the checksum recomputed (what a buggy
    writer produces, which the checksum cannot catch)."""
    n = struct.unpack("<Q", raw[:8])[0]
    header, data = json.loads(raw[8 : 8 + n]), raw[8 + n :]
    meta = header["__metadata__"]
    meta[key] = value
    meta["checksum"] = _model_file._checksum(meta, [data])
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data


def test_the_reader_refuses_a_bad_kernel_dtype_or_a_pruned_bf16_layer(digits):
    model, _ = digits
    raw = io.dumps(quantize.bf16(model))
    meta = _header(raw)["__metadata__"]
    arch = json.loads(meta["architecture"])
    arch["layers"][0]["kernel_dtype"] = "f16"
    with pytest.raises(ValueError, match='kernel_dtype must be "bf16"'):
        io.loads(_with_metadata(raw, "architecture", json.dumps(arch)))
    pruning = {"layers": {"0": {"masked": True, "format": "csr", "min_batch": 1, "max_batch": 8}}}
    with pytest.raises(ValueError, match="layer 0, which is bf16"):
        io.loads(_with_metadata(raw, "pruning", json.dumps(pruning)))
    with pytest.raises(ValueError, match="is bf16: prune the float model"):
        cm.prune.magnitude(quantize.bf16(model), sparsity=0.5)


def test_onnx_export_matches_in_onnxruntime(digits, tmp_path):
    """The exported graph rounds the inputs and holds the kernels as bf16 too: the same exact
    products, summed in onnxruntime's order. Per layer the sums differ by at most 2 k u S
    (S = sum |x w|); a hidden value that differs may round to a neighbouring bf16 value in
    the next layer's input cast (2**-8 relative), carried by |W2|."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model, (x, _) = digits
    q = quantize.bf16(model)
    path = tmp_path / "q.onnx"
    q.export_onnx(path)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    (k1, b1), (k2, _) = q.layers[0].get_weights(), q.layers[2].get_weights()
    xb = reference.bf16_to_float(reference.to_bf16(x)).astype(np.float64)
    hidden = np.abs(reference.dense_forward_bf16(x, ops.to_bf16(k1), b1, activation="relu"))
    e1 = 2 * 64 * U32 * (np.abs(xb) @ np.abs(k1)) + 2 * 64 * 2.0**-126
    tol = 1.01 * ((e1 + 2.0**-8 * hidden) @ np.abs(k2) + 2 * 64 * U32 * (hidden @ np.abs(k2)))
    assert_close(out, q.predict(x), tol, "onnxruntime vs predict")


def test_what_bf16_models_refuse(digits):
    model, (x, y) = digits
    q = quantize.bf16(model)
    with pytest.raises(RuntimeError, match=r"\[fit\] a quantized model cannot be trained"):
        q.fit(x, y, epochs=1, verbose=0)
    int8 = quantize.int8(model, calibration=x[:64])
    with pytest.raises(ValueError, match=r"\[quantize.bf16\] layer 0 .* is int8"):
        quantize.bf16(int8)
    with pytest.raises(ValueError, match=r"\[quantize.bf16\] the model is not built"):
        quantize.bf16(cm.Sequential([cm.layers.Dense(3)]))


@pytest.mark.skipif(not _core.build_info()["simt_emulation"], reason="built without the SIMT emulation")
def test_cuda_emulated_refuses_bf16_models(digits, tmp_path):
    """The CUDA-model devices have no bf16 product: quantizing there, or loading a bf16 file
    there, is a ValueError that says so."""
    model, _ = digits
    with pytest.raises(ValueError, match=r"\[set_bf16\] bf16 Dense layers are not supported on device 'cuda-emulated'"):
        quantize.bf16(io.loads(io.dumps(model), device="cuda-emulated"))
    quantize.bf16(model).save(tmp_path / "q.cml")
    with pytest.raises(ValueError, match="not supported on device 'cuda-emulated'"):
        cm.load(tmp_path / "q.cml", device="cuda-emulated")


def test_pruned_model_keeps_its_zeros(digits):
    model, (x, _) = digits
    p = io.loads(io.dumps(model))
    cm.prune.magnitude(p, sparsity=0.8)
    q = quantize.bf16(p)
    k = q.layers[0].get_weights()[0]
    assert (k[p.layers[0].get_weights()[0] == 0] == 0).all()
    assert not q._masks
    assert_same_bits(q.predict(x[:5]), _chain(q, x[:5]), "pruned bf16 predict")
