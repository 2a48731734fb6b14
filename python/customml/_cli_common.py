"""Helpers shared by customml.cli's subcommands: tables, latency, the fine-tuning schedule."""

from __future__ import annotations

import copy
import os
import time
from typing import List, Optional

import numpy as np


def _table(rows: List[tuple]) -> str:
    width = max(len(str(k)) for k, _ in rows)
    return "\n".join(f"  {str(k):<{width}}  {v}" for k, v in rows)


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _latency(model, sample: np.ndarray) -> tuple:
    """p50 and p99 in microseconds of model.predict on the rows of sample (one, or a
    batch) into a reused buffer."""
    out = np.empty((sample.shape[0], model.output_dim), dtype=np.float32)
    for _ in range(200):  # warm-up: caches, the workspace pool
        model.predict(sample, out=out)
    times = np.empty(2000)
    for i in range(times.size):
        t0 = time.perf_counter_ns()
        model.predict(sample, out=out)
        times[i] = time.perf_counter_ns() - t0
    p50, p99 = np.percentile(times, [50, 99]) / 1000.0
    return float(p50), float(p99)


def _variant_path(output: str, tag: str) -> str:
    stem, ext = os.path.splitext(output)
    return f"{stem}.{tag}{ext or '.cml'}"


def _fine_tuning(model, steps: int, lr: float, sparsity: Optional[float], scope: str) -> list:
    """Recompiles ``model`` for ``steps`` of fine-tuning with a fresh cosine decay from
    ``lr`` (the masks change the loss surface enough that a small rate recovers less:
    measured on fashion_mnist at 90%, 1e-3 lost 0.4-0.5 point more than 2e-3,
    docs/performance.md); returns the callbacks that prune to ``sparsity`` gradually over
    the first half of the steps (Zhu & Gupta) while the second half recovers."""
    import customml as cm

    optimizer = copy.copy(model._optimizer)
    optimizer.learning_rate = cm.schedules.CosineDecay(lr, steps)
    model.compile(optimizer=optimizer, loss=model._loss, metrics=model._metrics, precision=model._precision)
    if sparsity is None:
        return []
    end = max(1, steps // 2)
    return [
        cm.callbacks.GradualPruning(sparsity, end_step=end, frequency=max(1, end // 20), scope=scope, measure=False)
    ]
