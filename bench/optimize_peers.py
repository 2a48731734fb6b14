"""The model ``customml optimize`` chose against the README model's float32, the best single
techniques (int8 alone, bf16 alone, 90% pruning alone) and ONNX Runtime's float32 and dynamic int8 of the
exported float model: test accuracy and batch-1 p50 / p99, one thread each, rounds
interleaved so drifting load falls on all alike (issue #21).

    python -m customml train --dataset fashion_mnist -o /tmp/f.cml --prune-sparsity 0.9 --prune-epochs 5
    python -m customml optimize /tmp/f.cml --dataset fashion_mnist --max-accuracy-drop 0.5 -o /tmp/small.cml
    python bench/optimize_peers.py /tmp/f.cml /tmp/small.cml [/tmp/f.pruned.cml]
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

import customml as cm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402


def main() -> None:
    base_path, chosen_path = sys.argv[1], sys.argv[2]
    cm.set_num_threads(1)
    (x, _), (xt, yt) = cm.datasets.load("fashion_mnist")
    base = cm.load(base_path)
    models = {"customml float32": base, "customml optimize": cm.load(chosen_path)}
    models["customml int8"] = cm.quantize.int8(base, calibration=x[:1024])
    models["customml bf16"] = cm.quantize.bf16(base)
    if len(sys.argv) > 3:
        models["customml pruned"] = cm.load(sys.argv[3])
    x1 = np.ascontiguousarray(xt[:1])
    calls = {}
    for name, m in models.items():
        out = np.empty((1, 10), np.float32)
        calls[name] = ((lambda m=m, out=out: m.predict(x1, out=out)), (lambda x, m=m: m.predict(x)))
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = tempfile.mkdtemp()
        fpath, qpath = os.path.join(tmp, "f.onnx"), os.path.join(tmp, "q.onnx")
        base.export_onnx(fpath)
        quantize_dynamic(fpath, qpath, weight_type=QuantType.QInt8)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        for name, p in (("onnxruntime float32", fpath), ("onnxruntime int8", qpath)):
            s = ort.InferenceSession(p, opts, providers=["CPUExecutionProvider"])
            calls[name] = ((lambda s=s: s.run(None, {"input": x1})), (lambda x, s=s: s.run(None, {"input": x})[0]))
    except ImportError as exc:
        print(f"onnxruntime skipped: {exc}")
    load = os.getloadavg()[0]
    acc = {k: float((np.argmax(c[1](xt), axis=1) == yt).mean()) for k, c in calls.items()}
    times = {k: [] for k in calls}
    for _ in range(5):
        for k, (one, _) in calls.items():
            times[k].append(timing.call_ns(one, 2000, warmup=100))
    p = {k: np.percentile(np.concatenate(v), [50, 99]) / 1e3 for k, v in times.items()}
    base50 = p["customml float32"][0]
    print(f"customml {cm.__version__}, one thread, load average {load:.1f} -> {os.getloadavg()[0]:.1f}")
    print("| model | test accuracy | batch-1 p50 / p99 us | float32 / model |")
    print("|---|---:|---:|---:|")
    for k in calls:
        print(f"| {k} | {acc[k]:.4f} | {p[k][0]:.1f} / {p[k][1]:.1f} | {base50 / p[k][0]:.2f}x |")


if __name__ == "__main__":
    main()
