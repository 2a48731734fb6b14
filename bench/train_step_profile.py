"""Where a training step of bench_peers' MLP (784-256-256-10, relu, softmax-CE, Adam, batch
128) spends its time: each op of the step timed alone through customml.ops against its
floor, then the executor's whole step and fit's step, in one process.

    python bench/train_step_profile.py                 # one thread, FMA peak 246 GFLOP/s
    python bench/train_step_profile.py --threads 2 --peak 492e9

Floors: a GEMM's FLOPs at --peak (bench/fma_peak.py measures one core's); Adam's 28 bytes
per parameter at the in-place bandwidth NumPy reaches at that size (bench/floors.py).
Each op is timed on warm caches (repeated calls on the same buffers), which the step
does not always give it: the gap between the ops' sum and the executor's step is what
the step's own cache traffic and bookkeeping cost. Minima and medians of many calls.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_peers as bp  # noqa: E402
import floors  # noqa: E402
import timing  # noqa: E402


def timed(fn, calls: int) -> tuple[float, float]:
    """Minimum and median microseconds of single calls, after warm-up calls."""
    ns = timing.call_ns(fn, calls, warmup=max(5, calls // 10))
    return float(ns.min()) / 1e3, float(np.median(ns)) / 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--peak", type=float, default=246e9, help="FLOP/s the GEMM floors assume")
    ap.add_argument("--calls", type=int, default=300)
    args = ap.parse_args()

    import customml as cm
    from customml import ops

    bp.set_threads(args.threads)
    x, y, w = bp.mlp_data()
    xb, yb = np.ascontiguousarray(x[: bp.BATCH]), y[: bp.BATCH].copy()
    w1, b1, w2, b2, w3, b3 = w
    b, (i, h1, h2, o) = bp.BATCH, bp.SIZES
    f32 = lambda *shape: np.empty(shape, np.float32)  # noqa: E731
    a1, a2, logits = f32(b, h1), f32(b, h2), f32(b, o)
    g3, g2, g1 = f32(b, o), f32(b, h2), f32(b, h1)
    dw = [np.empty_like(a) for a in w]
    n = sum(a.size for a in w)
    p = np.concatenate([a.ravel() for a in w])
    grad = np.random.default_rng(0).standard_normal(n).astype(np.float32) * 1e-3
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    step = [0]

    def adam():
        step[0] += 1
        ops.adam_update(p, grad, m, v, lr=bp.LR, step=step[0])

    gemm = lambda rows, inner, cols: 2 * rows * inner * cols / args.peak * 1e6  # noqa: E731
    rows = [  # (what, call, floor in us)
        (f"forward {i}->{h1} relu", lambda: ops.dense_forward(xb, w1, b1, activation="relu", out=a1), gemm(b, i, h1)),
        (f"forward {h1}->{h2} relu", lambda: ops.dense_forward(a1, w2, b2, activation="relu", out=a2), gemm(b, h1, h2)),
        (f"forward {h2}->{o}", lambda: ops.dense_forward(a2, w3, b3, out=logits), gemm(b, h2, o)),
        (f"softmax-CE {b}x{o}", lambda: ops.softmax_cross_entropy(logits, yb, grad_out=g3), None),
        (
            f"backward {h2}->{o}: dW, db, dx",
            lambda: ops.dense_backward(g3, a2, w3, logits, dx_out=g2, dweight_out=dw[4], dbias_out=dw[5]),
            2 * gemm(b, h2, o),
        ),
        (
            f"backward {h1}->{h2} relu: dW, db, dx",
            lambda: ops.dense_backward(
                g2, a1, w2, a2, activation="relu", dx_out=g1, dweight_out=dw[2], dbias_out=dw[3]
            ),
            2 * gemm(b, h1, h2),
        ),
        (
            f"backward {i}->{h1} relu: dW, db",
            lambda: ops.dense_backward(
                g1, xb, w1, a1, activation="relu", need_dx=False, dweight_out=dw[0], dbias_out=dw[1]
            ),
            gemm(b, i, h1),
        ),
        (f"Adam over {n} parameters", adam, 7 * 4 * n / floors.bandwidth("inplace", 7 * 4 * n) * 1e6),
    ]
    print(f"| op (batch {b}, {args.threads} thread(s)) | min | median | floor | floor / min |")
    print("|---|---:|---:|---:|---:|")
    total_min = total_floor = 0.0
    for what, fn, floor in rows:
        lo, med = timed(fn, args.calls)
        total_min += lo
        total_floor += floor or 0.0
        share = f"{floor / lo:.0%}" if floor else ""
        print(f"| {what} | {lo:.1f} us | {med:.1f} us | {f'{floor:.1f} us' if floor else ''} | {share} |")
    print(f"| sum of the ops | {total_min:.1f} us | | {total_floor:.1f} us | {total_floor / total_min:.0%} |")

    model = bp.customml_model(w)
    model.fit(x, y, epochs=1, batch_size=b, shuffle=False, verbose=0)
    net = model._net
    first = np.arange(b, dtype=np.int64)
    batches = [np.arange(s, s + b, dtype=np.int64) for s in range(0, len(y), b)]

    def all_batches():
        for index in batches:
            net.train_batch(x, y, index, None)

    steps = len(batches)
    for what, fn, per in (
        ("executor step, the same batch again", lambda: net.train_batch(x, y, first, None), 1),
        (f"executor step, {steps} batches in turn", all_batches, steps),
        (
            f"fit, one epoch of {steps} steps",
            lambda: model.fit(x, y, epochs=1, batch_size=b, shuffle=False, verbose=0),
            steps,
        ),
    ):
        lo, med = timed(fn, max(10, args.calls // per))
        print(f"| {what} (per step) | {lo / per:.1f} us | {med / per:.1f} us | | |")
    print(
        f"\ncustomml {cm.__version__} from {os.path.dirname(cm.__file__)}, "
        f"{cm.build_info()['kernels']['gemm']}, {args.threads} thread(s)"
    )


if __name__ == "__main__":
    main()
