"""Load test of ``customml serve`` against MLServer (issue #17), on loopback: requests per
second and p50 / p99 latency at 1, 8 and 64 concurrent clients sending batch-1 requests,
JSON and binary, dynamic batching off and on, for the README's Fashion-MNIST MLP
(784-256-256-10, relu) in float32 and int8; MLServer serves the same weights as a
scikit-learn MLPClassifier through its sklearn runtime (JSON only: it has no binary tensor
extension), one worker process and the same batching settings. Load from ``hey`` (Debian).

    python3 bench/serve_load.py [--seconds 3] [--rounds 3] [--soak 120]

Rounds alternate the servers; the figures are medians over rounds. A soak run (``--soak
SECONDS``) holds a fixed rate and reports errors and resident memory at its start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

import customml as cm  # noqa: E402

MLSERVER_VENV = Path("/work/venvs/mlserver")
BATCH = {"max_batch_size": 64, "max_queue_delay_us": 500}  # the "batching on" settings, both servers


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(base: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/v2/health/ready", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server not ready")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def hey(url: str, body: Path, clients: int, seconds: float, headers=(), extra=()) -> dict:
    """hey for ``seconds`` at ``clients`` concurrent connections (keep-alive)."""
    cmd = ["hey", "-z", f"{seconds}s", "-c", str(clients), "-m", "POST", "-D", str(body)]
    cmd += ["-T", "application/json"] if not headers else ["-T", "application/octet-stream"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run([*cmd, *extra, url], capture_output=True, text=True, timeout=900).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {int(p): float(s) * 1e3 for p, s in re.findall(r"(\d+)% in ([\d.]+) secs", out)}
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    ok = codes.get(200, 0)
    failed = out.split("Error distribution:")[1] if "Error distribution:" in out else ""
    errors = sum(codes.values()) - ok + sum(int(n) for n in re.findall(r"\[(\d+)\]", failed))
    return {"rps": rps, "p50_ms": pct.get(50), "p99_ms": pct.get(99), "ok": ok, "errors": errors}


def _batches(base: str, model: str) -> tuple:
    """(rows inferred, executions) of a model so far, from /metrics."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()

    def value(name: str) -> float:
        found = re.search(rf'^{name}\{{model="{model}",version="1"\}} ([\d.e+]+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    return value("nv_inference_count_total"), value("nv_inference_exec_count_total")


def make_models(work: Path) -> np.ndarray:
    """The README's architecture, briefly trained on fashion_mnist (speed, not accuracy, is
    measured); its int8 copy; the same weights as an sklearn MLPClassifier for MLServer."""
    (x, y), _ = cm.datasets.load("fashion_mnist")
    model = cm.Sequential(
        [cm.layers.Dense(256, activation="relu"), cm.layers.Dense(256, activation="relu"), cm.layers.Dense(10)],
        input_dim=784,
        seed=0,
    )
    model.compile(optimizer="adamw", loss="softmax_cross_entropy")
    model.fit(x[:20000], y[:20000], epochs=1, batch_size=128, verbose=0)
    for name, m in (("fmnist", model), ("fmnist_int8", cm.quantize.int8(model, x[:1024]))):
        (work / "repo" / name / "1").mkdir(parents=True)
        m.save(work / "repo" / name / "1" / "model.cml")
    weights = [w for layer in model.layers for w in layer.get_weights()]
    np.savez(work / "weights.npz", *weights)
    return x[:1]


_SKLEARN = """
import sys, joblib, numpy as np
from sklearn.neural_network import MLPClassifier
w = np.load(sys.argv[1]); w = [w[f"arr_{i}"] for i in range(len(w.files))]
m = MLPClassifier(hidden_layer_sizes=(256, 256), activation="relu", max_iter=1)
import warnings; warnings.simplefilter("ignore")
m.fit(np.zeros((10, 784), np.float32), np.arange(10))  # shapes only; the weights are set next
m.coefs_ = [w[0].astype(np.float32), w[2].astype(np.float32), w[4].astype(np.float32)]
m.intercepts_ = [w[1].astype(np.float32), w[3].astype(np.float32), w[5].astype(np.float32)]
joblib.dump(m, sys.argv[2])
"""


def start_customml(work: Path, batching: bool, threads: int):
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "customml",
        "serve",
        str(work / "repo"),
        "--port",
        str(port),
        "--threads",
        str(threads),
    ]
    if batching:
        cmd += [
            "--max-batch-size",
            str(BATCH["max_batch_size"]),
            "--max-queue-delay-us",
            str(BATCH["max_queue_delay_us"]),
        ]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}"
    _wait_ready(base, proc)
    return proc, base


def start_mlserver(work: Path, batching: bool):
    folder = work / ("mlserver_b" if batching else "mlserver")
    model_dir = folder / "fmnist"
    model_dir.mkdir(parents=True, exist_ok=True)
    if not (work / "model.joblib").exists():
        subprocess.run(
            [
                str(MLSERVER_VENV / "bin" / "python"),
                "-c",
                _SKLEARN,
                str(work / "weights.npz"),
                str(work / "model.joblib"),
            ],
            check=True,
        )
    shutil.copy(work / "model.joblib", model_dir / "model.joblib")
    settings = {
        "name": "fmnist",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }
    if batching:
        settings.update(max_batch_size=BATCH["max_batch_size"], max_batch_time=BATCH["max_queue_delay_us"] * 1e-6)
    (model_dir / "model-settings.json").write_text(json.dumps(settings))
    port = _free_port()
    server = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": _free_port(),
        "metrics_port": _free_port(),
        "parallel_workers": 0,
    }
    (folder / "settings.json").write_text(json.dumps(server))
    proc = subprocess.Popen(
        [str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    _wait_ready(base, proc)
    return proc, base


def bodies(work: Path, row: np.ndarray) -> dict:
    js = {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": row.ravel().tolist()}]}
    (work / "json.body").write_text(json.dumps(js))
    raw = row.astype("<f4").tobytes()
    head = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [1, 784], "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
        }
    ).encode()
    (work / "binary.body").write_bytes(head + raw)
    return {
        "json": (work / "json.body", ()),
        "binary": (work / "binary.body", (f"Inference-Header-Content-Length: {len(head)}",)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, nargs="*", default=[1, 8, 64])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--models", nargs="*", default=["fmnist", "fmnist_int8"], help="customml's models to load")
    parser.add_argument("--formats", nargs="*", default=["json", "binary"], help="customml's request bodies")
    parser.add_argument("--no-mlserver", dest="mlserver", action="store_false", help="customml alone")
    parser.add_argument("--soak", type=float, default=0, help="seconds of a fixed-rate soak run (0: none)")
    parser.add_argument("--soak-rate", type=int, default=400, help="requests per second during the soak")
    parser.add_argument("--json", default=None, help="write the raw results here")
    args = parser.parse_args()
    if shutil.which("hey") is None:
        sys.exit("hey is not installed (Debian: apt-get install hey)")
    with_mlserver = args.mlserver and (MLSERVER_VENV / "bin" / "mlserver").exists()
    work = Path(tempfile.mkdtemp(prefix="serve_load_"))
    results: dict = {}
    try:
        row = make_models(work)
        body = bodies(work, row)
        servers = [("customml", b) for b in (False, True)] + (
            [("mlserver", b) for b in (False, True)] if with_mlserver else []
        )
        for rnd in range(args.rounds):
            for kind, batching in servers if rnd % 2 == 0 else servers[::-1]:
                proc, base = (
                    start_customml(work, batching, args.threads)
                    if kind == "customml"
                    else start_mlserver(work, batching)
                )
                try:
                    models = args.models if kind == "customml" else ["fmnist"]
                    formats = args.formats if kind == "customml" else ["json"]
                    for model in models:
                        url = f"{base}/v2/models/{model}/infer"
                        hey(url, body["json"][0], 8, 1)  # warm-up
                        for fmt in formats:
                            for c in args.clients:
                                before = _batches(base, model) if kind == "customml" else None
                                r = hey(url, body[fmt][0], c, args.seconds, headers=body[fmt][1])
                                key = f"{kind}|{model}|{fmt}|{'batch' if batching else 'nobatch'}|{c}"
                                if before is not None:  # rows / executions over this measurement
                                    after = _batches(base, model)
                                    r["avg_batch"] = (after[0] - before[0]) / max(after[1] - before[1], 1)
                                results.setdefault(key, []).append(r)
                                print(key, r, flush=True)
                finally:
                    _stop(proc)
        if args.soak:
            proc, base = start_customml(work, True, args.threads)
            try:
                url = f"{base}/v2/models/fmnist/infer"
                hey(url, body["json"][0], 8, 1)
                rss0 = _rss_kib(proc.pid)
                clients = 8
                r = hey(
                    url,
                    body["json"][0],
                    clients,
                    0,
                    extra=["-z", f"{int(args.soak)}s", "-q", str(args.soak_rate // clients)],
                )
                r.update(rss_start_kib=rss0, rss_end_kib=_rss_kib(proc.pid), seconds=args.soak, rate=args.soak_rate)
                results["soak"] = [r]
                print("soak", r, flush=True)
            finally:
                _stop(proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for key, runs in results.items():
        summary[key] = {
            k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], (int, float))
        }
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results, "median": summary}, indent=1))


if __name__ == "__main__":
    main()
