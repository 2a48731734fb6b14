"""Bit-identity check for changes that must not change the arithmetic (issue #14).

A fixed set of seeded fits, evaluates and predicts over every loss, optimizer, regularizer,
metric, pruning, int8 and QAT path, on cpu and cuda-emulated, saved to an .npz; a second
run compares against it:

    python bench/fingerprint.py --save /tmp/before.npz      # on the tree before
    python bench/fingerprint.py --compare /tmp/before.npz   # on the tree after

Weights and predictions must match bit for bit; for probabilities, losses and metrics the
largest difference in float32 / float64 ulp is printed. Same ISA level, thread count and
device on both sides (the script fixes the threads at 2 and prints the ISA).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Dict, List, Tuple

import numpy as np

import customml as cm

Result = Dict[str, np.ndarray]


def _data(kind: str, n: int = 300, d: int = 20, classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    if kind == "multiclass":
        y = (np.abs(x[:, :classes]).argmax(1)).astype(np.int32)
    elif kind == "binary":
        y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
    else:
        y = np.stack([x[:, 0] - x[:, 1], 0.5 * x[:, 2]], axis=1).astype(np.float32)
    return x, y


def _run(
    device: str,
    layers,
    loss: str,
    optimizer,
    *,
    kind: str,
    metrics=(),
    clipnorm=None,
    precision="fp32",
    sample_weight=False,
    epochs: int = 2,
    after: Callable = None,
) -> Result:
    x, y = _data(kind)
    model = cm.Sequential(layers, input_dim=x.shape[1], device=device, seed=7)
    model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics), clipnorm=clipnorm, precision=precision)
    sw = np.linspace(0.2, 2.0, len(x)).astype(np.float32) if sample_weight else None
    history = model.fit(x, y, epochs=epochs, batch_size=32, seed=3, verbose=0, sample_weight=sw, validation_split=0.2)
    if after is not None:
        model = after(model, x, y) or model
    out: Result = {
        "weights": np.concatenate([w.ravel() for w in model.get_weights()])
        if model.get_weights()
        else np.zeros(0, np.float32),
        "predict": model.predict(x),
    }
    if loss != "mse":
        out["proba"] = model.predict_proba(x)
    out["history"] = np.array(
        [v for k in sorted(history.history) for v in history.history[k] if np.isscalar(v)], np.float64
    )
    ev = model.evaluate(x, y)
    out["evaluate"] = np.array(
        [np.asarray(ev[k], np.float64).ravel() for k in sorted(ev) if np.asarray(ev[k]).size == 1], np.float64
    ).ravel()
    return out


def _prune(model, x, y):
    cm.prune.magnitude(model, 0.8, measure=False)
    model.fit(x, y, epochs=1, batch_size=32, seed=4, verbose=0)
    return model


def _nm(model, x, y):
    cm.prune.n_m(model, 2, 4, measure=False)
    model.fit(x, y, epochs=1, batch_size=32, seed=4, verbose=0)
    return model


def _int8(model, x, y):
    return cm.quantize.int8(model, calibration=x[:128])


def _int8_dynamic(model, x, y):
    return cm.quantize.int8(model, calibration=x[:128], static=False, per_channel=False)


def _qat(model, x, y):
    return cm.quantize.qat(model, x, y, epochs=1, batch_size=32, calibration=x[:128])


def _cases(device: str) -> List[Tuple[str, Callable[[], Result]]]:
    D, Dr = cm.layers.Dense, cm.layers.Dropout
    reg = cm.regularizers
    cases = [
        (
            "ce_adam_dropout",
            lambda: _run(
                device,
                [D(32, "relu"), Dr(0.2), D(4)],
                "softmax_cross_entropy",
                cm.optimizers.Adam(1e-2, weight_decay=1e-4),
                kind="multiclass",
                metrics=["accuracy", "f1", "confusion_matrix", "roc_auc"],
            ),
        ),
        (
            "ce_adamw_amsgrad_clip_sw",
            lambda: _run(
                device,
                [D(24, "gelu"), D(4)],
                cm.losses.SoftmaxCrossEntropy(label_smoothing=0.1, class_weights=[1, 2, 1, 0.5]),
                cm.optimizers.AdamW(1e-2, weight_decay=1e-2, amsgrad=True),
                kind="multiclass",
                clipnorm=0.5,
                sample_weight=True,
                metrics=["accuracy", "precision_macro"],
            ),
        ),
        (
            "bce_sgd_nesterov_l1l2",
            lambda: _run(
                device,
                [D(16, "tanh", kernel_regularizer=reg.l1_l2(1e-3, 1e-3)), D(1)],
                "binary_cross_entropy",
                cm.optimizers.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
                kind="binary",
                metrics=["accuracy", "roc_auc", "f1"],
            ),
        ),
        (
            "mse_sgd_norm",
            lambda: _run(
                device,
                [
                    cm.layers.Normalization(np.linspace(-0.5, 0.5, 20), np.linspace(0.5, 2.0, 20)),
                    D(16, "sigmoid"),
                    D(2),
                ],
                "mse",
                cm.optimizers.SGD(0.05),
                kind="regression",
                metrics=["mae", "rmse", "r2"],
            ),
        ),
        (
            "ce_pruned",
            lambda: _run(
                device, [D(32, "relu"), D(4)], "softmax_cross_entropy", "adam", kind="multiclass", after=_prune
            ),
        ),
        (
            "ce_nm",
            lambda: _run(device, [D(32, "relu"), D(4)], "softmax_cross_entropy", "adam", kind="multiclass", after=_nm),
        ),
        (
            "ce_int8_static",
            lambda: _run(
                device,
                [D(32, "relu"), D(16, "relu"), D(4)],
                "softmax_cross_entropy",
                "adam",
                kind="multiclass",
                after=_int8,
            ),
        ),
        (
            "ce_int8_dynamic",
            lambda: _run(
                device, [D(32, "relu"), D(4)], "softmax_cross_entropy", "adam", kind="multiclass", after=_int8_dynamic
            ),
        ),
        (
            "ce_qat",
            lambda: _run(device, [D(32, "relu"), D(4)], "softmax_cross_entropy", "adam", kind="multiclass", after=_qat),
        ),
    ]
    if device != "cpu":
        cases.append(
            (
                "ce_fp16",
                lambda: _run(
                    device,
                    [D(32, "relu"), D(4)],
                    "softmax_cross_entropy",
                    "adam",
                    kind="multiclass",
                    precision="fp16",
                    metrics=["accuracy"],
                ),
            )
        )
    return cases


def _ulps(a: np.ndarray, b: np.ndarray) -> int:
    if a.shape != b.shape:
        return -1
    if a.size == 0:
        return 0
    int_t = np.int32 if a.dtype == np.float32 else np.int64
    magnitude = np.int64(0x7FFFFFFF if a.dtype == np.float32 else 0x7FFFFFFFFFFFFFFF)
    ia, ib = a.view(int_t).astype(np.int64), b.view(int_t).astype(np.int64)
    # map the sign-magnitude patterns onto a monotone integer line (exact for the small
    # differences this is for; Python ints, so the difference cannot overflow)
    ia = np.where(ia < 0, -(ia & magnitude), ia)
    ib = np.where(ib < 0, -(ib & magnitude), ib)
    return max(abs(int(x) - int(y)) for x, y in zip(ia.ravel(), ib.ravel()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", help="write the fingerprints to this .npz")
    group.add_argument("--compare", help="compare against an .npz written by --save")
    args = parser.parse_args()
    cm.set_num_threads(2)
    info = cm.build_info()
    print(f"isa {info['isa']}, threads {info['num_threads']}", flush=True)
    devices = ["cpu"] + (["cuda-emulated"] if info["simt_emulation"] else [])
    results: Dict[str, np.ndarray] = {}
    for device in devices:
        for name, case in _cases(device):
            for key, value in case().items():
                results[f"{device}/{name}/{key}"] = np.ascontiguousarray(value)
    if args.save:
        np.savez(args.save, **results)
        print(f"{len(results)} arrays saved to {args.save}")
        return 0
    before = dict(np.load(args.compare))
    failed = 0
    for key in sorted(set(before) | set(results)):
        if key not in before or key not in results:
            print(f"{key}: only {'before' if key in before else 'now'}")
            failed += 1
            continue
        exact = before[key].shape == results[key].shape and before[key].tobytes() == results[key].tobytes()
        must_match = key.rsplit("/", 1)[1] in ("weights", "predict")
        if exact:
            continue
        ulps = _ulps(before[key], results[key])
        print(f"{key}: differs, max {ulps} ulp{'  <-- must be bit-identical' if must_match else ''}")
        failed += must_match
    print(f"{len(results)} arrays compared, {failed} bit-identity failures")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
