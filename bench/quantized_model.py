"""A saved Fashion-MNIST model, float32 against int8 (customml.quantize): test accuracy per
calibration method and dynamic, file sizes (both without optimizer state) and batch-1
``model.predict`` latency: 3 interleaved rounds per model of the measurement ``customml
train`` and ``customml prune`` report (``customml.cli._latency``: p50 / p99 of 2000 calls
into a reused buffer after 200 warm-up calls), the median of the rounds' p50 and p99.

    python -m customml train --dataset fashion_mnist -o /tmp/f.cml
    python bench/quantized_model.py /tmp/f.cml

Writes the int8 model next to the input (``<model>.int8``).
"""

from __future__ import annotations

import os
import sys

import numpy as np

import customml as cm
from customml import quantize
from customml.cli import _latency

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402

path = sys.argv[1]
model = cm.load(path)
(x_train, y_train), (x_test, y_test) = cm.datasets.load("fashion_mnist")
rows = []
for method in quantize.METHODS:
    q, seconds = timing.once(
        lambda: quantize.int8(model, calibration=x_train[:1024], method=method, validation=(x_test, y_test))
    )
    r = q.quantization_report
    rows.append((method, r.float_accuracy, r.int8_accuracy, seconds))
    if method == "minmax":
        qmodel = q
        print(r)
for m, fa, qa, s in rows:
    print(f"{m:<10} float {fa:.4f} int8 {qa:.4f} drop {100 * (fa - qa):+.2f} points  ({s:.1f} s)")
qdyn = quantize.int8(model, calibration=x_train[:1024], static=False, validation=(x_test, y_test))
print(f"dynamic    int8 {qdyn.quantization_report.int8_accuracy:.4f}")
qpath = path + ".int8"
qmodel.save(qpath)
fsize, qsize = os.path.getsize(path), os.path.getsize(qpath)
# both files without optimizer state (train -o saves none)
print(f"file: float {fsize:,} B, int8 {qsize:,} B, ratio {fsize / qsize:.2f}")
loaded = cm.load(qpath)
assert np.array_equal(loaded.predict(x_test), qmodel.predict(x_test))

x1 = np.ascontiguousarray(x_test[:1])
# interleaved rounds, so load changes hit all alike; each round is (p50, p99) in us
res = timing.rounds({"float32": model, "int8 static": qmodel, "int8 dynamic": qdyn}, 3, lambda m: _latency(m, x1))
base = np.median([p50 for p50, _ in res["float32"]])
for name, rounds in res.items():
    p50, p99 = np.median(rounds, axis=0)
    print(f"batch-1 predict {name:<13} p50 {p50:6.1f} us  p99 {p99:6.1f} us  p50 ratio to float32 {p50 / base:.2f}")
