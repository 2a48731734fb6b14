"""Data-parallel training (customml.distributed) on this machine, and a model of it beyond.

Measured here, the README MLP (784-256-256-10, ReLU, Adam, batch 128 per rank, synthetic
rows of Fashion-MNIST's shape: throughput does not depend on the values):

- training throughput of 1 rank x 1 thread, 1 rank x 2 threads and 2 ranks x 1 thread
  (mpirun -np 2, one kernel thread each), the all-reduce time per step inside fit (which
  includes waiting for the slower rank) and the all-reduce of the gradient buffer alone;
- the MPI point-to-point cost over TCP loopback (``--mca btl tcp,self``): a ping-pong from
  8 B to 8 MB, fitted to t(n) = alpha + n / beta.

On paper: a ring all-reduce of n bytes over p processes costs 2 (p - 1) alpha + 2 (p - 1) / p
n / beta; with the compute time per step measured here (one rank, one thread), the
efficiency t_compute / (t_compute + t_allreduce) (no overlap) at 8, 64 and 256 processes
for this MLP and a 10x wider one (784-2560-2560-10), on a 25 Gb/s and a 100 Gb/s network,
and the batch per rank that keeps it >= 80%.

    python bench/distributed.py            # about a minute; prints the tables (markdown)
    python bench/distributed.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHONPATH = os.pathsep.join([os.path.join(HERE, "..", "python"), os.environ.get("PYTHONPATH", "")])
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe"]
BATCH = 128
# The network cases of the model: line rate, and a latency per message that is an
# assumption, stated (TCP through a switch; RDMA is a few microseconds less).
NETWORKS = {"25 Gb/s": (25e9 / 8, 10e-6), "100 Gb/s": (100e9 / 8, 5e-6)}
PROCESSES = (8, 64, 256)


# ------------------------------------------------------------------------------ workers


def worker_fit(hidden: int, steps: int, repeats: int) -> None:
    """Trains `steps` steps `repeats` times; rank 0 prints one JSON line: the median
    seconds per step and the all-reduce seconds per step."""
    import customml as cm

    ctx = cm.distributed.init()
    rng = np.random.default_rng(0)
    n = BATCH * ctx.size * steps
    x = rng.random((n, 784), dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int32)
    model = cm.Sequential(
        [cm.layers.Dense(hidden, activation="relu"), cm.layers.Dense(hidden, activation="relu"), cm.layers.Dense(10)],
        input_dim=784,
        seed=0,
    )
    model.compile(optimizer=cm.optimizers.Adam(1e-3), loss="softmax_cross_entropy")
    model.fit(x[: BATCH * ctx.size], y[: BATCH * ctx.size], epochs=1, batch_size=BATCH, verbose=0)  # warm
    per_step, reduce = [], []
    for _ in range(repeats):
        ctx.allreduce_seconds, ctx.allreduce_steps = 0.0, 0
        if ctx.active:
            ctx.comm.Barrier()
        t0 = time.perf_counter()
        model.fit(x, y, epochs=1, batch_size=BATCH, shuffle=False, verbose=0)
        per_step.append((time.perf_counter() - t0) / steps)
        reduce.append(ctx.allreduce_seconds / max(ctx.allreduce_steps, 1))
    # The all-reduce alone, the ranks lined up by a barrier before each: inside fit, the
    # time also holds the wait for the slower rank (on a loaded machine, most of it).
    alone = []
    if ctx.active:
        grads = model._net.gradients()
        for _ in range(50):
            ctx.comm.Barrier()
            t0 = time.perf_counter()
            ctx.allreduce_sum(grads)
            alone.append(time.perf_counter() - t0)
    if ctx.rank == 0:
        print(
            json.dumps(
                {
                    "allreduce_alone_s": statistics.median(alone) if alone else 0.0,
                    "ranks": ctx.size,
                    "threads": cm.get_num_threads(),
                    "params": model._net.num_params,
                    "step_s": statistics.median(per_step),
                    "allreduce_s": statistics.median(reduce),
                    "samples_per_s": BATCH * ctx.size / statistics.median(per_step),
                }
            )
        )


def worker_pingpong() -> None:
    """Rank 0 and 1 bounce messages of 8 B to 8 MB; rank 0 prints the one-way times."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    out = {}
    for size in [8 << k for k in range(21)]:
        buf = np.zeros(size, np.uint8)
        reps = max(10, min(2000, (1 << 24) // size))
        times = []
        for _ in range(5):
            comm.Barrier()
            t0 = MPI.Wtime()
            for _ in range(reps):
                if comm.rank == 0:
                    comm.Send(buf, 1)
                    comm.Recv(buf, 1)
                else:
                    comm.Recv(buf, 0)
                    comm.Send(buf, 0)
            times.append((MPI.Wtime() - t0) / reps / 2)
        out[size] = min(times)  # the least disturbed of 5 on a shared machine
    if comm.rank == 0:
        print(json.dumps(out))


# ------------------------------------------------------------------------------ driver


def run(ranks: int, threads: int, args, mca=()) -> dict:
    env = dict(os.environ, PYTHONPATH=PYTHONPATH, CUSTOMML_NUM_THREADS=str(threads))
    cmd = [*MPIRUN, *mca, "-np", str(ranks), sys.executable, os.path.abspath(__file__), *map(str, args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout + proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fit_alpha_beta(pingpong: dict) -> tuple:
    """alpha: the smallest messages' one-way time; beta: the bandwidth the largest reach
    (least squares of t = alpha + n / beta over messages >= 64 KB for the slope)."""
    sizes = np.array(sorted(int(k) for k in pingpong))
    times = np.array([pingpong[str(s)] if str(s) in pingpong else pingpong[s] for s in sizes])
    alpha = float(np.median(times[sizes <= 64]))
    big = sizes >= 65536
    slope = float(np.polyfit(sizes[big], times[big], 1)[0])
    return alpha, 1.0 / slope


def ring_seconds(p: int, nbytes: float, alpha: float, beta: float) -> float:
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * nbytes / beta


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=["fit", "pingpong"])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.worker == "fit":
        return worker_fit(args.hidden, args.steps, args.repeats)
    if args.worker == "pingpong":
        return worker_pingpong()
    if shutil.which("mpirun") is None:
        sys.exit("mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)")
    fit = ["--worker", "fit", "--steps", args.steps, "--repeats", args.repeats]
    # The three configurations alternate over rounds (the machine is shared).
    configs = {"1 rank x 1 thread": (1, 1), "1 rank x 2 threads": (1, 2), "2 ranks x 1 thread": (2, 1)}
    rounds = {name: [] for name in configs}
    for _ in range(3):
        for name, (ranks, threads) in configs.items():
            rounds[name].append(run(ranks, threads, fit))
    measured = {}
    for name, rows in rounds.items():
        best = sorted(rows, key=lambda r: r["samples_per_s"])[len(rows) // 2]  # the median round
        measured[name] = best
    wide = run(1, 1, [*fit[:2], "--hidden", 2560, "--steps", 4, "--repeats", 3])
    pingpong = run(2, 1, ["--worker", "pingpong"], mca=("--mca", "btl", "tcp,self"))
    alpha, beta = fit_alpha_beta({str(k): v for k, v in pingpong.items()})
    base = measured["1 rank x 1 thread"]
    print("| configuration | samples/s | step (ms) | all-reduce in fit (ms/step) | all-reduce alone (ms) | vs 1 x 1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in measured.items():
        print(
            f"| {name} | {r['samples_per_s']:,.0f} | {r['step_s'] * 1e3:.2f} | {r['allreduce_s'] * 1e3:.3f} | "
            f"{r['allreduce_alone_s'] * 1e3:.3f} | {r['samples_per_s'] / base['samples_per_s']:.2f}x |"
        )
    print(f"\nloopback (TCP) alpha = {alpha * 1e6:.1f} us, beta = {beta / 1e9:.2f} GB/s")
    models = {"README MLP": base, "10x wider": wide}
    print(
        "\n| model | params | compute/step, 1 thread (ms) | network | p | all-reduce (ms) | efficiency | batch/rank for 80% |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    table = []
    for mname, r in models.items():
        nbytes = 4 * r["params"]
        compute = r["step_s"]
        for net, (bw, lat) in [("loopback", (beta, alpha)), *NETWORKS.items()]:
            for p in PROCESSES:
                t_ar = ring_seconds(p, nbytes, lat, bw)
                eff = compute / (compute + t_ar)
                # compute scales with the batch; the all-reduce does not
                batch80 = int(np.ceil(4 * t_ar / (compute / BATCH)))
                table.append(dict(model=mname, net=net, p=p, allreduce_s=t_ar, efficiency=eff, batch80=batch80))
                print(
                    f"| {mname} | {r['params']:,} | {compute * 1e3:.2f} | {net} | {p} | {t_ar * 1e3:.2f} | "
                    f"{eff:.0%} | {batch80} |"
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(measured=measured, wide=wide, alpha=alpha, beta=beta, pingpong=pingpong, model=table), f)


if __name__ == "__main__":
    main()
