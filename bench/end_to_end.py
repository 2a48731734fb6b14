"""bench_peers' MLP (784-256-256-10, relu, softmax cross-entropy, Adam(1e-3)) end to end
on one customml device: fit over one epoch of 16 batches of 128, and batch-1 predict into
a preallocated output. Each is first checked against NumPy (bench_peers.check_train_step,
check_predict_b1), then timed call by call with peers_isolated.time_calls: p50 and p99 of
single calls (10,000 for predict), and the first call of a fresh model on its own, which
on "cuda" includes the workspaces' allocation and, for predict, the CUDA graph's capture.
bench/gpu_check.sh runs it on "cuda".

    python bench/end_to_end.py --device cuda --json /tmp/end_to_end.json

The JSON is rewritten before and after each workload, so a run cut short keeps what
finished and names the workload it was in. Exit status 1 when a workload failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_peers as bp  # noqa: E402
import peers_isolated  # noqa: E402
import timing  # noqa: E402


def first_and_steady(fn, case: str) -> dict:
    _, first = timing.once(fn)
    return dict(first_call_us=first * 1e6, **peers_isolated.time_calls(fn, case))


def train(device: str, x, y, w0) -> dict:
    loss0, loss = bp.check_train_step("customml", x, y, w0, bp.numpy_trained_loss(x, y, w0), device)
    out = first_and_steady(bp.train_step("customml", x, y, w0, device).fn, "train")
    return dict(out, per_step_p50_us=out["p50_us"] / bp.STEPS, loss_start=loss0, loss_after=loss)


def predict(device: str, x, y, w0) -> dict:
    x1 = np.ascontiguousarray(x[:1])
    # predict_b1's thread count is onnxruntime's setting; customml keeps its default
    bp.check_predict_b1("customml", bp.predict_b1("customml", x1, w0, 1, device=device), x1, w0)
    return first_and_steady(bp.predict_b1("customml", x1, w0, 1, device=device).fn, "predict")


WORKLOADS = {"train": train, "predict_b1": predict}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help='a customml device: "cuda", "cpu", "cuda-emulated"')
    ap.add_argument("--json", required=True, help="where the results go")
    args = ap.parse_args(argv)

    import customml

    results = {
        "device": args.device,
        "model": "mlp 784-" + "-".join(map(str, bp.SIZES[1:])),
        "batch": bp.BATCH,
        "steps_per_epoch": bp.STEPS,
        "customml_core": customml._core.__file__,
        "workloads": {},
    }

    def save():
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)

    x, y, w0 = bp.mlp_data()
    failed = False
    for name, run in WORKLOADS.items():
        results["workloads"][name] = {"error": "did not finish (the run was stopped here)"}
        save()
        try:
            results["workloads"][name] = run(args.device, x, y, w0)
        except Exception as e:  # noqa: BLE001 -- a wrong result or a device error: recorded, the next workload runs
            results["workloads"][name] = {"error": f"{type(e).__name__}: {e}"}
            failed = True
        save()
        print(f"{name}: {results['workloads'][name]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
