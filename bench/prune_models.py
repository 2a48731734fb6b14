"""Pruned model files against their dense original, side by side in one run: test accuracy,
file size (no optimizer state) and model.predict latency at batch 1 and 128.

    python -m customml train --dataset fashion_mnist -o /tmp/f.cml
    python -m customml prune /tmp/f.cml --sparsity 0.9 --scope global --fine-tune-epochs 20 \\
        --dataset fashion_mnist -o /tmp/f90.cml
    python -m customml prune /tmp/f.cml --structured 0.5 --fine-tune-epochs 20 --dataset fashion_mnist \\
        -o /tmp/f50.cml
    python bench/prune_models.py fashion_mnist /tmp/f.cml /tmp/f90.cml /tmp/f50.cml

The first file is the baseline. Latencies are medians over rounds in which the models take
turns (so the machine's load drifts over all alike), each round at least 2 ms of
back-to-back calls into a reused output buffer; the best round is printed too, as the
median follows the machine's load. ``--choose-formats`` measures the pruned
models' inference formats again in this run (``customml.prune.report``) instead of using
the choice stored in their files, and prints the reports.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import customml as cm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402

_ROUND_SECONDS = 0.002


def _latencies(models: dict, x: np.ndarray, rounds: int) -> dict:
    """(median, best) microseconds per model.predict(x) call of each model, interleaved."""
    outs = {k: np.empty((x.shape[0], m.output_dim), np.float32) for k, m in models.items()}
    calls = {k: (lambda m=m, out=outs[k]: m.predict(x, out=out)) for k, m in models.items()}
    number = {k: timing.calls_in(_ROUND_SECONDS, fn) for k, fn in calls.items()}
    samples = timing.rounds(
        {k: (fn, number[k]) for k, fn in calls.items()}, rounds, lambda c: timing.per_call_s(*c) * 1e6
    )
    return {k: (float(np.median(v)), float(np.min(v))) for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("models", nargs="+", help="model files; the first is the baseline")
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--choose-formats", action="store_true")
    args = parser.parse_args()
    print(
        f"customml {cm.__version__}, {cm.get_num_threads()} thread(s), gemm {cm.build_info()['kernels']['gemm']}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    _, (xt, yt) = cm.datasets.load(args.dataset)
    models = {path: cm.load(path) for path in args.models}
    for path, model in models.items():
        if args.choose_formats and model._masks:
            print(f"{path}: {cm.prune.report(model)}")
    accs = {k: m.evaluate(xt, yt)["accuracy"] for k, m in models.items()}
    nonzeros = {k: sum(int(np.count_nonzero(w)) for w in m.get_weights()) for k, m in models.items()}
    sizes = {k: len(cm.io.dumps(m)) for k, m in models.items()}
    lat1 = _latencies(models, np.ascontiguousarray(xt[:1]), args.rounds)
    lat128 = _latencies(models, np.ascontiguousarray(xt[:128]), args.rounds)
    base = args.models[0]
    width = max(len(k) for k in models)
    print(
        f"{'model':<{width}} {'test acc':>9} {'vs base':>8} {'nonzeros':>9} {'file bytes':>11} {'smaller':>8}   "
        "b1 us median (x) / best (x)   b128 us median (x) / best (x)"
    )

    def cell(lat, k):
        (med, best), (base_med, base_best) = lat[k], lat[base]
        return f"{med:7.1f} ({base_med / med:4.2f}x) / {best:7.1f} ({base_best / best:4.2f}x)"

    for k in models:
        print(
            f"{k:<{width}} {accs[k]:>9.4f} {100 * (accs[k] - accs[base]):>+7.2f}p {nonzeros[k]:>9,} {sizes[k]:>11,} "
            f"{sizes[base] / sizes[k]:>7.1f}x   {cell(lat1, k)}   {cell(lat128, k)}"
        )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
