"""The C runtime's latency (issue #16): cml_predict in a C loop against Python's
model.predict in a Python loop and ONNX Runtime (its Python session, I/O binding to
preallocated outputs), each in its own process, the processes alternating round by round
so that a shared machine's drifting load falls on each alike.

- ``--case overhead``: the fixed per-call cost, a Dense(1) model with input_dim=1, batch 1.
- ``--case concurrency``: the float32 MLP at batch 1 and one kernel thread, called by one
  thread and by two threads sharing the model: the time per call over all calls (the
  inverse of the throughput).
- ``--case mlp``: batch-1 latency of the README's MLP (784-256-256-10) as float32, int8
  (static, per channel) and pruned (90%, CSR), at 1 and 2 threads.

    python bench/c_runtime.py --case overhead --rounds 7
    python bench/c_runtime.py --case mlp --rounds 5
    python bench/c_runtime.py --case concurrency --rounds 5

Prints per round the median ns per call of each, and the median over rounds with the ratio
to Python. Needs the installed package's C runtime (customml.get_library_dir(); in a
source tree: cmake --install build/dev --prefix python) and a C compiler (cc).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

import customml as cm

HERE = os.path.dirname(os.path.abspath(__file__))

PY_LOOP = r"""
import sys, time, numpy as np, customml as cm
path, rows, calls, rounds, threads = sys.argv[1], *map(int, sys.argv[2:])
cm.set_num_threads(threads)
m = cm.load(path)
x = (np.arange(rows * m.input_dim) * 7919 % 1000 / 1000).astype(np.float32).reshape(rows, m.input_dim)
for _ in range(calls):
    m.predict(x)
for _ in range(rounds):
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        m.predict(x)
    print((time.perf_counter_ns() - t0) / calls)
"""

ORT_LOOP = r"""
import sys, time, numpy as np, onnxruntime as ort
path, rows, calls, rounds, threads = sys.argv[1], *map(int, sys.argv[2:])
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
inp, out = s.get_inputs()[0], s.get_outputs()[0]
x = (np.arange(rows * inp.shape[1]) * 7919 % 1000 / 1000).astype(np.float32).reshape(rows, inp.shape[1])
y = np.empty((rows, s.run(None, {inp.name: x})[0].shape[1]), np.float32)
b = s.io_binding()
b.bind_cpu_input(inp.name, x)
b.bind_output(out.name, "cpu", 0, np.float32, list(y.shape), y.ctypes.data)
for _ in range(calls):
    s.run_with_iobinding(b)
for _ in range(rounds):
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        s.run_with_iobinding(b)
    print((time.perf_counter_ns() - t0) / calls)
"""


def build_c_loop(directory: str) -> str:
    exe = os.path.join(directory, "c_runtime_loop")
    subprocess.run(
        [
            "cc",
            "-O2",
            "-std=c99",
            "-D_POSIX_C_SOURCE=199309L",
            os.path.join(HERE, "c_runtime_loop.c"),
            "-I",
            cm.get_include(),
            os.path.join(cm.get_library_dir(), "libcustomml.so.0"),
            "-Wl,-rpath," + cm.get_library_dir(),
            "-pthread",
            "-o",
            exe,
        ],
        check=True,
    )
    return exe


def one_chunk(cmd) -> float:
    """Median ns per call of the chunks one process timed."""
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
    return statistics.median(float(v) for v in out)


def models(directory: str, case: str):
    """(name, .cml path, .onnx path or None)."""
    rng = np.random.default_rng(0)
    if case == "overhead":
        m = cm.Sequential([cm.layers.Dense(1)], input_dim=1, seed=0)
        path = os.path.join(directory, "dense1.cml")
        m.save(path)
        return [("Dense(1)", path, None)]
    x = rng.standard_normal((512, 784)).astype(np.float32)
    base = cm.Sequential(
        [cm.layers.Dense(256, "relu"), cm.layers.Dense(256, "relu"), cm.layers.Dense(10)], input_dim=784, seed=0
    )
    pruned = cm.io.loads(cm.io.dumps(base))
    cm.prune.magnitude(pruned, 0.9, measure=False)
    for i in range(3):  # the CSR format at batch 1, as prune's measurement picks it for this model
        pruned._net.set_sparse_format(i, "csr", 64, 2, 4, min_batch=1)
    out = []
    for name, model in (("float32", base), ("int8", cm.quantize.int8(base, calibration=x)), ("pruned 90%", pruned)):
        path = os.path.join(directory, name.split()[0] + ".cml")
        model.save(path)
        onnx_path = path[:-4] + ".onnx"
        model.export_onnx(onnx_path)
        out.append((name, path, onnx_path))
    return out


def concurrency(exe: str, path: str, calls: int, rounds: int) -> None:
    results = {1: [], 2: []}
    for r in range(rounds):
        for callers in results:
            results[callers].append(one_chunk([exe, path, "1", str(calls), "5", "1", str(callers)]))
        print(f"round {r}: " + ", ".join(f"{k} caller(s) {v[-1]:.0f} ns/call" for k, v in results.items()), flush=True)
    one, two = (statistics.median(results[k]) for k in (1, 2))
    print(
        f"== float32 MLP, batch 1, one kernel thread: 1 caller {one:.0f} ns/call, 2 callers sharing the model "
        f"{two:.0f} ns/call: throughput x{one / two:.2f}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", choices=["overhead", "mlp", "concurrency"], default="overhead")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=0, help="calls per chunk (default: 20000 overhead, 2000 mlp)")
    args = ap.parse_args()
    calls = args.calls or (20000 if args.case == "overhead" else 2000)
    with tempfile.TemporaryDirectory() as d:
        exe = build_c_loop(d)
        if args.case == "concurrency":
            concurrency(exe, models(d, "mlp")[0][1], calls, args.rounds)
            return
        threads_list = [1] if args.case == "overhead" else [1, 2]
        for name, path, onnx_path in models(d, args.case):
            for threads in threads_list:
                runners = {
                    "C cml_predict": [exe, path, "1", str(calls), "5", str(threads)],
                    "Python predict": [sys.executable, "-c", PY_LOOP, path, "1", str(calls), "5", str(threads)],
                }
                if onnx_path:
                    runners["ONNX Runtime"] = [
                        sys.executable,
                        "-c",
                        ORT_LOOP,
                        onnx_path,
                        "1",
                        str(calls),
                        "5",
                        str(threads),
                    ]
                results = {k: [] for k in runners}
                for r in range(args.rounds):
                    for k, cmd in runners.items():  # alternating processes, round by round
                        results[k].append(one_chunk(cmd))
                    print(
                        f"{name} {threads}T round {r}: " + ", ".join(f"{k} {v[-1]:.0f} ns" for k, v in results.items()),
                        flush=True,
                    )
                py = statistics.median(results["Python predict"])
                summary = ", ".join(
                    f"{k} {statistics.median(v):.0f} ns ({statistics.median(v) / py:.2f}x Python)"
                    for k, v in results.items()
                )
                c_vs_py = [c / p for c, p in zip(results["C cml_predict"], results["Python predict"])]
                print(
                    f"== {name}, {threads} thread(s), batch 1: {summary}; C/Python per round max {max(c_vs_py):.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
