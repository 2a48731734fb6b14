"""The fastest (or smallest) model within an accuracy budget, measured on this machine:
``customml.optimize`` tries int8, bf16, pruning (unstructured and N:M), structured
shrinking and distillation into narrower students, and their combinations with int8 and
bf16."""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _checks, io, prune, quantize
from ._checks import as_features

__all__ = ["optimize", "OptimizeReport"]

_OP = "optimize"


@dataclass
class _Context:
    """What the candidates' builders share: the data, the seed and the budget."""

    x_val: np.ndarray
    y_val: np.ndarray
    train: Optional[Tuple[np.ndarray, np.ndarray]]
    seed: int
    fine_tune_epochs: int
    max_accuracy_drop: float
    batch_sizes: List[int]
    built: Dict[str, object] = field(default_factory=dict)  # name -> model, for the combinations


def _copy(model):
    return io.loads(io.dumps(model))


def _epochs(ctx: _Context, min_steps: int) -> int:
    """fine_tune_epochs, or more on a small training set: at least min_steps batches of 128
    (a few epochs of a dataset of a thousand rows recover nothing)."""
    assert ctx.train is not None
    per_epoch = -(-ctx.train[0].shape[0] // 128)
    return max(ctx.fine_tune_epochs, -(-min_steps // per_epoch))


# Fine-tuning's learning rate, annealed to 0 over the fine-tuning steps by a cosine: a
# quarter of Adam's usual 2e-3 start, as the model is already near a minimum.
FINE_TUNE_LEARNING_RATE = 5e-4


def _fine_tune(model, ctx: _Context) -> None:
    """Fine-tuning on the training data with the model's own loss (the softmax
    cross-entropy when it has none) and precision, by Adam from FINE_TUNE_LEARNING_RATE
    down to 0 over the fine-tuning steps; masks hold through it. Nothing without training
    data. Not the model's own optimizer: a fine-tune of a few epochs that stops at its
    schedule's large early rate (a loaded model restarts its schedule) left structured 25%
    1.1 points below the original on Fashion-MNIST's test set, annealed 0.0."""
    if ctx.train is None or ctx.fine_tune_epochs == 0:
        return
    from . import optimizers, schedules

    x, y = ctx.train
    epochs = _epochs(ctx, 200)
    steps = epochs * -(-x.shape[0] // 128)
    optimizer = optimizers.Adam(schedules.CosineDecay(FINE_TUNE_LEARNING_RATE, steps))
    loss = model._loss if model._loss is not None else "softmax_cross_entropy"
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], precision=model._precision)
    model.fit(x, y, epochs=epochs, batch_size=128, seed=ctx.seed, verbose=0)


def _pruned(sparsity: float) -> Callable:
    def build(model, ctx: _Context):
        m = _copy(model)
        prune.magnitude(m, sparsity, scope="global", measure=False)
        _fine_tune(m, ctx)
        prune.choose_formats(m, batch_sizes=ctx.batch_sizes)
        return m

    return build


def _n_m(model, ctx: _Context):
    m = _copy(model)
    prune.n_m(m, 2, 4, measure=False)
    _fine_tune(m, ctx)
    prune.choose_formats(m, batch_sizes=ctx.batch_sizes)
    return m


def _structured(fraction: float) -> Callable:
    def build(model, ctx: _Context):
        m = prune.structured(model, fraction, measure=False)
        _fine_tune(m, ctx)
        return m

    return build


def _student(fraction: float) -> Callable:
    """One hidden layer of ``fraction`` of the model's first hidden width, distilled."""

    def build(model, ctx: _Context):
        from . import layers, optimizers
        from .distillation import distill
        from .models import Sequential

        if ctx.train is None:
            return None
        first = next(layer for layer in model.layers if isinstance(layer, layers.Dense))
        width = max(8, int(round(first.units * fraction)))
        student = Sequential(
            [layers.Dense(width, activation="relu"), layers.Dense(model.output_dim)],
            input_dim=model._input_dim,
            seed=ctx.seed,
        )
        student.compile(optimizer=optimizers.Adam(3e-3), metrics=["accuracy"])
        x, y = ctx.train
        epochs = 2 * _epochs(ctx, 600)
        distill(model, student, x, y, epochs=epochs, batch_size=128, alpha=0.5, seed=ctx.seed, verbose=0)
        return student

    return build


def _int8_of(base: Optional[str]) -> Callable:
    """int8 (static, per channel, minmax calibration, per-layer float fallback within the
    budget) of the original model or of candidate ``base``. Every layer of a pruned base is
    quantized (``pruned="int8"``): int8's timed choice of sparse float32 per layer would make
    the candidate's accuracy depend on the timing, and the pruned float model is a candidate
    of its own."""

    def build(model, ctx: _Context):
        source = model if base is None else ctx.built.get(base)
        if source is None:
            return None
        calibration = (ctx.train[0] if ctx.train is not None else ctx.x_val)[:1024]
        return quantize.int8(
            source,
            calibration=calibration,
            max_accuracy_drop=ctx.max_accuracy_drop,
            validation=(ctx.x_val, ctx.y_val),
            batch_sizes=ctx.batch_sizes,
            pruned="int8",
        )

    return build


def _bf16_of(base: Optional[str]) -> Callable:
    """bf16 kernels (quantize.bf16) of the original model or of candidate ``base``; None on
    a device without a bf16 product (the CUDA devices refuse bf16 models). Only dense
    bases: bf16 runs a pruned layer dense (there is no sparse bf16 kernel), so a pruned +
    bf16 model would be bf16's speed with the pruned model's accuracy."""

    def build(model, ctx: _Context):
        source = model if base is None else ctx.built.get(base)
        if source is None or getattr(source, "device", None) != "cpu":
            return None
        return quantize.bf16(source)

    return build


# The candidates, in the order they are tried: (name, builder(model, context) -> a new
# model, or None when it does not apply). "+ int8" and "+ bf16" entries convert the
# candidate they name when it was built and kept. A new technique is one more entry here,
# and its combinations likewise.
CANDIDATES: List[Tuple[str, Callable]] = [
    ("int8", _int8_of(None)),
    ("bf16", _bf16_of(None)),
    ("pruned 50%", _pruned(0.5)),
    ("pruned 75%", _pruned(0.75)),
    ("pruned 90%", _pruned(0.9)),
    ("2:4", _n_m),
    ("structured 25%", _structured(0.25)),
    ("structured 50%", _structured(0.5)),
    ("student 1/4", _student(0.25)),
    ("student 1/8", _student(0.125)),
    ("pruned 75% + int8", _int8_of("pruned 75%")),
    ("pruned 90% + int8", _int8_of("pruned 90%")),
    ("structured 25% + int8", _int8_of("structured 25%")),
    ("structured 50% + int8", _int8_of("structured 50%")),
    ("student 1/4 + int8", _int8_of("student 1/4")),
    ("structured 25% + bf16", _bf16_of("structured 25%")),
    ("student 1/4 + bf16", _bf16_of("student 1/4")),
]


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x), axis=1) == y))


def _latency_us(model, x: np.ndarray, seconds: float) -> Tuple[float, float]:
    """p50 and p99 microseconds of model.predict(x, out=) back to back for ``seconds``
    (at least 50 calls), after one warm-up call that prepares the inference plan."""
    out = np.empty((x.shape[0], model.output_dim), np.float32)
    model.predict(x, out=out)
    times: List[int] = []
    end = time.perf_counter() + seconds
    while len(times) < 50 or time.perf_counter() < end:
        t0 = time.perf_counter_ns()
        model.predict(x, out=out)
        times.append(time.perf_counter_ns() - t0)
    ts = np.asarray(times, np.float64) / 1e3
    return float(np.percentile(ts, 50)), float(np.percentile(ts, 99))


class OptimizeReport:
    """Every candidate ``optimize`` tried: its validation accuracy, file size, p50 and p99
    latency at each batch size, and whether it was kept or why not. ``as_dict()`` for
    programs, ``str()`` for people, ``plot(path)`` for accuracy against latency."""

    def __init__(self, rows: List[dict], chosen: str, batch_sizes: Sequence[int], objective: str):
        self.rows = rows
        self.chosen = chosen
        self.batch_sizes = list(batch_sizes)
        self.objective = objective

    def as_dict(self) -> dict:
        return {
            "chosen": self.chosen,
            "objective": self.objective,
            "batch_sizes": self.batch_sizes,
            "candidates": [dict(r) for r in self.rows],
        }

    def pareto(self) -> List[str]:
        """The measured candidates no other beats on both accuracy and latency (at the
        first batch size)."""
        b = self.batch_sizes[0]
        pts = [(r["name"], r["accuracy"], r["latency_us"][b][0]) for r in self.rows if r.get("latency_us")]
        return [n for n, a, t in pts if not any(a2 >= a and t2 <= t and (a2, t2) != (a, t) for _, a2, t2 in pts)]

    def __str__(self) -> str:
        heads = ["candidate", "val acc", "drop", "file bytes"] + [f"b{b} p50 / p99 us" for b in self.batch_sizes]
        lines = [" | ".join(heads) + " | kept"]
        for r in self.rows:
            if r.get("accuracy") is None:
                lines.append(
                    f"{r['name']} | - | - | - | " + " | ".join("-" for _ in self.batch_sizes) + f" | {r['why']}"
                )
                continue
            lat = [f"{r['latency_us'][b][0]:.1f} / {r['latency_us'][b][1]:.1f}" for b in self.batch_sizes]
            mark = "chosen" if r["name"] == self.chosen else r["why"]
            lines.append(
                f"{r['name']} | {r['accuracy']:.4f} | {100 * r['drop']:+.2f}p | {r['file_bytes']:,} | "
                + " | ".join(lat)
                + f" | {mark}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"OptimizeReport(chosen={self.chosen!r}, candidates={len(self.rows)})"

    def plot(self, path) -> None:
        """Saves validation accuracy against p50 latency (first batch size, log scale)
        with the Pareto front and the chosen model marked (needs matplotlib)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("[OptimizeReport.plot] needs matplotlib: pip install 'customml[plot]'") from exc
        b = self.batch_sizes[0]
        rows = [r for r in self.rows if r.get("latency_us")]
        front = set(self.pareto())
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in rows:
            t, a = r["latency_us"][b][0], r["accuracy"]
            ax.scatter(t, a, c="tab:red" if r["name"] == self.chosen else "tab:blue", zorder=3)
            ax.annotate(r["name"], (t, a), fontsize=7, xytext=(3, 3), textcoords="offset points")
        pf = sorted((r["latency_us"][b][0], r["accuracy"]) for r in rows if r["name"] in front)
        ax.step([p[0] for p in pf], [p[1] for p in pf], where="post", c="tab:gray", ls="--", label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(f"p50 latency at batch {b} (us)")
        ax.set_ylabel("validation accuracy")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def optimize(
    model,
    validation: Tuple,
    max_accuracy_drop: float = 0.005,
    batch_size: Union[int, Sequence[int]] = 1,
    objective: str = "latency",
    train: Optional[Tuple] = None,
    time_budget_s: Optional[float] = None,
    seed: int = 0,
    fine_tune_epochs: int = 2,
    verbose: int = 1,
):
    """A new model, the fastest (``objective="latency"``, p50 at the first batch size; within
    5% of the fastest, the most accurate) or smallest (``"size"``, the file's bytes) of the candidates in ``CANDIDATES`` whose top-1
    accuracy on ``validation=(x_val, y_val)`` is at most ``max_accuracy_drop`` (a fraction)
    below the original's, and an ``OptimizeReport`` of every candidate. The original model
    is left as it is and is itself a candidate, so the answer is never worse.

    Candidates: int8 (static, per channel, per-layer float fallback), bf16, magnitude pruning at
    50 / 75 / 90% and 2:4, structured shrinking by 25 / 50% of the hidden units, and with
    ``train=(x, y)`` students distilled from the model; each pruned or shrunk model is
    fine-tuned for ``fine_tune_epochs`` on ``train`` (none without it), and the promising
    ones converted to int8 or bf16 as well. Latency is measured here, on this machine, at each of
    ``batch_size`` (an int or a list). Deterministic for a ``seed`` (the candidates and their
    accuracies; a choice between candidates within timing noise may differ).
    ``time_budget_s``: stop trying candidates once it is spent and return the best so far.
    ``verbose``: a progress bar (1) or nothing (0)."""
    if not hasattr(model, "predict") or model._net is None:
        raise ValueError(f"[{_OP}] model must be a built customml Sequential (train or load it first)")
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        raise ValueError(f"[{_OP}] validation must be a tuple (x_val, y_val)")
    x_val = as_features(validation[0], "validation x", _OP)
    y_val = np.asarray(validation[1])
    if y_val.shape != (x_val.shape[0],) or not np.issubdtype(y_val.dtype, np.integer):
        raise ValueError(f"[{_OP}] validation y must be {x_val.shape[0]} integer class labels")
    if (
        isinstance(max_accuracy_drop, bool)
        or not isinstance(max_accuracy_drop, numbers.Real)
        or not 0 <= max_accuracy_drop < 1
    ):
        raise ValueError(f"[{_OP}] max_accuracy_drop must be a fraction in [0, 1), got {max_accuracy_drop!r}")
    sizes = [batch_size] if isinstance(batch_size, numbers.Integral) else list(batch_size)
    sizes = [_checks.positive_int(b, "batch_size", _OP) for b in sizes]
    if not sizes:
        raise ValueError(f"[{_OP}] batch_size must be a positive int or a non-empty list of them")
    if objective not in ("latency", "size"):
        raise ValueError(f"[{_OP}] objective must be 'latency' or 'size', got {objective!r}")
    if time_budget_s is not None and (
        isinstance(time_budget_s, bool) or not isinstance(time_budget_s, numbers.Real) or not time_budget_s > 0
    ):
        raise ValueError(f"[{_OP}] time_budget_s must be a number > 0 or None, got {time_budget_s!r}")
    if train is not None:
        if not isinstance(train, (tuple, list)) or len(train) != 2:
            raise ValueError(f"[{_OP}] train must be a tuple (x, y) or None")
        train = (as_features(train[0], "train x", _OP), np.asarray(train[1]))
    seed = _checks.positive_int(seed, "seed", _OP, minimum=0)
    fine_tune_epochs = _checks.positive_int(fine_tune_epochs, "fine_tune_epochs", _OP, minimum=0)
    start = time.perf_counter()
    ctx = _Context(x_val, y_val, train, seed, fine_tune_epochs, float(max_accuracy_drop), sizes)
    # Latency samples per batch size: enough calls for a p99, little time per candidate.
    probes = {b: np.ascontiguousarray(np.resize(x_val, (b, x_val.shape[1]))) for b in sizes}
    seconds = 0.2

    def measure(name: str, m) -> dict:
        acc = _accuracy(m, x_val, y_val)
        lat = {b: _latency_us(m, probes[b], seconds) for b in sizes}
        return {"name": name, "accuracy": acc, "file_bytes": len(io.dumps(m)), "latency_us": lat}

    base = measure("float32", model)
    base_acc = base["accuracy"]
    base.update(drop=0.0, why="kept")
    rows, models = [base], {"float32": model}
    bar = None
    if verbose:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(CANDIDATES), desc="optimize", unit="candidate", leave=False)
    for name, build in CANDIDATES:
        if bar is not None:  # counts the candidates begun; the postfix names the one running
            bar.set_postfix_str(name)
            bar.update(1)
        if time_budget_s is not None and time.perf_counter() - start >= time_budget_s:
            rows.append({"name": name, "accuracy": None, "why": "not tried: time budget spent"})
            continue
        m = build(model, ctx)
        if m is None:
            rows.append({"name": name, "accuracy": None, "why": "not tried: needs train, or its base was not kept"})
            continue
        row = measure(name, m)
        row["drop"] = base_acc - row["accuracy"]
        row["why"] = "kept" if row["drop"] <= max_accuracy_drop else "over the accuracy budget"
        if row["why"] == "kept":
            ctx.built[name] = m
            models[name] = m
        rows.append(row)
    if bar is not None:
        bar.close()

    def cost(r: dict) -> float:
        return r["latency_us"][sizes[0]][0] if objective == "latency" else r["file_bytes"]

    kept = [r for r in rows if r.get("why") == "kept"]
    # Latencies within 5% of the fastest are a tie on a timed measurement (a shared
    # machine's noise is larger): among those the most accurate wins, so noise never trades
    # accuracy for nothing. Sizes are exact.
    slack = 1.05 if objective == "latency" else 1.0
    fastest = min(cost(r) for r in kept)
    best = max((r for r in kept if cost(r) <= fastest * slack), key=lambda r: (r["accuracy"], -cost(r)))
    chosen = best["name"]
    result = _copy(models[chosen]) if chosen == "float32" else models[chosen]
    for r in kept:
        if r["name"] != chosen:
            worse = "slower" if cost(r) > fastest * slack else "less accurate"
            r["why"] = f"kept, {worse if objective == 'latency' else 'larger'} than {chosen}"
    report = OptimizeReport(rows, chosen, sizes, objective)
    result.optimize_report = report
    return result, report
