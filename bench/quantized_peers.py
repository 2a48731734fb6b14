"""The quantized Fashion-MNIST MLP side by side with what users would pick instead, in one run
and one thread each: our float32 and int8 (static, per channel) ``model.predict``, PyTorch
eager float32 and ``torch.ao.quantization.quantize_dynamic`` (FBGEMM int8) under
``inference_mode``, and ONNX Runtime float32 and int8 (``onnxruntime.quantization.
quantize_dynamic``, MatMulInteger). Batch 1: p50 / p99 of single calls; batch 1024: rows per
second (median of repeated calls). Rounds are interleaved so that a change in the machine's
load falls on every contender alike; the load average before and after is printed with the
table.

    python -m customml train --dataset fashion_mnist -o /tmp/f.cml
    python bench/quantized_peers.py /tmp/f.cml
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

import customml as cm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402

path = sys.argv[1]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
cm.set_num_threads(1)
model = cm.load(path)
(x_train, _), (x_test, y_test) = cm.datasets.load("fashion_mnist")
qmodel = cm.quantize.int8(model, calibration=x_train[:1024])
x1 = np.ascontiguousarray(x_test[:1])
xb = np.ascontiguousarray(x_test[:1024])
contenders = {}


def ours(m):
    out1 = np.empty((1, m.output_dim), np.float32)
    outb = np.empty((xb.shape[0], m.output_dim), np.float32)
    return (lambda: m.predict(x1, out=out1)), (lambda: m.predict(xb, out=outb)), (lambda x: m.predict(x))


contenders["customml float32"] = ours(model)
contenders["customml int8"] = ours(qmodel)

try:
    import torch

    torch.set_num_threads(1)
    layers = []
    for layer in model.layers:
        if isinstance(layer, cm.layers.Dense):
            w, b = layer.get_weights()
            lin = torch.nn.Linear(w.shape[0], w.shape[1])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w.T.copy()))
                lin.bias.copy_(torch.from_numpy(b))
            layers.append(lin)
            if layer.activation == "relu":
                layers.append(torch.nn.ReLU())
    tmodel = torch.nn.Sequential(*layers).eval()
    tq = torch.ao.quantization.quantize_dynamic(tmodel, {torch.nn.Linear}, dtype=torch.qint8)
    for name, m in (("torch float32", tmodel), ("torch quantize_dynamic", tq)):
        t1, tb = torch.from_numpy(x1), torch.from_numpy(xb)

        def run(m=m, t=None):
            with torch.inference_mode():
                return m(t)

        contenders[name] = (
            (lambda m=m, t1=t1: run(m, t1)),
            (lambda m=m, tb=tb: run(m, tb)),
            (lambda x, m=m: run(m, torch.from_numpy(x)).numpy()),
        )
except ImportError as exc:
    print(f"torch skipped: {exc}")

try:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = tempfile.mkdtemp()
    fpath, qpath = os.path.join(tmp, "f.onnx"), os.path.join(tmp, "q.onnx")
    model.export_onnx(fpath)
    quantize_dynamic(fpath, qpath, weight_type=QuantType.QInt8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    for name, p in (("onnxruntime float32", fpath), ("onnxruntime int8", qpath)):
        s = ort.InferenceSession(p, opts, providers=["CPUExecutionProvider"])
        contenders[name] = (
            (lambda s=s: s.run(None, {"input": x1})),
            (lambda s=s: s.run(None, {"input": xb})),
            (lambda x, s=s: s.run(None, {"input": x})[0]),
        )
except ImportError as exc:
    print(f"onnxruntime skipped: {exc}")

load_before = os.getloadavg()
accuracy = {name: float((np.argmax(c[2](x_test), axis=1) == y_test).mean()) for name, c in contenders.items()}
single = {name: [] for name in contenders}
batch = {name: [] for name in contenders}
for _ in range(rounds):
    for name, (one, many, _) in contenders.items():
        single[name].append(timing.call_ns(one, 2000, warmup=100))
        batch[name].append(np.median(timing.call_ns(many, 5, warmup=1)) / 1e9)

base1 = np.percentile(np.concatenate(single["customml float32"]), 50)
baseb = np.median(batch["customml float32"])
print(
    f"{'contender':<24} {'accuracy':>8} {'b1 p50 us':>10} {'b1 p99 us':>10} {'vs ours f32':>11} "
    f"{'b1024 rows/s':>13} {'vs ours f32':>11}"
)
for name in contenders:
    times = np.concatenate(single[name]) / 1000.0
    p50, p99 = np.percentile(times, [50, 99])
    rate = xb.shape[0] / np.median(batch[name])
    print(
        f"{name:<24} {accuracy[name]:>8.4f} {p50:>10.1f} {p99:>10.1f} {p50 / (base1 / 1000.0):>10.2f}x "
        f"{rate:>13,.0f} {rate / (xb.shape[0] / baseb):>10.2f}x"
    )
print(
    "load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}, after: {:.2f} {:.2f} {:.2f}".format(
        *load_before, *os.getloadavg()
    )
)
