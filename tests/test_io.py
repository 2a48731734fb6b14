"""Model files (customml.io): save / load / load_weights, resuming training, and the
refusal of every malformed file with a ValueError that names the problem.

Round trips and resumed training are compared bit for bit (``tobytes``): a file holds
the exact float32 values, so no tolerance applies anywhere in this file.

The corrupt-file tests edit a real file's header and data with the helpers below,
which follow the safetensors layout and the checksum definition documented in
``customml/io.py`` independently of its code, so a crafted file with a correct checksum
reaches the deeper checks (names, shapes, offsets, configuration).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import customml as cm
from customml import io as cmio

try:
    import safetensors.numpy as st_numpy
    from safetensors import safe_open
except ImportError:  # in the test extra; the interop tests say so when it is absent
    st_numpy = None


# ------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------


def _data(n=97, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int32)
    return x, y


def _bits(model) -> list:
    return [w.tobytes() for w in model.get_weights()]


def _split(raw: bytes):
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _join(header: dict, data: bytes) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data


def _reseal(header: dict, data: bytes) -> bytes:
    """The file with its checksum recomputed as documented: SHA-256 of each metadata
    entry but the checksum (sorted by key, key NUL value NUL), then the data section."""
    meta = header["__metadata__"]
    h = hashlib.sha256()
    for key in sorted(meta):
        if key != "checksum":
            h.update(key.encode() + b"\0" + meta[key].encode() + b"\0")
    h.update(data)
    meta["checksum"] = "sha256:" + h.hexdigest()
    return _join(header, data)


def _small_model(compiled=True) -> cm.Sequential:
    model = cm.Sequential(
        [cm.layers.Dense(3, activation="relu"), cm.layers.Dropout(0.5), cm.layers.Dense(2)], input_dim=2, seed=4
    )
    if compiled:
        model.compile(cm.optimizers.Adam(1e-2), "softmax_cross_entropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> bytes:
    """The bytes of a small valid file with optimizer state (a fit has run)."""
    path = tmp_path_factory.mktemp("good") / "small.cml"
    model = _small_model()
    x, y = _data(n=16, d=2, classes=2)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.save(path, include_optimizer=True)
    return path.read_bytes()


def _refused(tmp_path, raw: bytes, match: str) -> None:
    path = tmp_path / "bad.cml"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=match):
        cm.load(path)


def _edit(good: bytes, change) -> bytes:
    """The good file with change(header, data) applied and the checksum recomputed."""
    header, data = _split(good)
    data = change(header, data) or data
    return _reseal(header, data)


# ------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------

# id: (layers, loss, optimizer, metrics, outputs)
CASES = {
    "relu-dropout-softmax-adam": (
        lambda: [cm.layers.Dense(16, activation="relu"), cm.layers.Dropout(0.25), cm.layers.Dense(3)],
        cm.losses.SoftmaxCrossEntropy(label_smoothing=0.1, class_weights=[1.0, 2.0, 0.5]),
        lambda: cm.optimizers.Adam(3e-3, weight_decay=1e-4, clipnorm=1.0),
        ["accuracy"],
        3,
    ),
    "gelu-tanh-bce-sgd-nesterov": (
        lambda: [
            cm.layers.Dense(8, activation="gelu", kernel_initializer="he_normal"),
            cm.layers.Dense(5, activation="tanh", name="middle"),
            cm.layers.Dense(1),
        ],
        "binary_cross_entropy",
        lambda: cm.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        [],
        1,
    ),
    "sigmoid-identity-mse-adamw-amsgrad": (
        lambda: [
            cm.layers.Dense(7, activation="sigmoid"),
            cm.layers.Dropout(0.1),
            cm.layers.Dense(4, activation="linear"),
        ],
        "mse",
        lambda: cm.optimizers.AdamW(1e-2, amsgrad=True),
        [],
        4,
    ),
    "plain-sgd": (lambda: [cm.layers.Dense(4)], "softmax_cross_entropy", lambda: cm.optimizers.SGD(0.1), [], 4),
}


def _case_model(case, seed=3):
    layers, loss, opt, metrics, _ = CASES[case]
    model = cm.Sequential(layers(), input_dim=6, seed=seed, name=f"model-{case}")
    model.compile(opt(), loss, metrics=metrics)
    return model


def _case_data(case, n=97):
    out = CASES[case][4]
    x, y = _data(n=n, classes=max(out, 2))
    if CASES[case][1] == "mse":
        y = np.random.default_rng(1).standard_normal((n, out)).astype(np.float32)
    return x, y


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_is_bit_exact(case, tmp_path):
    model = _case_model(case)
    x, y = _case_data(case)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / "m.cml"
    model.save(path)
    loaded = cm.load(path)
    assert isinstance(loaded, cm.Sequential)
    assert (loaded.input_dim, loaded.output_dim, loaded.seed, loaded.name, loaded.device) == (
        model.input_dim,
        model.output_dim,
        model.seed,
        model.name,
        "cpu",
    )
    assert repr(loaded.layers) == repr(model.layers)  # kinds, units, activations, rates, names
    assert [getattr(a, "kernel_initializer", None) for a in loaded.layers] == [
        getattr(a, "kernel_initializer", None) for a in model.layers
    ]
    assert _bits(loaded) == _bits(model)
    assert loaded.predict(x).tobytes() == model.predict(x).tobytes()
    # the compile configuration: the same objects, so evaluate agrees exactly
    assert repr(loaded._optimizer) == repr(model._optimizer) and loaded._optimizer.clipnorm == model._optimizer.clipnorm
    assert type(loaded._loss) is type(model._loss) and vars(loaded._loss) == vars(model._loss)
    assert loaded._metrics == model._metrics
    assert loaded.evaluate(x, y) == model.evaluate(x, y)
    # without include_optimizer, training starts afresh
    assert loaded._net.step == 0 and loaded.epochs_trained == 0


def test_uncompiled_model_round_trips(tmp_path):
    model = _small_model(compiled=False)
    model.save(tmp_path / "m.cml")
    loaded = cm.load(tmp_path / "m.cml")
    assert _bits(loaded) == _bits(model) and loaded._loss is None and loaded._optimizer is None
    with pytest.raises(ValueError, match="compiled"):
        model.save(tmp_path / "n.cml", include_optimizer=True)


def test_non_finite_weights_round_trip_bit_exact(tmp_path):
    """A diverged model is saved and loaded as it is (NaN payloads included), not refused."""
    model = _small_model()
    kernel = model.layers[0].get_weights()[0]
    kernel.view(np.uint32)[0, 0] = 0x7FC01234  # a NaN with a payload
    kernel[1, 1] = -np.inf
    model._net.write_params(model._net.weight_offsets[0], kernel.ravel())
    model.save(tmp_path / "m.cml")
    assert _bits(cm.load(tmp_path / "m.cml")) == _bits(model)


def test_save_needs_a_built_model(tmp_path):
    with pytest.raises(ValueError, match="not built"):
        cm.Sequential([cm.layers.Dense(2)]).save(tmp_path / "m.cml")
    assert not (tmp_path / "m.cml").exists()


def test_load_device(tmp_path):
    _small_model().save(tmp_path / "m.cml")
    assert cm.load(tmp_path / "m.cml", device="cpu").device == "cpu"
    with pytest.raises(ValueError, match="device"):
        cm.load(tmp_path / "m.cml", device="tpu")
    with pytest.raises(TypeError, match="device"):
        cm.load(tmp_path / "m.cml", device=0)


def test_saving_is_deterministic_and_str_paths_work(tmp_path):
    model = _small_model()
    model.save(tmp_path / "a.cml", include_optimizer=True)
    model.save(str(tmp_path / "b.cml"), include_optimizer=True)
    assert (tmp_path / "a.cml").read_bytes() == (tmp_path / "b.cml").read_bytes()
    assert _bits(cm.load(str(tmp_path / "b.cml"))) == _bits(model)


def test_dumps_and_loads_in_memory(tmp_path):
    """dumps is exactly what save writes; loads makes load's checks, naming "<bytes>"."""
    model = _small_model()
    model.save(tmp_path / "m.cml", include_optimizer=True)
    raw = cmio.dumps(model, include_optimizer=True)
    assert raw == (tmp_path / "m.cml").read_bytes()
    loaded = cmio.loads(raw)
    assert _bits(loaded) == _bits(model) and loaded._net.step == model._net.step
    assert _bits(cmio.loads(bytearray(cmio.dumps(model)))) == _bits(model)
    with pytest.raises(ValueError, match="^<bytes>: checksum mismatch"):
        cmio.loads(raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(ValueError, match="^<bytes>: the file is 3 bytes long"):
        cmio.loads(b"abc")
    with pytest.raises(TypeError, match="must be bytes"):
        cmio.loads(str(tmp_path / "m.cml"))


def test_file_layout(good):
    """The documented layout: the header padded to 8 bytes, the metadata, the tensor
    names in layer order, little-endian float32 back to back."""
    n = int.from_bytes(good[:8], "little")
    assert n % 8 == 0
    header, data = _split(good)
    meta = header.pop("__metadata__")
    assert meta["format"] == "customml" and meta["format_version"] == "1"
    assert meta["customml_version"] == cm.__version__
    assert meta["checksum"].startswith("sha256:") and len(meta["checksum"]) == 7 + 64
    assert json.loads(meta["preprocessing"]) == []
    arch = json.loads(meta["architecture"])
    assert arch == {
        "name": "sequential",
        "input_dim": 2,
        "seed": 4,
        "layers": [
            {
                "kind": "dense",
                "name": "dense",
                "units": 3,
                "activation": "relu",
                "kernel_initializer": "glorot_uniform",
            },
            {"kind": "dropout", "name": "dropout", "rate": 0.5},
            {
                "kind": "dense",
                "name": "dense_1",
                "units": 2,
                "activation": "identity",
                "kernel_initializer": "glorot_uniform",
            },
        ],
    }
    assert json.loads(meta["training"])["optimizer"]["class"] == "Adam"
    assert json.loads(meta["optimizer_state"]) == {"step": 2, "epochs_trained": 1, "slots": ["m", "v"]}
    params = ["layers.0.kernel", "layers.0.bias", "layers.2.kernel", "layers.2.bias"]
    assert list(header) == params + [f"optimizer.{s}.{p}" for s in ("m", "v") for p in params]
    begin = 0
    for name, entry in header.items():
        size = 4 * int(np.prod(entry["shape"]))
        assert entry["dtype"] == "F32" and entry["data_offsets"] == [begin, begin + size], name
        begin += size
    assert begin == len(data)
    assert header["layers.0.kernel"]["shape"] == [2, 3] and header["layers.2.bias"]["shape"] == [2]


@pytest.mark.skipif(st_numpy is None, reason='safetensors is not installed (pip install ".[test]")')
def test_files_are_standard_safetensors(tmp_path):
    """Any safetensors reader reads our files, and its metadata carries the architecture."""
    model = _case_model("relu-dropout-softmax-adam")
    model.save(tmp_path / "m.cml")
    tensors = st_numpy.load_file(str(tmp_path / "m.cml"))
    assert sorted(tensors) == ["layers.0.bias", "layers.0.kernel", "layers.2.bias", "layers.2.kernel"]
    for i in (0, 2):
        kernel, bias = model.layers[i].get_weights()
        assert tensors[f"layers.{i}.kernel"].dtype == np.float32
        assert tensors[f"layers.{i}.kernel"].tobytes() == kernel.tobytes()
        assert tensors[f"layers.{i}.bias"].tobytes() == bias.tobytes()
    with safe_open(str(tmp_path / "m.cml"), framework="numpy") as f:
        assert f.metadata()["format"] == "customml"


@pytest.mark.skipif(st_numpy is None, reason='safetensors is not installed (pip install ".[test]")')
def test_foreign_safetensors_files_are_refused(tmp_path):
    path = str(tmp_path / "foreign.safetensors")
    st_numpy.save_file({"weight": np.ones((2, 3), np.float32)}, path)
    with pytest.raises(ValueError, match="not a customml model file"):
        cm.load(path)
    st_numpy.save_file({"weight": np.ones((2, 3), np.float32)}, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not a customml model file.*'pt'"):
        cm.load(path)


# A file saved by customml 0.1.0 (format version 1), committed so that every later
# version is tested to load it: _golden_model().save(path, include_optimizer=True).
GOLDEN = os.path.join(os.path.dirname(__file__), "data", "model_v1.cml")


def _golden_model() -> cm.Sequential:
    model = cm.Sequential(
        [
            cm.layers.Dense(4, activation="gelu", name="hidden"),
            cm.layers.Dropout(0.2),
            cm.layers.Dense(3, activation="sigmoid", kernel_initializer="he_normal"),
        ],
        input_dim=5,
        seed=11,
        name="golden",
    )
    model.compile(
        cm.optimizers.AdamW(2e-3, weight_decay=0.05, amsgrad=True, clipnorm=2.5),
        cm.losses.SoftmaxCrossEntropy(label_smoothing=0.05),
        metrics=["accuracy"],
    )
    n = model.count_params()
    model._net.write_params(0, (np.arange(n, dtype=np.float32) - 20) / 16)  # exact in float32
    for slot in range(3):
        model._net.write_state(slot, 0, np.arange(n, dtype=np.float32) * (slot + 1) / 64)
    model._net.set_step(7)
    model._epoch = 3
    return model


def test_files_of_format_version_1_load():
    model = cm.load(GOLDEN)
    want = _golden_model()
    assert repr(model.layers) == repr(want.layers) and (model.name, model.seed) == ("golden", 11)
    assert _bits(model) == _bits(want)
    assert repr(model._optimizer) == repr(want._optimizer) and model._optimizer.clipnorm == 2.5
    assert vars(model._loss) == vars(want._loss) and model._metrics == ("accuracy",)
    assert (model._net.step, model.epochs_trained) == (7, 3)
    for slot in range(3):
        assert (
            model._net.read_state(slot, 0, want.count_params()).tobytes()
            == want._net.read_state(slot, 0, want.count_params()).tobytes()
        )


# ------------------------------------------------------------------------------------
# Resuming training
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_resume_from_file_continues_bit_exactly(case, tmp_path):
    """4 epochs straight == 2 epochs + save(include_optimizer=True) + load + 2 epochs:
    the weights, the optimizer state (Adam moments, SGD velocity), the step count (bias
    correction, dropout masks) and the shuffle order all continue."""
    x, y = _case_data(case)
    kw = dict(batch_size=16, validation_split=0.2, verbose=0)
    straight = _case_model(case)
    full = straight.fit(x, y, epochs=4, **kw)

    first = _case_model(case)
    first.fit(x, y, epochs=2, **kw)
    first.save(tmp_path / "ckpt.cml", include_optimizer=True)
    resumed = cm.load(tmp_path / "ckpt.cml")
    assert resumed.epochs_trained == 2 and resumed._net.step == first._net.step
    rest = resumed.fit(x, y, epochs=2, **kw)
    assert _bits(resumed) == _bits(straight)
    assert rest.history == {k: v[2:] for k, v in full.history.items()}
    for slot in range(straight._net.state_slots):
        n = straight.count_params()
        assert resumed._net.read_state(slot, 0, n).tobytes() == straight._net.read_state(slot, 0, n).tobytes()


def test_save_load_and_resume_on_each_device(device, tmp_path):
    """The same file on every device (conftest's ``device``): load(path, device=) gives
    the saved bytes, and resuming there equals training straight there."""

    def model():
        layers, loss, opt, metrics, _ = CASES["relu-dropout-softmax-adam"]
        m = cm.Sequential(layers(), input_dim=6, seed=3, device=device)
        m.compile(opt(), loss, metrics=metrics)
        return m

    x, y = _case_data("relu-dropout-softmax-adam")
    straight, first = model(), model()
    straight.fit(x, y, epochs=4, batch_size=16, verbose=0)
    first.fit(x, y, epochs=2, batch_size=16, verbose=0)
    first.save(tmp_path / "ckpt.cml", include_optimizer=True)
    resumed = cm.load(tmp_path / "ckpt.cml", device=device)
    assert resumed.device == device and _bits(resumed) == _bits(first)
    assert _bits(cm.load(tmp_path / "ckpt.cml", device="cpu")) == _bits(first)  # files are device-free
    resumed.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert _bits(resumed) == _bits(straight)


def test_successive_fits_equal_one_fit_with_shuffling_and_dropout():
    x, y = _case_data("relu-dropout-softmax-adam")
    a, b = _case_model("relu-dropout-softmax-adam"), _case_model("relu-dropout-softmax-adam")
    a.fit(x, y, epochs=3, batch_size=16, verbose=0)
    for _ in range(3):
        b.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert _bits(a) == _bits(b) and a.epochs_trained == b.epochs_trained == 3


def test_resume_with_keras_initial_epoch(tmp_path):
    # fit(epochs=E, initial_epoch=I): E is the last epoch's index (Keras), so the resumed
    # run trains epochs 2 and 3 and ends where 4 straight epochs end, bit for bit.
    x, y = _case_data("relu-dropout-softmax-adam")
    kw = dict(batch_size=16, verbose=0)
    straight = _case_model("relu-dropout-softmax-adam")
    straight.fit(x, y, epochs=4, **kw)
    first = _case_model("relu-dropout-softmax-adam")
    first.fit(x, y, epochs=2, **kw)
    first.save(tmp_path / "ckpt.cml", include_optimizer=True)
    resumed = cm.load(tmp_path / "ckpt.cml")
    history = resumed.fit(x, y, epochs=4, initial_epoch=resumed.epochs_trained, **kw)
    assert len(history.history["loss"]) == 2 and resumed.epochs_trained == 4
    assert _bits(resumed) == _bits(straight)
    with pytest.raises(ValueError, match="initial_epoch"):
        resumed.fit(x, y, epochs=3, initial_epoch=5, **kw)


def test_resume_without_optimizer_state_starts_afresh(tmp_path):
    """The state matters: a file saved without it resumes differently (and compile resets)."""
    x, y = _case_data("relu-dropout-softmax-adam")
    straight, first = _case_model("relu-dropout-softmax-adam"), _case_model("relu-dropout-softmax-adam")
    straight.fit(x, y, epochs=4, batch_size=16, verbose=0)
    first.fit(x, y, epochs=2, batch_size=16, verbose=0)
    first.save(tmp_path / "w.cml")
    weights_only = cm.load(tmp_path / "w.cml")
    weights_only.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert _bits(weights_only) != _bits(straight)
    first.compile("adam")
    assert first.epochs_trained == 0 and first._net.step == 0


def test_optimizer_state_accessors():
    """Network.state_slots / read_state / write_state / set_step: slots per optimizer,
    range checks as read_params / write_params, and compile resetting them."""
    model = _small_model(compiled=False)
    net, n = model._net, model.count_params()
    assert net.state_slots == 0
    with pytest.raises(IndexError, match="slot 0 is outside \\[0, 0\\) \\(the network is not compiled\\)"):
        net.read_state(0, 0, 1)
    with pytest.raises(ValueError, match="set_step needs a compiled network"):
        net.set_step(1)
    for opt, slots in (
        (cm.optimizers.SGD(0.1), 0),
        (cm.optimizers.SGD(0.1, momentum=0.9), 1),
        (cm.optimizers.Adam(), 2),
        (cm.optimizers.AdamW(amsgrad=True), 3),
    ):
        model.compile(opt, "softmax_cross_entropy")
        assert net.state_slots == slots, opt
    values = np.arange(n, dtype=np.float32) - 7.5
    net.write_state(2, 0, values)
    net.write_state(1, 3, values[:4])
    assert net.read_state(2, 0, n).tobytes() == values.tobytes()
    assert net.read_state(1, 0, n)[3:7].tobytes() == values[:4].tobytes() and not net.read_state(1, 0, n)[7:].any()
    for slot, offset, count in ((3, 0, 1), (-1, 0, 1), (0, -1, 1), (0, n - 1, 2), (0, 0, n + 1)):
        with pytest.raises(IndexError, match="outside"):
            net.read_state(slot, offset, count)
    with pytest.raises(IndexError, match="outside"):
        net.write_state(0, n, values[:1])
    net.set_step(12)
    assert net.step == 12
    with pytest.raises(ValueError, match="step must be >= 0"):
        net.set_step(-1)
    model.compile(cm.optimizers.AdamW(amsgrad=True), "softmax_cross_entropy")  # compile resets it all
    assert net.step == 0 and not net.read_state(2, 0, n).any()


# ------------------------------------------------------------------------------------
# load_weights
# ------------------------------------------------------------------------------------


def test_load_weights_into_the_same_architecture(tmp_path):
    source = _case_model("relu-dropout-softmax-adam", seed=1)
    source.save(tmp_path / "m.cml", include_optimizer=True)
    target = _case_model("relu-dropout-softmax-adam", seed=2)
    x, y = _case_data("relu-dropout-softmax-adam")
    target.fit(x, y, epochs=1, verbose=0)
    step, m = target._net.step, target._net.read_state(0, 0, target.count_params())
    target.load_weights(tmp_path / "m.cml")
    assert _bits(target) == _bits(source)
    # the target's own optimizer state and step are kept
    assert target._net.step == step and target._net.read_state(0, 0, target.count_params()).tobytes() == m.tobytes()
    # an unbuilt model is built for the file's input size; activations may differ
    fresh = cm.Sequential([cm.layers.Dense(16, activation="tanh"), cm.layers.Dropout(0.5), cm.layers.Dense(3)])
    fresh.load_weights(tmp_path / "m.cml")
    assert fresh.input_dim == 6 and _bits(fresh) == _bits(source)


@pytest.mark.parametrize(
    "layers, input_dim, match",
    [
        (
            [cm.layers.Dense(15, activation="relu"), cm.layers.Dropout(0.25), cm.layers.Dense(3)],
            6,
            "layer 0 is Dense\\(16\\) in the file but Dense\\(15\\)",
        ),
        ([cm.layers.Dense(16), cm.layers.Dense(3)], 6, "the file has 3 layers, the model 2"),
        ([cm.layers.Dense(16), cm.layers.Dense(3), cm.layers.Dense(3)], 6, "layer 1 is Dropout in the file but Dense"),
        (
            [cm.layers.Dense(16), cm.layers.Dropout(0.25), cm.layers.Dense(3)],
            7,
            "the file's input size is 6, the model's 7",
        ),
    ],
)
def test_load_weights_refuses_another_architecture(tmp_path, layers, input_dim, match):
    source = _case_model("relu-dropout-softmax-adam")
    source.save(tmp_path / "m.cml")
    target = cm.Sequential(layers, input_dim=input_dim, seed=0)
    before = _bits(target)
    with pytest.raises(ValueError, match="does not fit the model: " + match):
        target.load_weights(tmp_path / "m.cml")
    assert _bits(target) == before


# ------------------------------------------------------------------------------------
# Atomic writes
# ------------------------------------------------------------------------------------


def _no_temporaries(directory) -> None:
    assert sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp")) == []


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch, failing):
    path = tmp_path / "m.cml"
    _small_model().save(path)
    old = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(cmio.os, failing, fail)
    bigger = cm.Sequential([cm.layers.Dense(50), cm.layers.Dense(3)], input_dim=2, seed=1)
    with pytest.raises(OSError, match="simulated"):
        bigger.save(path)
    assert path.read_bytes() == old
    _no_temporaries(tmp_path)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE (POSIX)")
def test_save_failing_mid_write_keeps_the_old_file(tmp_path):
    """A real short write: the file size limit stops the write half way (EFBIG)."""
    path = tmp_path / "m.cml"
    _small_model().save(path)
    old = path.read_bytes()
    code = textwrap.dedent(f"""
        import resource, signal, sys
        import customml as cm
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
        model = cm.Sequential([cm.layers.Dense(64), cm.layers.Dense(64)], input_dim=32, seed=0)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))  # the file needs ~25 KB
        try:
            model.save({str(path)!r})
        except OSError as exc:
            print("OSError", exc.errno)
            sys.exit(0)
        sys.exit("the save did not fail")
    """)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["OSError", "27"]  # EFBIG
    assert path.read_bytes() == old
    _no_temporaries(tmp_path)


def test_saved_files_get_the_usual_permissions(tmp_path):
    _small_model().save(tmp_path / "m.cml")
    (tmp_path / "plain").write_bytes(b"")
    assert (tmp_path / "m.cml").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_save_to_a_directory_is_refused(tmp_path):
    with pytest.raises(IsADirectoryError):
        _small_model().save(tmp_path)
    _no_temporaries(tmp_path)


# ------------------------------------------------------------------------------------
# Malformed files: each a ValueError naming the problem, never a crash
# ------------------------------------------------------------------------------------


def test_empty_file_directory_device_and_fifo(tmp_path):
    _refused(tmp_path, b"", "empty")
    with pytest.raises(ValueError, match="is a directory"):
        cm.load(tmp_path)
    if os.path.exists("/dev/zero"):  # would never end
        with pytest.raises(ValueError, match="not a regular file"):
            cm.load("/dev/zero")
    if hasattr(os, "mkfifo"):  # opening would wait for a writer
        os.mkfifo(tmp_path / "fifo")
        with pytest.raises(ValueError, match="not a regular file"):
            cm.load(tmp_path / "fifo")
    with pytest.raises(FileNotFoundError):
        cm.load(tmp_path / "missing.cml")


def test_truncated_at_every_offset(tmp_path, good):
    for cut in range(len(good)):
        _refused(tmp_path, good[:cut], "empty|too short|truncated")


@pytest.mark.parametrize("extra", [b"\0", b" ", b"x" * 4096])
def test_extra_bytes_appended(tmp_path, good, extra):
    _refused(tmp_path, good + extra, f"{len(extra)} bytes after the last tensor")


def test_header_length_too_large(tmp_path, good):
    n = int.from_bytes(good[:8], "little")
    rest = good[8:]
    _refused(tmp_path, (len(rest) + 1).to_bytes(8, "little") + rest, "header length field says .* only")
    _refused(tmp_path, (2**64 - 1).to_bytes(8, "little") + rest, "more than the .* allowed")
    # one byte too many: the JSON takes in a data byte; one too few: the data section
    # starts a byte early (the dropped byte was padding)
    _refused(tmp_path, (n + 1).to_bytes(8, "little") + rest, "not valid JSON")
    _refused(tmp_path, (n - 1).to_bytes(8, "little") + rest, "1 bytes after the last tensor")


@pytest.mark.parametrize(
    "text, match",
    [
        (b"not json at all!", "not valid JSON"),
        (b"\xff\xfe{}    ", "not UTF-8"),
        (b"[1, 2, 3]", "not an object"),
        (b'{"a": NaN}', "NaN, which is not JSON"),
        (b'{"__metadata__": {"format": "customml"}, "__metadata__": {}}', "key '__metadata__' twice"),
        (b'{"__metadata__": {"format": 1}}', "__metadata__ must be an object of strings"),
        (b'{"__metadata__": {"format": "\\ud800"}}', "entry 'format' holds an invalid Unicode escape"),
        pytest.param(b"[" * 100000 + b"]" * 100000, "nested too deeply|not an object", id="deep"),
    ],
)
def test_header_not_json_or_not_safetensors(tmp_path, text, match):
    _refused(tmp_path, len(text).to_bytes(8, "little") + text, match)


def _set(name, **entry):
    def change(header, data):
        header[name].update(entry)

    return change


@pytest.mark.parametrize(
    "change, match",
    [
        (_set("layers.0.kernel", dtype="F16"), "'layers.0.kernel': shape \\(2, 3\\) of F16 needs 12 bytes"),
        (_set("layers.0.kernel", dtype="I32"), "'layers.0.kernel' has dtype I32, expected F32"),
        (_set("layers.0.kernel", dtype="F33"), "'layers.0.kernel': unknown dtype 'F33'"),
        (_set("layers.0.kernel", shape=[3, 2]), "'layers.0.kernel' has shape \\(3, 2\\), expected \\(2, 3\\)"),
        (_set("layers.2.bias", shape=[2, 1]), "'layers.2.bias' has shape \\(2, 1\\), expected \\(2,\\)"),
        (_set("layers.0.kernel", shape=[2, -3]), "shape must be a list of non-negative integers"),
        (_set("layers.0.kernel", shape=[2, 3.0]), "shape must be a list of non-negative integers"),
        (_set("layers.2.kernel", data_offsets=[0, 24]), "'layers.0.kernel' and 'layers.2.kernel' overlap"),
        (_set("layers.0.bias", data_offsets=[20, 32]), "'layers.0.kernel' and 'layers.0.bias' overlap"),
        (_set("layers.2.bias", data_offsets=[10**6, 10**6 + 8]), "'layers.2.bias'.*past the end.*out of range"),
        (_set("layers.2.bias", data_offsets=[8, 4]), "0 <= begin <= end"),
        (_set("layers.2.bias", data_offsets=[0]), "data_offsets must be"),
        (_set("layers.2.bias", data_offsets=[-8, 0]), "data_offsets must be"),
        (_set("layers.2.bias", extra=1), "exactly dtype, shape and data_offsets"),
    ],
)
def test_bad_tensor_entries(tmp_path, good, change, match):
    _refused(tmp_path, _edit(good, change), match)


def test_tensors_swapped_or_renamed_or_missing_or_extra(tmp_path, good):
    def swap(header, data):  # both offsets valid, but not in the canonical order
        a, b = header["optimizer.m.layers.0.bias"], header["optimizer.v.layers.0.bias"]
        a["data_offsets"], b["data_offsets"] = b["data_offsets"], a["data_offsets"]

    _refused(tmp_path, _edit(good, swap), "'optimizer.m.layers.0.bias' has data_offsets .* expected")

    def rename(header, data):
        header["layers.0.kernal"] = header.pop("layers.0.kernel")

    _refused(tmp_path, _edit(good, rename), "'layers.0.kernel' is missing; unexpected tensor 'layers.0.kernal'")

    def drop_last(header, data):  # the file without the last tensor
        del header["optimizer.v.layers.2.bias"]
        return data[:-8]

    _refused(tmp_path, _edit(good, drop_last), "'optimizer.v.layers.2.bias' is missing")

    def add(header, data):
        header["layers.9.kernel"] = {"dtype": "F32", "shape": [1], "data_offsets": [len(data), len(data) + 4]}
        return data + b"\0" * 4

    _refused(tmp_path, _edit(good, add), "unexpected tensor 'layers.9.kernel'")

    def gap(header, data):
        for name, entry in header.items():
            if name != "__metadata__" and name != "layers.0.kernel":
                entry["data_offsets"] = [o + 4 for o in entry["data_offsets"]]
        return data[:24] + b"\0" * 4 + data[24:]

    _refused(tmp_path, _edit(good, gap), "4 unused bytes before tensor 'layers.0.bias'")


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_flipped_data_byte_fails_the_checksum(tmp_path, good, where):
    _, data = _split(good)
    i = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    raw = bytearray(good)
    raw[len(good) - len(data) + i] ^= 0x01
    _refused(tmp_path, bytes(raw), "checksum mismatch")


def test_modified_metadata_fails_the_checksum(tmp_path, good):
    header, data = _split(good)
    header["__metadata__"]["architecture"] = header["__metadata__"]["architecture"].replace('"rate":0.5', '"rate":0.7')
    _refused(tmp_path, _join(header, data), "checksum mismatch")
    header, data = _split(good)
    header["__metadata__"]["checksum"] = "sha256:" + "0" * 64
    _refused(tmp_path, _join(header, data), "checksum mismatch")


def test_a_bit_flip_in_any_byte_is_refused(tmp_path, good):
    """No single-bit corruption anywhere in the file loads: the header is checked
    field by field and the metadata and data are under the checksum. One flip per byte,
    cycling through the 8 bit positions (every bit of every byte takes 8x as long)."""
    path = tmp_path / "flip.cml"
    raw = bytearray(good)
    for i in range(len(raw)):
        bit = 1 << (i % 8)
        raw[i] ^= bit
        path.write_bytes(raw)
        with pytest.raises(ValueError):
            cm.load(path)
        raw[i] ^= bit


@given(st.binary(max_size=256), st.integers(0, 300))
def test_garbage_is_refused(tmp_path_factory, garbage, n):
    path = tmp_path_factory.mktemp("garbage") / "g.cml"
    for raw in (garbage, n.to_bytes(8, "little") + garbage):
        path.write_bytes(raw)
        with pytest.raises(ValueError):
            cm.load(path)


@pytest.mark.parametrize(
    "version, match",
    [
        ("5", "format version 5, written by a newer customml.*reads format versions up to 4: upgrade customml"),
        ("10", "format version 10, written by a newer customml"),
        ("0", "invalid format_version '0'"),
        ("1.0", "invalid format_version '1.0'"),
        ("", "invalid format_version ''"),
    ],
)
def test_format_versions(tmp_path, good, version, match):
    def change(header, data):
        header["__metadata__"]["format_version"] = version

    _refused(tmp_path, _edit(good, change), match)


def _meta(key, value=None, delete=False):
    def change(header, data):
        if delete:
            del header["__metadata__"][key]
        else:
            header["__metadata__"][key] = value

    return change


def _json_meta(key, edit):
    def change(header, data):
        value = json.loads(header["__metadata__"][key])
        header["__metadata__"][key] = json.dumps(edit(value))

    return change


def _layer(i, **kv):
    def edit(arch):
        arch["layers"][i].update(kv)
        return arch

    return _json_meta("architecture", edit)


def _optimizer_config(**kv):
    def edit(training):
        training["optimizer"]["config"].update(kv)
        return training

    return _json_meta("training", edit)


@pytest.mark.parametrize(
    "change, match",
    [
        (_meta("format", "pytorch"), "not a customml model file \\(its format is 'pytorch'\\)"),
        (_meta("format", delete=True), "not a customml model file"),
        (_meta("architecture", delete=True), "lacks 'architecture'"),
        (_meta("author", "me"), "unknown metadata key 'author'"),
        (_meta("architecture", "{"), "architecture is not valid JSON"),
        (_meta("architecture", "[]"), "architecture must be an object"),
        (_meta("preprocessing", '[{"kind": "standardize"}]'), "unsupported preprocessing"),
        (_meta("training", "{}"), "training must be null or an object"),
        (_layer(0, units=7), "'layers.0.kernel' has shape \\(2, 3\\), expected \\(2, 7\\)"),
        (_layer(0, units=True), "units must be an integer"),
        (_layer(0, activation="swish"), "invalid model configuration: Dense activation"),
        (_layer(1, rate=1.5), "invalid model configuration: Dropout rate"),
        (_layer(1, name="dense"), "invalid model configuration: .*named 'dense'"),
        (_layer(1, kind="pooling"), "layer 1: expected a dense, dropout, normalization or rescaling layer"),
        (_layer(0, trainable=0), "layer 0: trainable must be true or false, got 0"),
        (_layer(1, trainable=False), "layer 1: expected a dense, dropout, normalization or rescaling layer"),
        (_json_meta("architecture", lambda a: dict(a, input_dim=0)), "input_dim must be an integer >= 1"),
        (_json_meta("architecture", lambda a: dict(a, seed=-1)), "seed must be an integer"),
        (_json_meta("architecture", lambda a: dict(a, layers=[])), "layers must be a non-empty list"),
        (_optimizer_config(learning_rate="0.1"), "Adam learning_rate must be number"),
        (_optimizer_config(amsgrad="false"), "Adam amsgrad must be bool"),
        (_optimizer_config(learning_rate=-1.0), "invalid model configuration: Adam learning_rate must be >= 0"),
        (_optimizer_config(momentum=0.9), "config must have exactly the keys"),
        (_json_meta("training", lambda t: dict(t, metrics=["auc"])), "invalid model configuration: unknown metric"),
        (
            _json_meta("training", lambda t: {**t, "optimizer": {"class": "os.system", "config": {}}}),
            "class one of SGD, Adam, AdamW",
        ),
        (_json_meta("optimizer_state", lambda s: dict(s, slots=["velocity"])), "slots \\['velocity'\\] do not match"),
        (_json_meta("optimizer_state", lambda s: dict(s, step=-1)), "step must be an integer >= 0"),
        (_meta("training", "null"), "optimizer_state without a training configuration"),
        (_meta("callbacks_state", '{"EarlyStopping:loss": {"best": "x"}}'), "callbacks_state must map callback keys"),
        (_meta("callbacks_state", "[]"), "callbacks_state must map callback keys"),
    ],
)
def test_bad_metadata(tmp_path, good, change, match):
    _refused(tmp_path, _edit(good, change), match)


@pytest.mark.parametrize(
    "change, match",
    [
        (_layer(0, activation="swish"), "Dense activation"),
        (_layer(1, rate=None), "Dropout rate"),
        (_layer(1, rate=1.5), "Dropout rate"),
        (_layer(1, name="dense"), "named 'dense'"),
        (_optimizer_config(epsilon=-1.0), "Adam epsilon must be >= 0"),
        (_optimizer_config(learning_rate=-1.0), "Adam learning_rate must be >= 0"),
        (_json_meta("training", lambda t: dict(t, metrics=["auc"])), "unknown metric"),
    ],
)
def test_load_weights_checks_the_configuration_as_load(tmp_path, good, change, match):
    # One check of a file's configuration for both paths (issue 20: load_weights used to
    # take the weights of a file whose configuration load refuses).
    path = tmp_path / "bad.cml"
    path.write_bytes(_edit(good, change))
    full = f"^{re.escape(str(path))}: invalid model configuration: .*{match}"
    with pytest.raises(ValueError, match=full):
        cm.load(path)
    model = _small_model()
    before = _bits(model)
    with pytest.raises(ValueError, match=full):
        model.load_weights(path)
    with pytest.raises(ValueError, match=full):
        cm.io.load_weights(_small_model(compiled=False), path)
    assert _bits(model) == before
