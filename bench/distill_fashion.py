"""Knowledge distillation on Fashion-MNIST (issue #21): students distilled from the README
model against the same students trained from the labels alone, over seeds, with each
model's batch-1 latency, in one run.

    python -m customml train --dataset fashion_mnist -o /tmp/f.cml --prune-sparsity 0 --no-quantize
    python bench/distill_fashion.py /tmp/f.cml --students 128 64 --seeds 0 1 2

Each student trains with the README model's own recipe (``customml train``: AdamW 2e-3 on a
cosine decay, weight decay 1e-4, dropout 0.2, batch 128, 20 epochs, the last 10% of the
training set held out): from the labels with label smoothing 0.1 (the recipe's), from the
labels with plain cross-entropy, or with ``customml.distill`` (temperature and alpha from
the options); distillation is judged against the better of the two label-trained students.
Test accuracy is on the 10,000 test images. Latencies: median microseconds of model.predict on one image into a
reused buffer, the models taking turns over rounds (bench/timing.py), so load drifts over
all alike.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import customml as cm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402


def student(width: int, seed: int) -> cm.Sequential:
    layers = [cm.layers.Dense(width, activation="relu"), cm.layers.Dropout(0.2), cm.layers.Dense(10)]
    return cm.Sequential(layers, input_dim=784, seed=seed)


def compiled(model: cm.Sequential, steps: int, loss) -> cm.Sequential:
    optimizer = cm.optimizers.AdamW(cm.schedules.CosineDecay(2e-3, steps), weight_decay=1e-4)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return model


def latencies(models: dict, x: np.ndarray, rounds: int) -> dict:
    """Median microseconds per model.predict(x, out=) call of each model, interleaved."""
    outs = {k: np.empty((x.shape[0], 10), np.float32) for k in models}
    calls = {k: (lambda m=m, out=outs[k]: m.predict(x, out=out)) for k, m in models.items()}
    number = {k: timing.calls_in(0.002, fn) for k, fn in calls.items()}
    samples = timing.rounds(
        {k: (fn, number[k]) for k, fn in calls.items()}, rounds, lambda c: timing.per_call_s(*c) * 1e6
    )
    return {k: float(np.median(v)) for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", help="the README model's file (customml train --dataset fashion_mnist)")
    parser.add_argument("--students", type=int, nargs="+", default=[128, 64], help="hidden widths")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=41)
    args = parser.parse_args()
    print(
        f"customml {cm.__version__}, {cm.get_num_threads()} thread(s), gemm {cm.build_info()['kernels']['gemm']}, "
        f"load average {os.getloadavg()[0]:.1f}; T={args.temperature}, alpha={args.alpha}, {args.epochs} epochs"
    )
    (x, y), (xt, yt) = cm.datasets.load("fashion_mnist")
    teacher = cm.load(args.teacher)
    n_val = int(x.shape[0] * 0.1)
    steps = args.epochs * -(-(x.shape[0] - n_val) // 128)
    fit = dict(epochs=args.epochs, batch_size=128, validation_split=0.1, verbose=0)
    acc = {"teacher": [teacher.evaluate(xt, yt)["accuracy"]]}
    last = {"teacher": teacher}
    for width in args.students:
        for seed in args.seeds:
            smoothed = compiled(student(width, seed), steps, cm.losses.SoftmaxCrossEntropy(label_smoothing=0.1))
            smoothed.fit(x, y, seed=seed, **fit)
            plain = compiled(student(width, seed), steps, "softmax_cross_entropy")
            plain.fit(x, y, seed=seed, **fit)
            distilled = compiled(student(width, seed), steps, "softmax_cross_entropy")
            cm.distill(teacher, distilled, x, y, temperature=args.temperature, alpha=args.alpha, seed=seed, **fit)
            for kind, model in (("labels", smoothed), ("labels, no smoothing", plain), ("distilled", distilled)):
                key = f"{width} {kind}"
                acc.setdefault(key, []).append(model.evaluate(xt, yt)["accuracy"])
                last[key] = model
            print(
                f"  784-{width}-10 seed {seed}: labels {acc[f'{width} labels'][-1]:.4f}, no smoothing "
                f"{acc[f'{width} labels, no smoothing'][-1]:.4f}, distilled {acc[f'{width} distilled'][-1]:.4f}",
                flush=True,
            )
    lat = latencies(last, np.ascontiguousarray(xt[:1]), args.rounds)
    t_acc, t_lat = acc["teacher"][0], lat["teacher"]
    print("| model | test accuracy, mean (per seed) | vs teacher | batch-1 us | teacher / model |")
    print("|---|---|---:|---:|---:|")
    for key, values in acc.items():
        mean = float(np.mean(values))
        per = " / ".join(f"{v:.4f}" for v in values)
        print(
            f"| {key} | {mean:.4f} ({per}) | {100 * (mean - t_acc):+.2f} p | {lat[key]:.1f} | {t_lat / lat[key]:.2f}x |"
        )
    for width in args.students:
        best = max(np.mean(acc[f"{width} labels"]), np.mean(acc[f"{width} labels, no smoothing"]))
        gain = 100 * (np.mean(acc[f"{width} distilled"]) - best)
        print(f"784-{width}-10: distilled - best labels = {gain:+.2f} points (mean over {len(args.seeds)} seeds)")


if __name__ == "__main__":
    main()
