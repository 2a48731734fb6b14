"""The thread pool's cost at two threads: a batch-128 784->256 relu forward (about 140 us a
thread) timed at 1 and 2 threads in turn, with the machine's idle and steal ticks over each
run (from /proc/stat, Linux), which say whether the second core was free at all; with
--coexist, what customml's polling worker costs the other pools: a 2-thread NumPy (and torch,
if installed) 256^3 matmul timed after 1 ms of idling and right after a customml 2-thread
GEMM, whose worker then polls for up to 50 us.

    python bench/pool_wakeup.py [--rounds 2] [--calls 3000] [--coexist]

A 2-thread median near half the 1-thread one means the worker started its half at once; a
median near the 1-thread one with idle ticks > 0 means it woke late (a sleeping worker);
with idle 0 the second core was busy with something else and nothing here can be read.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402


def ticks() -> np.ndarray:
    with open("/proc/stat") as f:
        return np.array(f.readline().split()[1:], dtype=np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--coexist", action="store_true")
    args = ap.parse_args()
    if args.coexist:
        coexist(args.rounds, args.calls)
        return

    import customml as cm
    from customml import ops

    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 784)).astype(np.float32)
    w = (rng.standard_normal((784, 256)) * 0.05).astype(np.float32)
    b = np.zeros(256, np.float32)
    out = np.empty((128, 256), np.float32)
    print("| threads | min | p10 | p50 | p90 | idle ticks | steal ticks |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for _ in range(args.rounds):
        for threads in (1, 2):
            cm.set_num_threads(threads)
            forward = lambda: ops.dense_forward(x, w, b, activation="relu", out=out)  # noqa: E731
            for _ in range(200):  # warm-up, outside the ticks counted
                forward()
            t0 = ticks()
            ns = timing.call_ns(forward, args.calls)
            d = ticks() - t0
            q = np.percentile(ns, [0, 10, 50, 90]) / 1e3
            print(f"| {threads} | {q[0]:.1f} us | {q[1]:.1f} us | {q[2]:.1f} us | {q[3]:.1f} us | {d[3]} | {d[7]} |")


def coexist(rounds: int, calls: int) -> None:
    from threadpoolctl import threadpool_limits

    import customml as cm
    from customml import ops

    rng = np.random.default_rng(0)
    a, b = rng.random((256, 256), dtype=np.float32), rng.random((256, 256), dtype=np.float32)
    bias, out = np.zeros(256, np.float32), np.empty((256, 256), np.float32)
    peers = {"numpy": lambda: a @ b}
    try:
        import torch

        torch.set_num_threads(2)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        peers["torch"] = lambda: ta @ tb
    except ImportError:
        pass
    cm.set_num_threads(2)

    def idle(us: int) -> None:  # busy, not asleep: the peer's pools see a running process
        end = timing.clock() + us * 1000
        while timing.clock() < end:
            pass

    before = {
        "after 1 ms idle": lambda: idle(1000),
        "right after a customml GEMM": lambda: ops.dense_forward(a, b, bias, out=out),
    }
    print("| peer, 2 threads | " + " | ".join(before) + " |")
    print("|---|" + "---:|" * len(before))
    with threadpool_limits(limits=2):
        for _ in range(rounds):
            for name, peer in peers.items():
                cells = []
                for prepare in before.values():
                    ns = timing.call_ns(peer, calls, before=prepare)
                    cells.append(f"{np.median(ns) / 1e3:.1f} us")
                print(f"| {name} 256^3 | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
