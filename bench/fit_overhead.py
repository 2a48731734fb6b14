"""What `fit` costs on top of its executor steps, for bench_peers' training workload (one
epoch of 16 batches of 128 rows of the 784-256-256-10 MLP, shuffle off, one thread):

- the finite check over x (6.4 MB) alone, warm and after a 64 MB sweep, against NumPy's
  ``np.isfinite(x).all()``;
- fit's Python cost: fit with the executor's train_batch replaced by a no-op (every other
  executor call kept);
- fit against the same 16 train_batch calls made directly, and direct calls preceded by
  each finite check, interleaved in one process (medians; the differences are in context,
  with x and the model state as the training leaves them in the caches).

    python bench/fit_overhead.py
    python bench/fit_overhead.py --pair /path/to/other/site-packages   # A/B of two builds

``--pair`` runs two warm worker processes, this interpreter's customml and the one under the
given path (put first on PYTHONPATH), one fit call each in turn with the order swapped every
round, and reports the median of the paired differences: on a shared machine, drifting load
falls on both builds alike.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_peers as bp  # noqa: E402
import timing  # noqa: E402


def setup():
    import customml as cm

    bp.set_threads(1)
    x, y, w = bp.mlp_data()
    model = bp.customml_model(w)
    fit = lambda: model.fit(x, y, epochs=1, batch_size=bp.BATCH, shuffle=False, verbose=0)  # noqa: E731
    fit()
    return cm, x, y, model, fit


def median_us(fn, calls: int, before=None) -> float:
    return float(np.median(timing.call_ns(fn, calls, before=before))) / 1e3


def pieces(rounds: int) -> None:
    cm, x, y, model, fit = setup()
    has_c = hasattr(cm._core, "first_nonfinite")
    sweep = np.ones(16 << 20, np.float32)
    checks = {"numpy isfinite(x).all()": lambda: np.isfinite(x).all()}
    if has_c:
        checks["_core.first_nonfinite(x)"] = lambda: cm._core.first_nonfinite(x)
    print("| finite check over x (2048 x 784 float32) | warm | after a 64 MB sweep |\n|---|---:|---:|")
    for what, fn in checks.items():
        print(f"| {what} | {median_us(fn, 200):.0f} us | {median_us(fn, 60, before=sweep.sum):.0f} us |")

    net = model._net

    class NoSteps:  # the executor with train_batch a no-op
        def train_batch(self, *args):
            pass

        def __getattr__(self, name):
            return getattr(net, name)

    model._net = NoSteps()
    fit_python = median_us(fit, 2000)
    model._net = net
    print(f"\nfit with train_batch a no-op (its checks, loop and bookkeeping): {fit_python:.1f} us a call")

    order = np.arange(len(y), dtype=np.int64)

    def direct():
        net.reset_metrics()
        for s in range(0, len(y), bp.BATCH):
            net.train_batch(x, y, order[s : s + bp.BATCH], None)
        net.metrics()

    calls = {"fit": fit, "direct": direct, "numpy check, direct": lambda: (np.isfinite(x).all(), direct())}
    if has_c:
        calls["C check, direct"] = lambda: (cm._core.first_nonfinite(x), direct())
    ns = timing.rounds(calls, rounds, timing.one_call_ns, alternate=True)
    base = float(np.median(ns["direct"])) / 1e3
    print(f"\n| {rounds} rounds, interleaved | median a call | minus direct |\n|---|---:|---:|")
    for k in calls:
        med = float(np.median(ns[k])) / 1e3
        print(f"| {k} | {med:.0f} us | {med - base:+.0f} us |")
    print(f"\ncustomml from {os.path.dirname(cm.__file__)}")


def worker() -> None:
    cm, x, y, model, fit = setup()
    print("ready", os.path.dirname(cm.__file__), flush=True)
    for line in sys.stdin:
        if line.strip() == "weights":
            print(hashlib.sha256(b"".join(a.tobytes() for a in model.get_weights())).hexdigest()[:16], flush=True)
            continue
        print(timing.one_call_ns(fit), flush=True)


def pair(other: str, rounds: int) -> None:
    envs = {
        "this": dict(os.environ),
        "other": dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [other, os.environ.get("PYTHONPATH")]))),
    }
    procs = {
        k: subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=e,
        )
        for k, e in envs.items()
    }
    for k, p in procs.items():
        print(k, p.stdout.readline().strip())
    us = {k: [] for k in procs}
    for r in range(rounds):
        for k in ("other", "this") if r % 2 == 0 else ("this", "other"):
            procs[k].stdin.write("fit\n")
            procs[k].stdin.flush()
            us[k].append(int(procs[k].stdout.readline()) / 1e3)
    digests = {}
    for k, p in procs.items():
        p.stdin.write("weights\n")
        p.stdin.flush()
        digests[k] = p.stdout.readline().strip()
        p.stdin.close()
        p.wait()
    a, b = np.array(us["other"]), np.array(us["this"])
    d = a - b
    print(
        f"other: median {np.median(a):.0f} us a call, this: {np.median(b):.0f} us; other / this {np.median(a) / np.median(b):.4f}"
    )
    print(
        f"paired difference other - this: median {np.median(d):.0f} us (quartiles {np.percentile(d, 25):.0f} .. "
        f"{np.percentile(d, 75):.0f}), {np.median(d) / bp.STEPS:.1f} us a step, {rounds} rounds"
    )
    print(
        f"weights after {rounds + 1} fits each: {'the same' if len(set(digests.values())) == 1 else 'DIFFERENT'} "
        f"({digests})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--pair", metavar="PATH", help="A/B against the customml found under PATH")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker()
    elif args.pair:
        pair(args.pair, args.rounds)
    else:
        pieces(args.rounds)


if __name__ == "__main__":
    main()
