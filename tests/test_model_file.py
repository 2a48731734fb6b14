"""The C++ model-file reader (cpp/model_file.*), which customml.io and the C runtime both
use: every kind of model read back through it exactly, its SHA-256 against hashlib, and
the hostile files of the reliability issue (#20, item 3) refused with a ValueError naming
the file and the field before anything is allocated. The corrupt-file cases that predate
the C++ reader are in test_io.py, unchanged."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import customml as cm
from customml import _core, _model_file
from model_kinds import KINDS, data


def _split(raw: bytes):
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _reseal(header: dict, data_section: bytes) -> bytes:
    meta = header["__metadata__"]
    meta["checksum"] = _model_file._checksum(meta, [data_section])
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data_section


def _edit_architecture(raw: bytes, change) -> bytes:
    header, data_section = _split(raw)
    arch = json.loads(header["__metadata__"]["architecture"])
    change(arch)
    header["__metadata__"]["architecture"] = json.dumps(arch)
    return _reseal(header, data_section)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_of_model_reads_back_exactly(kind, tmp_path):
    model = KINDS[kind]()
    path = tmp_path / "m.cml"
    model.save(path, include_optimizer=model._net.compiled)
    f = _core.read_model_file(str(path))
    assert f["architecture"]["input_dim"] == model.input_dim
    dense = [i for i, layer in enumerate(model.layers) if isinstance(layer, cm.layers.Dense)]
    assert sorted(f["layers"]) == dense
    for i in dense:
        q = model._net.quantization(i)
        layer = f["layers"][i]
        if q is not None:
            assert layer["w_q"].tobytes() == q["w_q"].tobytes()
            assert layer["w_scale"].tobytes() == q["w_scale"].tobytes()
            assert (layer["in_scale"], layer["in_zero"]) == (q["in_scale"], q["in_zero"])
        else:
            kernel = model._net.read_params(model._net.weight_offsets[i], layer["kernel"].size)
            assert layer["kernel"].tobytes() == kernel.tobytes()
            assert ("keep" in layer) == (i in model._masks)
        assert (layer["format"], layer["max_batch"]) == tuple(model._net.sparse_format(i))
    loaded = cm.load(path)
    x = data()[0]
    for rows in (1, 5, 64):
        assert loaded.predict(x[:rows]).tobytes() == model.predict(x[:rows]).tobytes()
    assert cm.io.dumps(loaded, include_optimizer=model._net.compiled) == path.read_bytes()


@pytest.mark.parametrize("size", [0, 1, 55, 56, 63, 64, 65, 1000, 100_000])
def test_sha256_matches_hashlib(size):
    payload = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert _core._sha256_hex(payload) == hashlib.sha256(payload).hexdigest()


@pytest.fixture(scope="module")
def pruned_file() -> bytes:
    model = cm.Sequential([cm.layers.Dense(3, "relu"), cm.layers.Dense(2)], input_dim=4, seed=0)
    cm.prune.magnitude(model, 0.5, measure=False)
    return cm.io.dumps(model)


def _set_input_dim(value):
    def change(arch):
        arch["input_dim"] = value

    return change


def test_a_pruned_file_cannot_declare_a_huge_layer(pruned_file):
    """Pruned kernels are stored compressed, so a few bytes can declare any dense shape:
    the parameter ceiling refuses it before anything is allocated (the old reader
    raised MemoryError: std::bad_alloc, naming neither the file nor the field)."""
    raw = _edit_architecture(pruned_file, _set_input_dim(10**8))
    with pytest.raises(ValueError, match=r"^<bytes>: architecture layer 0: units 3 with 100000000 inputs .* ceiling"):
        cm.io.loads(raw)


def test_the_parameter_ceiling_is_configurable(pruned_file, monkeypatch):
    raw = _edit_architecture(pruned_file, _set_input_dim(1000))  # 3003 parameters in layer 0
    monkeypatch.setenv("CUSTOMML_MAX_PARAMS", "3000")
    with pytest.raises(ValueError, match="more than 3000 parameters.*CUSTOMML_MAX_PARAMS"):
        cm.io.loads(raw)
    monkeypatch.setenv("CUSTOMML_MAX_PARAMS", "-1")
    with pytest.raises(ValueError, match="CUSTOMML_MAX_PARAMS must be a positive integer"):
        cm.io.loads(raw)
    monkeypatch.setenv("CUSTOMML_MAX_PARAMS", "10000")
    # within the ceiling the file is valid: its compressed kernel names inputs 0 to 3 of 1000
    monkeypatch.setenv("CUSTOMML_MAX_PARAMS", "3011")
    assert cm.io.loads(raw).input_dim == 1000


@pytest.mark.parametrize("value", [2**62, 2**63 - 1, 2**64 - 1])
def test_size_products_cannot_overflow(pruned_file, value):
    with pytest.raises(ValueError, match=r"^<bytes>: architecture (layer 0: units 3 with \d+ inputs|input_dim)"):
        cm.io.loads(_edit_architecture(pruned_file, _set_input_dim(value)))


def test_a_huge_integer_names_its_field(pruned_file):
    header, data_section = _split(pruned_file)
    arch = header["__metadata__"]["architecture"]
    header["__metadata__"]["architecture"] = arch.replace('"input_dim":4', '"input_dim":' + "9" * 5000)
    with pytest.raises(ValueError, match=r"^<bytes>: architecture holds a number too large .*'input_dim'"):
        cm.io.loads(_reseal(header, data_section))


@pytest.mark.parametrize("scale", [1e-45, 1e-39, 0.0, -0.0])
def test_subnormal_and_zero_int8_scales_are_refused(scale):
    model = cm.Sequential([cm.layers.Dense(4, "relu"), cm.layers.Dense(2)], input_dim=3, seed=0)
    x = data(d=3)[0]
    raw = cm.io.dumps(cm.quantize.int8(model, calibration=x))
    for name in ("layers.0.input_scale", "layers.1.kernel_scale"):
        header, data_section = _split(raw)
        begin, end = header[name]["data_offsets"]
        count = (end - begin) // 4
        edited = data_section[:begin] + np.full(count, scale, "<f4").tobytes() + data_section[end:]
        with pytest.raises(ValueError, match=f"^<bytes>: tensor '{name}'"):
            cm.io.loads(_reseal(header, edited))
