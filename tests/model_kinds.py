"""One small model of every kind a model file holds (float, frozen, regularized, dropout,
preprocessing, pruned CSR and N:M, int8 static / dynamic, per channel / per tensor, bf16,
distilled, compiled with each optimizer or not), for the tests that save them and read them back
through the C++ reader (test_model_file.py) and through the C runtime (test_c_api.py)."""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import numpy as np

import customml as cm
from customml import prune, quantize


def data(n=64, d=12, seed=0) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int32) + (x[:, 2] > 1).astype(np.int32)


def _mlp(*extra, d=12, **kw) -> cm.Sequential:
    layers = [
        *extra,
        cm.layers.Dense(16, "relu"),
        cm.layers.Dropout(0.2),
        cm.layers.Dense(8, "tanh"),
        cm.layers.Dense(3),
    ]
    return cm.Sequential(layers, input_dim=d, seed=5, **kw)


def _fitted(model: cm.Sequential, optimizer=None) -> cm.Sequential:
    x, y = data()
    model.compile(optimizer or cm.optimizers.Adam(1e-2), "softmax_cross_entropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    return model


def _frozen_regularized() -> cm.Sequential:
    model = cm.Sequential(
        [cm.layers.Dense(16, "gelu", kernel_regularizer=cm.regularizers.l2(1e-3)), cm.layers.Dense(3, "sigmoid")],
        input_dim=12,
        seed=1,
    )
    model.layers[0].trainable = False
    return _fitted(model, cm.optimizers.SGD(0.05, momentum=0.9))


def _preprocessed() -> cm.Sequential:
    norm = cm.layers.Normalization()
    norm.adapt(data()[0] * 3.0 + 1.0)
    return _fitted(_mlp(cm.layers.Rescaling(0.5, offset=0.25), norm))


def _pruned(fmt: str) -> cm.Sequential:
    model = _fitted(_mlp())
    if fmt == "nm":
        prune.n_m(model, 2, 4, measure=False)
    else:
        prune.magnitude(model, 0.7, measure=False)
    for i in (0, 2, 3):  # the format a measurement could have chosen, for batches of 1 to 64 rows
        model._net.set_sparse_format(i, fmt, 64, 2, 4, min_batch=1)
    return model


def _distilled() -> cm.Sequential:
    x, y = data()
    student = cm.Sequential([cm.layers.Dense(8, "relu"), cm.layers.Dense(3)], input_dim=12, seed=2)
    cm.distill(_fitted(_mlp()), student, x, y, epochs=1, batch_size=16, verbose=0)
    return student


def _int8(**kw) -> cm.Sequential:
    return quantize.int8(_fitted(_mlp()), calibration=data()[0], **kw)


KINDS: Dict[str, Callable[[], cm.Sequential]] = {
    "float-uncompiled": lambda: _mlp(),
    "float-adam": lambda: _fitted(_mlp()),
    "frozen-regularized-sgd": _frozen_regularized,
    "preprocessed": _preprocessed,
    "pruned-csr": lambda: _pruned("csr"),
    "pruned-nm": lambda: _pruned("nm"),
    "int8-static-per-channel": lambda: _int8(),
    "int8-dynamic-per-tensor": lambda: _int8(per_channel=False, static=False),
    "bf16": lambda: quantize.bf16(_fitted(_mlp())),
    "distilled": _distilled,
}
