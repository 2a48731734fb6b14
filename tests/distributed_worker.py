"""The scenarios of tests/test_distributed.py: each trains a small model and returns its
weights and history. Run by ``mpirun -np N python distributed_worker.py OUT B
[device]`` (every rank with batch B; rank 0 writes OUT, an .npz), and imported by the
test to run the same scenario in one process with batch N * B, the run N ranks must
equal. Under mpirun it also checks after every step that all ranks hold bit-identical
parameters (a digest per step, gathered at the end).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from typing import Callable, Dict, List

import numpy as np

import customml as cm
from customml import callbacks as cb_mod
from customml import prune, quantize

N_ROWS = 77  # a global batch of 2 x 4 or 3 x 4 rows leaves an uneven last batch (5 rows)
EPOCHS = 3  # 30 steps with 2 ranks, 21 with 3


class _Digests(cm.callbacks.Callback):
    """A digest of the parameters after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.digests: List[str] = []

    def on_batch_end(self, batch, logs=None) -> None:
        net = self.model._net
        self.digests.append(hashlib.sha256(net.read_params(0, net.num_params).tobytes()).hexdigest())


def _data(regression: bool = False):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N_ROWS, 6)).astype(np.float32)
    y = (x @ rng.normal(size=(6, 2))).astype(np.float32) if regression else rng.integers(0, 3, N_ROWS)
    return x, y


def _model(optimizer, dropout: float = 0.0, loss="softmax_cross_entropy", metrics=(), outputs: int = 3, **compile):
    layers = [cm.layers.Dense(16, activation="relu")]
    if dropout:
        layers.append(cm.layers.Dropout(dropout))
    layers.append(cm.layers.Dense(outputs))
    device = os.environ.get("CUSTOMML_TEST_DEVICE", "cpu")
    model = cm.Sequential(layers, input_dim=6, seed=3, device=device)
    model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics), **compile)
    return model


def _fit(model, batch: int, callbacks=(), **kw) -> Dict:
    x, y = kw.pop("data", None) or _data()
    history = model.fit(
        x, y, epochs=kw.pop("epochs", EPOCHS), batch_size=batch, verbose=0, callbacks=list(callbacks), **kw
    )
    return {"history": history.history, "epochs": len(history.history["loss"])}


def sgd_momentum(batch: int, callbacks=()):
    model = _model(cm.optimizers.SGD(0.05, momentum=0.9))
    return model, _fit(model, batch, callbacks)


def adam(batch: int, callbacks=()):
    model = _model(cm.optimizers.Adam(1e-2))
    return model, _fit(model, batch, callbacks, shuffle=False)


def adamw_clip(batch: int, callbacks=()):
    model = _model(cm.optimizers.AdamW(1e-2, weight_decay=0.05), clipnorm=0.5)
    return model, _fit(model, batch, callbacks)


def dropout(batch: int, callbacks=()):
    model = _model(cm.optimizers.SGD(0.05, momentum=0.9), dropout=0.3)
    return model, _fit(model, batch, callbacks)


def sample_weight(batch: int, callbacks=()):
    # Sample weights times class weights: each rank's gradient counts by its share of the
    # global batch's weight sum, not of its rows.
    loss = cm.losses.SoftmaxCrossEntropy(class_weights=[1.0, 3.0, 0.5])
    model = _model(cm.optimizers.Adam(1e-2), loss=loss)
    w = np.random.default_rng(1).uniform(0.0, 2.0, N_ROWS).astype(np.float32)
    return model, _fit(model, batch, callbacks, sample_weight=w)


def metrics_validation(batch: int, callbacks=()):
    model = _model(cm.optimizers.Adam(1e-2), metrics=["accuracy", "f1_macro", "confusion_matrix", "roc_auc"])
    x, y = _data()
    return model, _fit(model, batch, callbacks, validation_data=(x[:31], y[:31]))


def regression(batch: int, callbacks=()):
    model = _model(cm.optimizers.SGD(0.02, momentum=0.5), loss="mse", metrics=["mae", "rmse", "r2"], outputs=2)
    return model, _fit(model, batch, callbacks, data=_data(regression=True))


def pruned(batch: int, callbacks=()):
    model = _model(cm.optimizers.Adam(1e-2))
    prune.magnitude(model, 0.5, measure=False)
    return model, _fit(model, batch, callbacks)


def early_stopping(batch: int, callbacks=()):
    # A min_delta no epoch reaches: stops after patience + 1 epochs on every rank.
    model = _model(cm.optimizers.Adam(1e-2))
    stop = cb_mod.EarlyStopping(monitor="loss", min_delta=10.0, patience=1)
    return model, _fit(model, batch, [*callbacks, stop], epochs=6)


def qat(batch: int, callbacks=()):
    model = _model(cm.optimizers.Adam(1e-2))
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=batch, verbose=0, callbacks=list(callbacks))
    q = quantize.qat(model, x, y, epochs=EPOCHS, batch_size=batch, static=False)
    return q, {"history": {}, "epochs": EPOCHS}


def qat_static(batch: int, callbacks=()):
    # Static input ranges: every rank moves each layer's range by the global batch's.
    model = _model(cm.optimizers.Adam(1e-2))
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=batch, verbose=0, callbacks=list(callbacks))
    q = quantize.qat(model, x, y, epochs=EPOCHS, batch_size=batch, static=True, momentum=0.5)
    return q, {"history": {}, "epochs": EPOCHS}


def _parts(ranks: int):
    """Rank r's contiguous part of the rows (38 and 39 rows under 2 ranks, 25, 26 and 26
    under 3): with B = 4 every rank fills every step but the last."""
    return [(N_ROWS * r // ranks, N_ROWS * (r + 1) // ranks) for r in range(ranks)]


def _local_model_and_data():
    model = _model(cm.optimizers.SGD(0.05, momentum=0.9), dropout=0.3, metrics=["accuracy"])
    x, y = _data()
    w = np.random.default_rng(1).uniform(0.0, 2.0, N_ROWS).astype(np.float32)
    return model, x, y, w


def local_shards(batch: int, callbacks=()):
    # init(local_data=True): each rank fits on its own part of the rows (shuffled by its
    # own stream), with dropout, sample weights and its own validation rows.
    ctx = cm.distributed.context()
    lo, hi = _parts(ctx.size)[ctx.rank]
    model, x, y, w = _local_model_and_data()
    ctx.local_data = True
    try:
        x, y, w = x[lo:hi], y[lo:hi], w[lo:hi]
        return model, _fit(model, batch, callbacks, data=(x, y), sample_weight=w, validation_data=(x[:10], y[:10]))
    finally:
        ctx.local_data = False


def local_shards_reference(batch: int, ranks: int):
    """What local_shards under `ranks` ranks computes, in one process: each epoch, the ranks'
    batches (their parts in the order each rank's stream draws) laid end to end, batch
    ranks x batch, not shuffled."""
    model, x, y, w = _local_model_and_data()
    parts = _parts(ranks)
    steps = max(-(-(hi - lo) // batch) for lo, hi in parts)
    val = np.concatenate([np.arange(lo, hi)[:10] for lo, hi in parts])
    history: Dict[str, List[float]] = {}
    for epoch in range(EPOCHS):
        orders = []
        for r, (lo, hi) in enumerate(parts):
            order = np.arange(hi - lo)
            np.random.Generator(np.random.Philox(key=model.seed, counter=[0, r, 1, epoch])).shuffle(order)
            orders.append(lo + order)
        rows = np.concatenate([o[s * batch : (s + 1) * batch] for s in range(steps) for o in orders])
        h = model.fit(
            x[rows],
            y[rows],
            epochs=1,
            batch_size=ranks * batch,
            shuffle=False,
            sample_weight=w[rows],
            validation_data=(x[val], y[val]),
            verbose=0,
        )
        for key, values in h.history.items():
            history.setdefault(key, []).extend(values)
    return model, {"history": history, "epochs": EPOCHS}


def checkpoint_resume(batch: int, callbacks=()):
    # Two epochs saved by ModelCheckpoint (rank 0's), loaded on every rank, two more: the
    # same run as four straight epochs.
    ctx = cm.distributed.context()
    path = os.path.join(os.environ["CUSTOMML_TEST_DIR"], f"ckpt_{ctx.size}.cml")
    model = _model(cm.optimizers.Adam(1e-2))
    save = cb_mod.ModelCheckpoint(path, monitor="loss", include_optimizer=True)
    # Named by rank, to show that only rank 0 writes.
    log = cb_mod.CSVLogger(os.path.join(os.environ["CUSTOMML_TEST_DIR"], f"log_{ctx.size}_{ctx.rank}.csv"))
    _fit(model, batch, [save, log], epochs=2)
    model = cm.load(path)
    return model, _fit(model, batch, callbacks, epochs=4, initial_epoch=2)


def checkpoint_straight(batch: int, callbacks=()):
    model = _model(cm.optimizers.Adam(1e-2))
    return model, _fit(model, batch, callbacks, epochs=4)


SCENARIOS: Dict[str, Callable] = {
    f.__name__: f
    for f in (
        sgd_momentum,
        adam,
        adamw_clip,
        dropout,
        sample_weight,
        metrics_validation,
        regression,
        pruned,
        early_stopping,
        qat,
        qat_static,
        checkpoint_resume,
        local_shards,
    )
}


def predictions(predict, predict_proba) -> Dict[str, np.ndarray]:
    """A model's logits and probabilities of the data, and of 2 rows (fewer rows than 3
    ranks: a rank with no part), through the given functions (its seed gives every rank
    and the single process the same weights)."""
    model = _model(cm.optimizers.Adam(1e-2))
    x, _ = _data()
    return {"logits": predict(model, x), "proba": predict_proba(model, x), "two_rows": predict(model, x[:2])}


def weights(model) -> np.ndarray:
    return np.concatenate([np.asarray(w, np.float64).ravel() for w in model.get_weights()])


def main() -> None:
    out, batch = sys.argv[1], int(sys.argv[2])
    ctx = cm.distributed.init()
    os.environ.setdefault("CUSTOMML_TEST_DIR", tempfile.mkdtemp())
    results = {}
    names = os.environ.get("CUSTOMML_TEST_SCENARIOS")
    for name, scenario in SCENARIOS.items():
        if names and name not in names.split(","):
            continue
        digests = _Digests()
        model, info = scenario(batch, [digests])
        every = ctx.comm.allgather(digests.digests)
        results[f"{name}/identical"] = np.array(all(d == every[0] for d in every) and len(every[0]) > 0)
        results[f"{name}/steps"] = np.array(len(every[0]))
        results[f"{name}/weights"] = weights(model)
        results[f"{name}/epochs"] = np.array(info["epochs"])
        for key, values in info["history"].items():
            results[f"{name}/history/{key}"] = np.asarray(values, np.float64)
    if not names:
        got = predictions(cm.distributed.predict, cm.distributed.predict_proba)
        lo, hi = _parts(ctx.size)[ctx.rank]
        ctx.local_data = True  # each rank predicts its part; every rank gets them end to end
        got["local"] = cm.distributed.predict(_model(cm.optimizers.Adam(1e-2)), _data()[0][lo:hi])
        ctx.local_data = False
        every = ctx.comm.allgather(got)  # every rank gets the whole array
        for key, value in got.items():
            results[f"predict/{key}"] = value
            results[f"predict/{key}/same_on_every_rank"] = np.array(all(np.array_equal(e[key], value) for e in every))
    if ctx.rank == 0:
        np.savez(out, **results)


if __name__ == "__main__":
    main()
