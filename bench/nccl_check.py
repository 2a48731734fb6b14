"""The NCCL path of customml.distributed on one GPU (bench/gpu_check.sh's e2e stage): a
one-rank communicator built as the N-rank one is (the unique id through Context.bcast,
ncclCommInitRank on the network's device), then ncclAllReduce enqueued on the executor's
stream between compute_gradients and apply_gradients. With one rank the sum is the
gradient itself, so the step must equal train_batch bit for bit; what it checks is the
plumbing (library, id, communicator, addresses, stream order), not a reduction across
GPUs, which needs two (NCCL refuses two ranks on one device).

    python bench/nccl_check.py          # prints one line; exit 0 also when skipped
"""

from __future__ import annotations

import ctypes
import sys

import numpy as np

import customml as cm
from customml import distributed


def main() -> int:
    if not cm.cuda.is_available():
        print(f"nccl_check: skipped: no cuda device ({cm.cuda.unavailable_reason()})")
        return 0
    lib = distributed._load_nccl()
    if lib is None:
        print("nccl_check: skipped: libnccl not found (pip install 'customml[nccl]')")
        return 0
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 32)).astype(np.float32)
    y = rng.integers(0, 4, 256).astype(np.int32)
    index = np.arange(64, dtype=np.int64)
    nets = []
    for _ in range(2):
        model = cm.Sequential(
            [cm.layers.Dense(64, activation="relu"), cm.layers.Dense(4)], input_dim=32, seed=1, device="cuda"
        )
        model.compile(optimizer=cm.optimizers.Adam(1e-3), loss="softmax_cross_entropy")
        model.predict(x[:1])  # builds the executor
        nets.append(model._net)
    reference, net = nets
    nccl = distributed._Nccl(distributed.Context(0, 1, None), net, lib)
    for _ in range(5):
        reference.train_batch(x, y, index)
        net.compute_gradients(x, y, index, None, 1.0, 64, 0)
        nccl()
        net.apply_gradients(64)
    a = reference.read_params(0, reference.num_params)
    b = net.read_params(0, net.num_params)
    if not np.array_equal(a, b):
        print(f"nccl_check: FAILED: the NCCL step differs from train_batch by {np.max(np.abs(a - b)):.3g}")
        return 1
    version = ctypes.c_int()
    lib.ncclGetVersion(ctypes.byref(version))
    print(f"nccl_check: passed: NCCL {version.value}, one rank, 5 steps equal train_batch bit for bit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
