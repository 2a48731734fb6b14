"""The sparse and dense kernels per call inside the executor, where the binding's fixed cost
(about 1.5 us per Network.predict) is shared: a one-layer relu network, 90% random sparsity,
dense (pre-packed GEMM) against csr (the packed layout up to 8 rows, the transposed path
beyond), Network.predict over 64 rows with batch_size b runs the layer 64 / b times in C++.
64 rows keep x in L1/L2 beside the weights, as in a service; interleaved repetitions,
medians and minima per call.

    python bench/sparse_in_executor.py [repetitions]
"""

from __future__ import annotations

import os
import sys

import numpy as np

import customml as cm
from customml._formats import probe

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402

ROWS = 64
SHAPES = [(784, 256), (256, 256)]
BATCHES = [1, 2, 4, 8]


def main(repetitions: int = 400) -> None:
    cm.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(
        f"customml {cm.__version__}, {cm.build_info()['kernels'].get('sparse_dense_packed', 'no packed kernel')}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("| layer | batch | dense | CSR | speed-up (median) | speed-up (min) |")
    print("|---|---:|---:|---:|---:|---:|")
    for n_in, n_out in SHAPES:
        w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        w[rng.random(w.shape) < 0.9] = 0.0
        bias = (0.1 * rng.standard_normal(n_out)).astype(np.float32)
        model = cm.Sequential([cm.layers.Dense(n_out, activation="relu")], input_dim=n_in, seed=0)
        nets = {f: probe(model, 0, (w, bias), f, (2, 4))._net for f in ("dense", "csr")}
        x = rng.uniform(-1.0, 1.0, (ROWS, n_in)).astype(np.float32)
        y = np.empty((ROWS, n_out), np.float32)
        for b in BATCHES:
            for net in nets.values():
                net.predict(x, y, b)
            ns = timing.rounds(nets, repetitions, lambda net: timing.one_call_ns(lambda: net.predict(x, y, b)))
            times = {f: [t / (ROWS // b) / 1e3 for t in v] for f, v in ns.items()}
            d, c = np.median(times["dense"]), np.median(times["csr"])
            print(
                f"| {n_in}x{n_out} | {b} | {d:.2f} us | {c:.2f} us | {d / c:.2f}x | "
                f"{min(times['dense']) / min(times['csr']):.2f}x |"
            )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 400)
