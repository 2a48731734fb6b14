"""The README's Fashion-MNIST MLP (784-256-256-10, relu) in bf16 (``customml.quantize.bf16``)
beside our float32 and ONNX Runtime float32, one thread each: test accuracy of each, the
largest logit difference between bf16 and float32 over the whole test set, the bf16 model's
ONNX export checked in onnxruntime, then batch-1 ``predict`` latency in interleaved rounds
(the order reversed every other round, so drifting load falls on every contender alike),
median and p99 of single calls, and the floor the weights' bytes and products imply.

    python -m customml train --dataset fashion_mnist -o /tmp/f.cml --prune-sparsity 0 --no-quantize
    python bench/bf16_model.py /tmp/f.cml [rounds]
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
n_rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 11
cm.set_num_threads(1)
model = cm.load(path)
bmodel = cm.quantize.bf16(model)
(_, _), (x_test, y_test) = cm.datasets.load("fashion_mnist")
info = cm.build_info()
print(f"CPU features: {' '.join(info['cpu_features'])}; bf16 kernel {info['kernels']['gemm_bf16']}")

# ---- accuracy and the logits
f32_logits, bf16_logits = model.predict(x_test), bmodel.predict(x_test)
acc_f32 = float((f32_logits.argmax(1) == y_test).mean())
acc_bf16 = float((bf16_logits.argmax(1) == y_test).mean())
print(f"test accuracy: float32 {acc_f32:.4f}, bf16 {acc_bf16:.4f}, change {100 * (acc_bf16 - acc_f32):+.2f} points")
diff = np.abs(bf16_logits.astype(np.float64) - f32_logits)
print(
    f"largest |logit bf16 - float32| over the {len(x_test)} test rows: {diff.max():.4g} "
    f"(median {np.median(diff):.3g}; logits span {np.abs(f32_logits).max():.3g})"
)

# ---- the floor of one batch-1 call
dense = [layer for layer in model.layers if isinstance(layer, cm.layers.Dense)]
macs = sum(int(np.prod(layer.get_weights()[0].shape)) for layer in dense)
bias_bytes = sum(4 * layer.get_weights()[1].size for layer in dense)
print(
    f"floor, batch 1: {macs:,} multiply-adds; weights {4 * macs + bias_bytes:,} bytes in float32, "
    f"{2 * macs + bias_bytes:,} in bf16 (vdpbf16ps: 32 multiply-adds each, 2 a cycle on Zen 4/5 = "
    f"{macs / 64:,.0f} cycles; reading the bf16 weights from L2 at 64 bytes a cycle: "
    f"{(2 * macs + bias_bytes) / 64:,.0f} cycles)"
)

x1 = np.ascontiguousarray(x_test[:1])
contenders = {}
for name, m in (("customml float32", model), ("customml bf16", bmodel)):
    out1 = np.empty((1, m.output_dim), np.float32)
    contenders[name] = lambda m=m, out1=out1: m.predict(x1, out=out1)

try:
    import onnxruntime as ort

    tmp = tempfile.mkdtemp()
    fpath, bpath = os.path.join(tmp, "f.onnx"), os.path.join(tmp, "b.onnx")
    model.export_onnx(fpath)
    bmodel.export_onnx(bpath)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    bsession = ort.InferenceSession(bpath, opts, providers=["CPUExecutionProvider"])
    onnx_diff = np.abs(bsession.run(None, {"input": x_test})[0] - bf16_logits).max()
    print(f"bf16 ONNX export in onnxruntime {ort.__version__}: largest |logit - predict| {onnx_diff:.3g}")
    session = ort.InferenceSession(fpath, opts, providers=["CPUExecutionProvider"])
    contenders["onnxruntime float32"] = lambda s=session: s.run(None, {"input": x1})
except ImportError as exc:
    print(f"onnxruntime skipped: {exc}")

load_before = os.getloadavg()
per_round = timing.rounds(
    contenders, n_rounds, lambda fn: float(np.median(timing.call_ns(fn, 2000, warmup=200))), alternate=True
)
tails = {name: np.percentile(timing.call_ns(fn, 5000, warmup=200), 99) for name, fn in contenders.items()}
medians = {name: float(np.median(v)) / 1000.0 for name, v in per_round.items()}
print(f"\nbatch 1, one thread, {n_rounds} rounds of 2000 calls (median of the round medians; p99 of 5000 calls)")
print(f"{'contender':<22} {'p50 us':>8} {'p99 us':>8} {'vs customml bf16':>17}")
for name in contenders:
    print(
        f"{name:<22} {medians[name]:>8.2f} {tails[name] / 1000.0:>8.2f} "
        f"{medians[name] / medians['customml bf16']:>16.2f}x"
    )
print(
    "load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}, after: {:.2f} {:.2f} {:.2f}".format(
        *load_before, *os.getloadavg()
    )
)
