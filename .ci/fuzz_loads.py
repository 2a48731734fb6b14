"""Fuzzes the model-file reader, customml.io.loads, with atheris (libFuzzer for Python).

    python3 .ci/fuzz_loads.py --make-corpus CORPUS           # seed files, then:
    python3 .ci/fuzz_loads.py CORPUS -max_total_time=60      # CI's bounded run
    python3 .ci/fuzz_loads.py CORPUS -max_total_time=3600 -jobs=2   # a longer one

The seed corpus is a valid file of every kind the reader accepts (every layer kind and
activation, compiled with each optimizer's state, pruned CSR and N:M, int8 static and
dynamic, callback state) plus tests/data/*.cml and the crash reproducers in
tests/data/fuzz/. An input may be refused only with ValueError or TypeError (what
customml.io documents); anything else, a crash or a sanitizer report is a finding: libFuzzer
writes it as crash-<sha1>, which then becomes a test in tests/test_io.py with the fix and
joins the seed corpus in tests/data/fuzz/. atheris instruments the Python reader; a C++ reader needs its own
libFuzzer target (it cannot see coverage inside compiled code).
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
from typing import Optional

ROOT = pathlib.Path(__file__).resolve().parent.parent


def make_corpus(directory: pathlib.Path) -> None:
    import numpy as np

    import customml as cm

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)

    def small(activation="relu", extra=()):
        return cm.Sequential([*extra, cm.layers.Dense(8, activation), cm.layers.Dense(2)], input_dim=6, seed=1)

    models = {"plain": cm.Sequential([cm.layers.Dense(3)], input_dim=6, seed=0)}
    for activation in ("relu", "sigmoid", "tanh", "gelu"):
        models[activation] = small(activation)
    norm = cm.layers.Normalization()
    norm.adapt(x)
    models["preprocessed"] = small(extra=(norm, cm.layers.Dropout(0.25)))
    models["rescaled"] = small(extra=(cm.layers.Rescaling(0.5, 1.0),))
    for name, optimizer in (("adam", cm.optimizers.Adam(amsgrad=True)), ("sgd", cm.optimizers.SGD(momentum=0.9))):
        m = small()
        m.compile(optimizer=optimizer, loss="softmax_cross_entropy", metrics=["accuracy"])
        m.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[cm.callbacks.EarlyStopping("loss", patience=2)])
        models[name] = m
    mse = small()
    mse.compile(loss="mse")
    models["mse"] = mse
    csr = small()
    cm.prune.magnitude(csr, 0.5, measure=False)
    models["pruned"] = csr
    nm = small()
    cm.prune.n_m(nm, 2, 4, measure=False)
    models["nm"] = nm
    # Format versions 2 to 4: a regularizer and a schedule, a frozen layer, bf16 kernels.
    regularized = cm.Sequential(
        [cm.layers.Dense(8, "relu", kernel_regularizer=cm.regularizers.L1L2(l1=1e-4, l2=1e-3)), cm.layers.Dense(2)],
        input_dim=6,
        seed=1,
    )
    regularized.layers[0].trainable = False
    regularized.compile(optimizer=cm.optimizers.SGD(cm.schedules.StepDecay(0.1, 10, 0.5)), loss="mse")
    models["regularized"] = regularized
    models["bf16"] = cm.quantize.bf16(small())
    models["int8_static"] = cm.quantize.int8(small(), calibration=x)
    models["int8_dynamic"] = cm.quantize.int8(small(), calibration=x, static=False, per_channel=False)
    for name, model in models.items():
        include = model._loss is not None and model._optimizer is not None
        (directory / f"{name}.cml").write_bytes(cm.io.dumps(model, include_optimizer=include))
    for path in [*(ROOT / "tests" / "data").glob("*.cml"), *(ROOT / "tests" / "data" / "fuzz").glob("*")]:
        (directory / path.name).write_bytes(path.read_bytes())


def resealed(data: bytes, checksum) -> Optional[bytes]:
    """data with its metadata's checksum recomputed (`checksum(metadata, [data])`, the
    writer's function), or None when data has no safetensors header with string metadata.
    Almost every mutation breaks the checksum, which the reader checks before the
    architecture and the tensors: without resealing the fuzzer would never get past it."""
    if len(data) < 8:
        return None
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        return None
    try:
        header = json.loads(data[8 : 8 + n])
    except (ValueError, RecursionError):
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        return None
    body = data[8 + n :]
    meta["checksum"] = checksum(meta, [body])
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + body


def fuzz(argv) -> None:
    import atheris

    with atheris.instrument_imports(include=["customml"]):
        import customml as cm
        from customml import _model_file

    def one_input(data: bytes) -> None:
        for candidate in (data, resealed(data, _model_file._checksum)):
            if candidate is None:
                continue
            try:
                cm.io.loads(candidate)
            except (ValueError, TypeError):
                pass  # refused with a message: the contract

    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--make-corpus":
        make_corpus(pathlib.Path(sys.argv[2]))
    else:
        os.environ.setdefault("CUSTOMML_NUM_THREADS", "1")
        fuzz(sys.argv)
