"""Pruned dense layers (issue #7): customml's sparse kernels against our own dense kernel
on the same (pruned) weights, torch.sparse CSR and scipy.sparse CSR, all on one thread
(bench/conftest.py), relu layers of 784 -> 256 and 256 -> 256 at batch 1 and 128:

    customml         ops.sparse_dense_forward on ops.sparse_pack's prepared weight, 90%
                     unstructured sparsity (the CSR of W^T checked once; with AVX-512 the
                     gather-free packed layout up to 8 rows), as a model runs it
    customml_raw     ops.sparse_dense_forward on the raw CSR arrays, checked on every call
    customml_dense   ops.dense_forward on the same weights, zeros included
    net_csr          a one-layer network in the "csr" format, through Network.predict: the
                     layer as a pruned model's plan runs it (what prune.choose_formats times)
    net_dense        the same network dense: pre-packed GEMM weights, the same fixed cost
    customml_nm      ops.nm_dense_forward, 2:4 (50%) of the same unpruned weights
    torch_csr        torch.sparse.mm(W^T as CSR, x^T) + bias, relu (torch's layout)
    scipy_csr        (W^T as scipy CSR) @ x^T + bias, relu

Each implementation's output is checked once against float64 NumPy before it is timed.
Every benchmark records the floor's bytes (values + indices + x + y + bias, each once)
and FLOPs (2 per stored weight per row); after a run,

    python -m pytest bench/bench_sparse.py --benchmark-json=/tmp/sparse.json
    python bench/bench_sparse.py /tmp/sparse.json [peak GFLOP/s]

prints the medians, the ratios to customml and achieved/limit against this machine's
copy bandwidth at the working-set size and its single-core FMA peak.
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Callable

import numpy as np
import pytest

from customml import ops

try:
    import torch
except ImportError:
    torch = None
try:
    import scipy.sparse as scipy_sparse
except ImportError:
    scipy_sparse = None

SHAPES = [(784, 256), (256, 256)]
BATCHES = [1, 128]
SPARSITY = 0.9
IMPLS = [
    "customml",
    "customml_raw",
    "customml_dense",
    "net_csr",
    "net_dense",
    "customml_nm",
    pytest.param("torch_csr", marks=pytest.mark.skipif(torch is None, reason="torch is not importable")),
    pytest.param("scipy_csr", marks=pytest.mark.skipif(scipy_sparse is None, reason="scipy is not importable")),
]
# Summation orders differ (see tests/test_sparse.py); 1e-4 of the output's scale is far
# above that and far below any indexing error.
REL = 1e-4


def _problem(n_in: int, n_out: int, batch: int) -> dict:
    rng = np.random.default_rng(0)
    dense = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
    pruned = dense.copy()
    pruned[rng.random(pruned.shape) < SPARSITY] = 0.0
    x = rng.uniform(-1.0, 1.0, (batch, n_in)).astype(np.float32)
    b = (0.1 * rng.standard_normal(n_out)).astype(np.float32)
    csr = ops.csr_from_dense(pruned)
    return dict(x=x, b=b, pruned=pruned, csr=csr, packed=ops.sparse_pack(*csr, n_in), nm=ops.nm_from_dense(dense))


def _network(p: dict, fmt: str):
    """A one-layer relu network holding the pruned weights, prepared in ``fmt``."""
    from customml import Sequential
    from customml._formats import probe
    from customml.layers import Dense

    model = Sequential([Dense(p["b"].shape[0], activation="relu")], input_dim=p["x"].shape[1], seed=0)
    return probe(model, 0, (p["pruned"], p["b"]), fmt, (2, 4))._net


def _nm_weights(values: np.ndarray, index: np.ndarray, n_in: int, n: int = 2, m: int = 4) -> np.ndarray:
    """The dense (in, out) kernel of an N:M format (slot s of a column: row s // n * m + index)."""
    rows = (np.arange(values.shape[0]) // n * m)[:, None] + index
    w = np.zeros((n_in, values.shape[1]), np.float32)
    np.add.at(w, (rows, np.broadcast_to(np.arange(values.shape[1]), rows.shape)), values)
    return w


def _floor(p: dict, impl: str) -> tuple[int, int]:
    """(bytes, FLOPs) of the product the implementation computes."""
    batch, n_in = p["x"].shape
    n_out = p["b"].shape[0]
    io = 4 * (batch * n_in + batch * n_out + n_out)
    if impl in ("customml_dense", "net_dense"):
        return io + 4 * n_in * n_out, 2 * batch * n_in * n_out
    nnz = p["csr"][1].size
    if impl in ("customml", "net_csr") and p["packed"].packed_nbytes and batch <= 8:
        return io + p["packed"].packed_nbytes, 2 * batch * nnz  # the packed layout, padding included
    if impl == "customml_nm":
        slots = p["nm"][0].size
        return io + 5 * slots, 2 * batch * slots
    return io + 8 * nnz + 4 * (n_out + 1), 2 * batch * nnz


def _run(impl: str, p: dict) -> tuple[Callable[[], object], Callable[[], np.ndarray], np.ndarray]:
    """(timed call, its output as (batch, out) NumPy, the float64 reference)."""
    x, b = p["x"], p["b"]
    y = np.full((x.shape[0], b.shape[0]), np.nan, np.float32)
    ref_w = p["pruned"]
    if impl == "customml":
        packed = p["packed"]
        return (lambda: ops.sparse_dense_forward(x, packed, bias=b, activation="relu", out=y)), (lambda: y), ref_w
    if impl == "customml_raw":
        offsets, index, values = p["csr"]
        return (
            (lambda: ops.sparse_dense_forward(x, offsets, index, values, b, activation="relu", out=y)),
            (lambda: y),
            ref_w,
        )
    if impl in ("net_csr", "net_dense"):
        net, batch = _network(p, impl[4:]), x.shape[0]
        return (lambda: net.predict(x, y, batch)), (lambda: y), ref_w
    if impl == "customml_dense":
        return (lambda: ops.dense_forward(x, ref_w, b, activation="relu", out=y)), (lambda: y), ref_w
    values, index = p["nm"]
    if impl == "customml_nm":
        return (
            (lambda: ops.nm_dense_forward(x, values, index, b, activation="relu", out=y)),
            (lambda: y),
            _nm_weights(values, index, x.shape[1]),
        )
    if impl == "torch_csr":
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            wt = torch.from_numpy(np.ascontiguousarray(ref_w.T)).to_sparse_csr()
        xt, bt = torch.from_numpy(x).T, torch.from_numpy(b)[:, None]
        out = {}

        def fn():
            out["y"] = torch.relu_(torch.sparse.mm(wt, xt).add_(bt))

        return fn, (lambda: out["y"].T.numpy()), ref_w
    wt = scipy_sparse.csr_matrix(np.ascontiguousarray(ref_w.T))
    out = {}

    def fn():
        r = wt @ x.T
        r += b[:, None]
        out["y"] = np.maximum(r, 0.0, out=r)

    return fn, (lambda: out["y"].T), ref_w


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def bench_sparse_dense_forward(benchmark, shape, batch, impl):
    import floors

    p = _problem(*shape, batch)
    fn, result, w = _run(impl, p)
    fn()
    want = np.maximum(p["x"].astype(np.float64) @ w.astype(np.float64) + p["b"], 0.0)
    got = np.asarray(result(), np.float64)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= REL * np.max(np.abs(want)), impl
    nbytes, flops = _floor(p, impl)
    benchmark.group = f"sparse {shape[0]}x{shape[1]} b{batch}"
    benchmark.extra_info.update(impl=impl, bytes=nbytes, flops=flops)
    benchmark(fn)
    if not getattr(benchmark, "disabled", False):
        benchmark.extra_info["bw"] = floors.bandwidth("copy", nbytes)


def report(path: str, peak: float = 0.0) -> str:
    """The table of one run; peak (FLOP/s) overrides the run's own measurement, which a
    busy machine can disturb."""
    data = json.load(open(path))
    peak = peak or data.get("customml_bench", {}).get("peak_flops_1core", 213e9)
    groups: dict = {}
    for bm in data["benchmarks"]:
        groups.setdefault(bm["group"], {})[bm["extra_info"]["impl"]] = bm
    lines = [
        f"FMA peak {peak / 1e9:.0f} GFLOP/s (one core); floor = max(bytes / copy bandwidth, FLOPs / peak)",
        "",
        "| case | impl | bytes | FLOPs | median | vs customml | floor | achieved/limit |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for group, impls in groups.items():
        ours = impls["customml"]["stats"]["median"]
        for name, bm in impls.items():
            e, med = bm["extra_info"], bm["stats"]["median"]
            floor = max(e["bytes"] / e["bw"], e["flops"] / peak)
            lines.append(
                f"| {group} | {name} | {e['bytes'] / 1e3:.0f} kB | {e['flops'] / 1e6:.2f} M | "
                f"{med * 1e6:.1f} us | {med / ours:.2f}x | {floor * 1e6:.2f} us | {floor / med:.0%} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(sys.argv[1], float(sys.argv[2]) * 1e9 if len(sys.argv) > 2 else 0.0))
