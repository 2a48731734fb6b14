"""Thread coexistence: bench/bench_peers.py's workloads timed three ways, side by side.

- isolated:    each library alone in a fresh process that imports nothing else;
- loaded:      one process with customml, NumPy, torch and onnxruntime loaded and every pool
               started, the other libraries idle while one is timed;
- interleaved: the same process, but before each timed call every other library runs a
               threaded call first, so its pool is in whatever spin-wait it does after work.

A pool that spins against another shows as interleaved (or loaded) slower than isolated.

On a shared, loaded machine a library timed a minute after another meets different load;
`--round-robin N` instead times one call of every case in turn, N rounds, in one process,
so that drifting load falls on every library alike (median, p99 and min per case).

    python bench/peers_isolated.py                       # every case at 1 and 2 threads
    python bench/peers_isolated.py --threads 2 --cases gemm,adam
    python bench/peers_isolated.py --json /tmp/peers-isolated.json
    python bench/peers_isolated.py --round-robin 30 --cases train,softmax_ce

Each case prints its median (and p99 for batch-1 predict, over 10,000 calls).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_peers as bp  # noqa: E402  (lazy about every library but NumPy)
import timing  # noqa: E402

# (case, impl): the library an impl needs
LIB = {
    "customml": "customml",
    "numpy": "numpy",
    "torch": "torch",
    "torch_fused": "torch",
    "torch_foreach": "torch",
    "onnxruntime": "onnxruntime",
}


def cases(selected: List[str]) -> List[Tuple[str, str]]:
    out = []
    for impl in ("customml", "torch_fused", "torch_foreach", "numpy"):
        out.append(("train", impl))
    for impl in ("customml", "torch", "onnxruntime"):
        out.append(("predict", impl))
    for name in ("adam", "adamw"):
        for impl in ("customml", "torch_fused", "torch_foreach"):
            out.append((name, impl))
    for shape in bp.GEMM_SHAPES:
        for impl in ("customml", "numpy", "torch"):
            out.append(("gemm " + "x".join(map(str, shape)), impl))
    for impl in ("customml", "torch"):
        out.append(("softmax_ce", impl))
    have = {"torch": bp.HAVE_TORCH, "onnxruntime": bp.HAVE_ORT}
    return [
        (c, i) for c, i in out if have.get(LIB[i], True) and (not selected or any(c.startswith(s) for s in selected))
    ]


def build(case: str, impl: str, threads: int, tmpdir: str) -> Callable[[], object]:
    if case in ("train", "predict"):
        x, y, w0 = bp.mlp_data()
        if case == "train":
            return bp.train_step(impl, x, y, w0).fn
        path = bp.export_onnx(w0, os.path.join(tmpdir, "mlp.onnx")) if impl == "onnxruntime" else None
        return bp.predict_b1(impl, np.ascontiguousarray(x[:1]), w0, threads, path).fn
    if case in ("adam", "adamw"):
        p0, g = bp.adam_state()
        run = bp.adam(impl, p0, g, decoupled=case == "adamw")
        for _ in range(bp.ADAM_STEP):
            run.fn()
        return run.fn
    if case.startswith("gemm"):
        shape = tuple(int(s) for s in case.split()[1].split("x"))
        return bp.gemm(impl, *bp.gemm_inputs(shape)).fn
    assert case == "softmax_ce"
    return bp.softmax_ce(impl, *bp.ce_inputs()).fn


def time_calls(fn: Callable[[], object], case: str, before: Optional[Callable[[], None]] = None) -> Dict:
    """p50 / p99 of single calls: 10,000 for predict (1,000 when each follows the other
    libraries' calls), else as many as fit in ~0.6 s (>= 7)."""
    calls = timing.calls_in(0.6, fn, at_least=7, at_most=200)  # after a warm-up call and a timed one
    if case == "predict":
        calls = bp.LATENCY_CALLS if before is None else bp.LATENCY_CALLS // 10
    ns = timing.call_ns(fn, calls, before=before)
    return {"p50_us": float(np.percentile(ns, 50)) / 1e3, "p99_us": float(np.percentile(ns, 99)) / 1e3, "calls": calls}


def wakers(threads: int, tmpdir: str) -> Dict[str, Callable[[], None]]:
    """One threaded call per library (a 256x256x256 GEMM, above customml's threading
    threshold of 2^20 multiply-adds; a batch-1 ORT run) that leaves its pool fresh from work."""
    a, b = bp.gemm_inputs((256, 256, 256))
    out = {"customml": bp.gemm("customml", a, b).fn, "numpy": bp.gemm("numpy", a, b).fn}
    if bp.HAVE_TORCH:
        out["torch"] = bp.gemm("torch", a, b).fn
    if bp.HAVE_ORT:
        x, _, w0 = bp.mlp_data()
        path = bp.export_onnx(w0, os.path.join(tmpdir, "wake.onnx"))
        out["onnxruntime"] = bp.predict_b1("onnxruntime", np.ascontiguousarray(x[:1]), w0, threads, path).fn
    return out


def worker(mode: str, threads: int, selected: List[Tuple[str, str]]) -> List[Dict]:
    with tempfile.TemporaryDirectory() as tmpdir:
        if mode == "isolated":
            ((case, impl),) = selected
            # only the impl's library (NumPy is everyone's input format)
            if LIB[impl] != "numpy":
                __import__(LIB[impl])
            bp.set_threads(threads)
            return [
                dict(
                    case=case,
                    impl=impl,
                    threads=threads,
                    mode=mode,
                    **time_calls(build(case, impl, threads, tmpdir), case),
                )
            ]
        import customml  # noqa: F401  every library loaded, every pool started

        if bp.HAVE_TORCH:
            import torch  # noqa: F401
        bp.set_threads(threads)
        wake = wakers(threads, tmpdir)
        for w in wake.values():
            w()
        results = []
        for case, impl in selected:
            fn = build(case, impl, threads, tmpdir)
            others = [w for lib, w in wake.items() if lib != LIB[impl]]

            def before():
                for w in others:
                    w()

            for m, pre in (("loaded", None), ("interleaved", before)):
                results.append(dict(case=case, impl=impl, threads=threads, mode=m, **time_calls(fn, case, pre)))
        return results


def round_robin(rounds: int, threads: int, selected: List[Tuple[str, str]]) -> None:
    import customml  # noqa: F401

    if bp.HAVE_TORCH:
        import torch  # noqa: F401
    bp.set_threads(threads)
    with tempfile.TemporaryDirectory() as tmpdir:
        fns = [build(case, impl, threads, tmpdir) for case, impl in selected]
        for fn in fns:
            fn()
        by_case = timing.rounds(dict(enumerate(fns)), rounds, timing.one_call_ns)
        ns = np.array([by_case[j] for j in range(len(fns))], np.int64).T  # (rounds, cases)
    print(f"| case | impl | threads | median of {rounds} rounds | p99 | min | median / customml's |")
    print("|---|---|---:|---:|---:|---:|---:|")
    med = np.median(ns, axis=0) / 1e3
    p99 = np.percentile(ns, 99, axis=0) / 1e3
    ours = {case: med[j] for j, (case, impl) in enumerate(selected) if impl == "customml"}
    for j, (case, impl) in enumerate(selected):
        ratio = f"{med[j] / ours[case]:.2f}x" if case in ours else ""
        print(
            f"| {case} | {impl} | {threads} | {med[j]:.1f} us | {p99[j]:.1f} us | {ns[:, j].min() / 1e3:.1f} us "
            f"| {ratio} |"
        )


def run_worker(args: List[str]) -> List[Dict]:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", *args], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument(
        "--cases", default="", help="comma-separated case prefixes (train, predict, adam, gemm, softmax_ce)"
    )
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument(
        "--round-robin",
        type=int,
        default=0,
        metavar="N",
        help="instead: N rounds of one call of every case in turn, one process",
    )
    ap.add_argument("--worker", nargs=3, metavar=("MODE", "THREADS", "CASES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        mode, threads, spec = args.worker
        selected = [tuple(c.split("|")) for c in spec.split(";")]
        print(json.dumps(worker(mode, int(threads), selected)))
        return
    prefixes = [c for c in args.cases.split(",") if c]
    todo = cases(prefixes)
    if args.round_robin:
        for threads in (int(t) for t in args.threads.split(",")):
            round_robin(args.round_robin, threads, todo)
        return
    rows: Dict[Tuple, Dict[str, Dict]] = {}
    for threads in (int(t) for t in args.threads.split(",")):
        spec = ";".join(f"{c}|{i}" for c, i in todo)
        results = run_worker(["together", str(threads), spec])
        for case, impl in todo:
            results += run_worker(["isolated", str(threads), f"{case}|{impl}"])
        for r in results:
            rows.setdefault((r["case"], r["impl"], threads), {})[r["mode"]] = r
    print(
        "| case | impl | threads | isolated p50 | loaded p50 | interleaved p50 | loaded / isolated "
        "| interleaved / isolated | p99 isolated / loaded / interleaved |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for (case, impl, threads), r in rows.items():
        iso, lo, il = r["isolated"], r["loaded"], r["interleaved"]
        print(
            f"| {case} | {impl} | {threads} | {iso['p50_us']:.1f} us | {lo['p50_us']:.1f} us | "
            f"{il['p50_us']:.1f} us | {lo['p50_us'] / iso['p50_us']:.2f} | {il['p50_us'] / iso['p50_us']:.2f} | "
            f"{iso['p99_us']:.1f} / {lo['p99_us']:.1f} / {il['p99_us']:.1f} us |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dict(case=c, impl=i, threads=t, **r) for (c, i, t), r in rows.items()], f, indent=1)


if __name__ == "__main__":
    main()
