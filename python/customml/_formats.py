"""Which form runs a pruned layer fastest, by timing it: the choice behind
``prune.choose_formats`` (dense float32 or a sparse format, per range of batch sizes) and
behind ``quantize.int8``'s treatment of pruned layers (int8 or sparse float32).

Each candidate is a probe, a one-layer model holding the layer's weights that runs in one
form at every batch size, exactly what the model's own inference plan runs for that layer;
the probes are timed taking turns, and the fastest of several runs counts.
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .layers import Dense
from .models import Sequential

# The batch sizes at which the choices time each format: batch-1 serving up to bulk predict.
BATCH_SIZES = (1, 8, 32, 128, 512)
# max_batch when a sparse format still wins at the largest measured size: beyond it both
# kernels' costs grow linearly with the batch, so the winner stays the winner.
UNBOUNDED = 2**62
# Timing noise: the best of several runs still moves by a few percent from run to run, so a
# format is "clearly slower" only beyond this ratio; within it, a loss is a tie.
NOISE = 1.05
# Each timed run lasts at least this long, so batch-1 calls of a few microseconds are not
# measured at the timer's resolution.
RUN_SECONDS = 2e-3


def fits_n_m(kernel: np.ndarray, n: int, m: int) -> bool:
    rows, cols = kernel.shape
    nz = np.zeros((-(-rows // m) * m, cols), dtype=np.int32)
    nz[:rows] = kernel != 0
    return bool((nz.reshape(-1, m, cols).sum(axis=1) <= n).all())


def probe(model, index: int, weights, fmt: str, nm: Tuple[int, int]) -> Sequential:
    """A one-layer model holding layer ``index`` (or ``weights`` instead of its own) that
    runs in ``fmt`` at every batch size: what the model's own plan runs for that layer."""
    layer = model.layers[index]
    kernel, bias = weights if weights is not None else layer.get_weights()
    one = Sequential(
        [Dense(kernel.shape[1], activation=layer.activation)], input_dim=kernel.shape[0], device=model.device, seed=0
    )
    assert one._net is not None  # built: input_dim given
    one._net.write_params(one._net.weight_offsets[0], np.ascontiguousarray(kernel).ravel())
    one._net.write_params(one._net.bias_offsets[0], bias)
    if fmt != "dense":
        one._net.set_sparse_format(0, fmt, UNBOUNDED, *nm)
    one._net.prepare()
    return one


def time_probes(probes: Dict[str, Sequential], batch_sizes: Sequence[int], repeats: int) -> Dict[str, Dict[int, float]]:
    """Microseconds per call of each probe's predict at each batch size: the fastest of
    ``repeats`` runs, the probes taking turns within every repeat. Not the median: other
    processes only ever add time, and they add it unevenly (a threaded dense GEMM waits for
    its slowest thread, a single-threaded sparse kernel does not), so on a loaded machine
    the median measures the load of the moment while the minimum stays the kernel's cost,
    which is what a choice stored in the file should rest on."""
    rng = np.random.default_rng(0)
    big = max(batch_sizes)
    # ReLU-like inputs (half zeros) as the hidden layers see them; the kernels do not skip
    # zero inputs, so the values only need to be finite.
    io = {
        f: (
            np.maximum(rng.standard_normal((big, p.input_dim)), 0).astype(np.float32),
            np.empty((big, p.output_dim), dtype=np.float32),
        )
        for f, p in probes.items()
    }
    result: Dict[str, Dict[int, float]] = {f: {} for f in probes}
    for b in batch_sizes:
        calls = {}
        for f, p in probes.items():
            assert p._net is not None
            x, y = io[f][0][:b], io[f][1][:b]
            p._net.predict(x, y, b)  # warm-up: the workspace, the caches
            t0 = time.perf_counter()
            p._net.predict(x, y, b)
            calls[f] = max(1, min(10_000, int(RUN_SECONDS / max(time.perf_counter() - t0, 1e-7))))
        samples: Dict[str, List[float]] = {f: [] for f in probes}
        for _ in range(repeats):
            for f, p in probes.items():
                assert p._net is not None
                x, y, predict = io[f][0][:b], io[f][1][:b], p._net.predict
                t0 = time.perf_counter()
                for _ in range(calls[f]):
                    predict(x, y, b)
                samples[f].append((time.perf_counter() - t0) / calls[f] * 1e6)
        for f in probes:
            result[f][b] = float(np.min(samples[f]))
    return result


def batch_range(dense: Dict[int, float], sparse: Dict[int, float]) -> Tuple[int, int]:
    """(min_batch, max_batch) for a sparse format from its timings against dense at the
    measured batch sizes: the widest run of measured sizes that starts and ends where the
    sparse format is faster and holds no size where it is clearly slower (beyond the noise;
    a tie inside is fine), of equally wide runs the one that saves the most time;
    max_batch unbounded when the run reaches the largest size measured; (1, 0), never
    sparse, when it wins nowhere. A run starts at a measured win, so batches below it, not
    measured as wins, stay dense."""
    sizes = sorted(dense)
    best, best_key = (1, 0), (0, 0.0)
    for i, lo in enumerate(sizes):
        if not sparse[lo] < dense[lo]:
            continue
        j = i
        for k in range(i, len(sizes)):
            if sparse[sizes[k]] > NOISE * dense[sizes[k]]:
                break
            if sparse[sizes[k]] < dense[sizes[k]]:
                j = k
        key = (j - i + 1, sum(dense[b] - sparse[b] for b in sizes[i : j + 1]))
        if key > best_key:
            best, best_key = (lo, UNBOUNDED if j == len(sizes) - 1 else sizes[j]), key
    return best


def sparse_format(model, index: int, sizes: Tuple[int, ...], formats: Optional[Tuple[str, ...]], repeats: int) -> dict:
    """The inference format for masked Dense layer ``index`` (see ``prune.choose_formats``):
    {"format", "min_batch", "max_batch", "latency_us": {format: {batch: us}}}."""
    kernel, bias = model.layers[index].get_weights()
    nm = model._nm.get(index, (2, 4))
    candidates = [f for f in (formats or ("csr", "nm")) if f == "csr" or (index in model._nm and fits_n_m(kernel, *nm))]
    probes = {f: probe(model, index, (kernel, bias), f, nm) for f in ["dense"] + candidates}
    latency = time_probes(probes, sizes, repeats)
    # A size where a format is clearly slower breaks its run of sparse sizes, and one
    # moment of another process on the core does that where the kernels tie or the
    # sparse one wins (measured: the README job's first layer kept dense below 32
    # rows once in four runs, at a batch-8 tie). Such sizes are timed once more, and
    # every probe keeps its faster time of the two.
    suspects = [b for b in sizes if any(latency[f][b] > NOISE * latency["dense"][b] for f in candidates)]
    if suspects:
        again = time_probes(probes, suspects, repeats)
        for f in latency:
            for b in suspects:
                latency[f][b] = min(latency[f][b], again[f][b])
    best, best_range, best_key = "dense", (1, 0), (0, 0.0)
    for f in candidates:
        lo, hi = batch_range(latency["dense"], latency[f])
        inside = [b for b in sizes if lo <= b <= hi]
        # The format sparse over more measured sizes wins; at equal reach, the one that
        # saves more time over them.
        key = (len(inside), sum(latency["dense"][b] - latency[f][b] for b in inside))
        if key > best_key:
            best, best_range, best_key = f, (lo, hi), key
    return {"format": best, "min_batch": best_range[0], "max_batch": best_range[1], "latency_us": latency}


def int8_or_float32(
    qmodel, index: int, weights: List[np.ndarray], encoding: Tuple, sizes: Tuple[int, ...], repeats: int = 7
) -> Dict:
    """Times pruned layer ``index`` alone as dense int8 (``encoding``) and in float32 (its
    sparse format over the batch range where that beats dense float32, as
    ``sparse_format`` picks it) at ``sizes``: {"chosen": float32 faster at more sizes
    (at equal counts, in less total time), "format", "min_batch", "max_batch", "latency_us":
    {"int8" | "dense" | format: {batch: us}}}."""
    nm = qmodel._nm.get(index, (2, 4))
    fmt = "nm" if index in qmodel._nm and fits_n_m(weights[0], *nm) else "csr"
    probes = {f: probe(qmodel, index, weights, f, nm) for f in ("dense", fmt)}
    probes["int8"] = probe(qmodel, index, weights, "dense", nm)
    assert probes["int8"]._net is not None
    probes["int8"]._net.set_quantization(0, *encoding)
    probes["int8"]._net.prepare()
    latency = time_probes(probes, sizes, repeats)
    lo, hi = batch_range(latency["dense"], latency[fmt])
    best_float = {b: latency[fmt][b] if lo <= b <= hi else latency["dense"][b] for b in sizes}
    wins = sum(best_float[b] < latency["int8"][b] for b in sizes)
    losses = sum(best_float[b] > latency["int8"][b] for b in sizes)
    chosen = wins > losses or (wins == losses and sum(best_float.values()) < sum(latency["int8"].values()))
    if hi < lo:
        fmt, lo, hi = "dense", 1, 0
    return {"chosen": bool(chosen), "format": fmt, "min_batch": lo, "max_batch": hi, "latency_us": latency}
