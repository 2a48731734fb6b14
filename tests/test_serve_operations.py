"""customml serve in operation (issue #17): dynamic batching, a repository that reloads
under load without losing a request, the repository extension, A/B splits, SIGTERM
draining and the access log. Real servers on loopback ports, bounded request counts."""

from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from customml.serve.config import parse_split
from serve_support import TIMEOUT, Server, classifier, requests, rows, sample, save, scrape, start_process


def _logits(response) -> np.ndarray:
    out = response.json()["outputs"][0]
    return np.array(out["data"], np.float32).reshape(out["shape"])


def test_dynamic_batching_merges_requests_and_splits_results_back(tmp_path):
    model = classifier()
    save(model, tmp_path / "m.cml")
    x = rows(256, seed=9)
    expected = model.predict(x)  # predict is row-wise batch-invariant: one row alone = that row in a batch
    with Server(tmp_path / "m.cml", max_batch_size=32, max_queue_delay_us=20000, threads=2) as server:

        def client(start: int) -> list:
            with requests.Session() as s:
                return [
                    (
                        i,
                        s.post(
                            f"{server.base}/v2/models/m/infer",
                            json={
                                "inputs": [
                                    {"name": "input", "shape": [1, 12], "datatype": "FP32", "data": x[i].tolist()}
                                ]
                            },
                            timeout=TIMEOUT,
                        ),
                    )
                    for i in range(start, 256, 16)
                ]

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = [r for rs in pool.map(client, range(16)) for r in rs]
        for i, r in results:
            assert r.status_code == 200, r.text
            assert np.array_equal(_logits(r)[0], expected[i]), i
        m = scrape(server)
        rows_inferred = sample(m, "nv_inference_count_total", model="m", version="1")
        executions = sample(m, "nv_inference_exec_count_total", model="m", version="1")
        assert rows_inferred == 256  # the warm-up calls predict directly, outside the counters
        # 16 clients and a 20 ms window: batches of several rows (1.0 would mean no batching).
        assert rows_inferred / executions >= 2.0, (rows_inferred, executions)
        assert sample(m, "nv_inference_request_success_total", model="m", version="1") == 256
        assert sample(m, "nv_inference_queue_duration_seconds_count", model="m", version="1") == 256


def _version(repo, name: str, version: int, seed: int):
    model = classifier(seed=seed)
    save(model, repo / name / str(version) / "model.cml")
    return model


def test_polling_reload_under_load_loses_no_request(tmp_path):
    repo = tmp_path / "repo"
    models = {"1": _version(repo, "m", 1, seed=1)}
    x = rows(3, seed=4)
    with Server(repo, poll_interval_s=0.05, threads=2) as server:
        stop = threading.Event()
        seen: list = []

        def load():
            with requests.Session() as s:
                while not stop.is_set():
                    seen.append(
                        s.post(
                            f"{server.base}/v2/models/m/infer",
                            json={
                                "inputs": [
                                    {"name": "input", "shape": [3, 12], "datatype": "FP32", "data": x.ravel().tolist()}
                                ]
                            },
                            timeout=TIMEOUT,
                        )
                    )

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)
            # A new version is written elsewhere and moved in whole, as a deployment would.
            staging = tmp_path / "staging"
            models["2"] = _version(staging, "m", 2, seed=2)
            os.rename(staging / "m" / "2", repo / "m" / "2")
            deadline = time.monotonic() + TIMEOUT
            while server.get("/v2/models/m").json()["versions"] != ["2"]:
                assert time.monotonic() < deadline, "version 2 was not picked up"
                time.sleep(0.02)
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join(TIMEOUT)
        versions = [r.headers.get("x-model-version") for r in seen]
        assert all(r.status_code == 200 for r in seen), {r.status_code for r in seen}
        assert "1" in versions and "2" in versions and versions[-1] == "2"
        expected = {v: m.predict(x) for v, m in models.items()}
        for r, v in zip(seen, versions):
            assert np.array_equal(_logits(r), expected[v])  # every response from one whole model
        m = scrape(server)
        assert sample(m, "customml_model_ready", model="m", version="2") == 1
        assert ("customml_model_ready", frozenset({"model": "m", "version": "1"}.items())) not in m  # dropped


def test_repository_extension_index_unload_load(tmp_path):
    repo = tmp_path / "repo"
    _version(repo, "a", 1, seed=1)
    _version(repo, "b", 3, seed=2)
    (repo / "b" / "4").mkdir()
    (repo / "b" / "4" / "model.cml").write_bytes(b"not a model")  # fails its checks: b stays at 3
    with Server(repo) as server:
        index = {(r["name"], r["version"]): r for r in server.post("/v2/repository/index").json()}
        assert index[("a", "1")]["state"] == "READY" and index[("b", "3")]["state"] == "READY"
        assert index[("b", "4")]["state"] == "UNAVAILABLE" and index[("b", "4")]["reason"]
        assert server.get("/v2/models/b").json()["versions"] == ["3"]  # the newest version that loads
        assert server.post("/v2/repository/models/a/unload").status_code == 200
        r = server.infer("a", rows(1))
        assert r.status_code == 503 and "not ready" in r.json()["error"]
        assert server.get("/v2/models/a/ready").status_code == 503
        assert server.post("/v2/repository/index", json={"ready": True}).json() == [
            {"name": "b", "version": "3", "state": "READY", "reason": ""}
        ]
        assert server.post("/v2/repository/models/a/load").status_code == 200
        assert server.infer("a", rows(1)).status_code == 200
        assert server.post("/v2/repository/index", data=b"{").status_code == 400
        assert server.post("/v2/repository/models/zzz/load").status_code == 404
        assert server.post("/v2/repository/models/zzz/unload").status_code == 404


def test_ab_split_follows_the_weights_and_sticks_to_request_ids(tmp_path):
    repo = tmp_path / "repo"
    _version(repo, "m", 1, seed=1)
    _version(repo, "m", 2, seed=2)
    (repo / "m" / "config.json").write_text(json.dumps({"split": {"1": 0.7, "2": 0.3}}))
    body = {"inputs": [{"name": "input", "shape": [1, 12], "datatype": "FP32", "data": rows(1)[0].tolist()}]}
    with Server(repo) as server:
        assert server.get("/v2/models/m").json()["versions"] == ["1", "2"]
        # 2,000 distinct request ids: their hashes make the draw (and the test) deterministic.
        counts = {"1": 0, "2": 0}
        for i in range(2000):
            r = server.post("/v2/models/m/infer", json=body, headers={"X-Request-Id": f"request-{i}"})
            counts[r.json()["model_version"]] += 1
        assert abs(counts["1"] / 2000 - 0.7) < 0.03, counts
        # Without an id, a random draw by the same weights: 300 requests reach both versions
        # (all on one side has probability 0.7**300 + 0.3**300).
        assert {server.post("/v2/models/m/infer", json=body).json()["model_version"] for _ in range(300)} == {"1", "2"}
        for i in range(20):  # the same request id, the same version
            got = {
                server.post("/v2/models/m/infer", json=body, headers={"X-Request-Id": f"user-{i}"}).json()[
                    "model_version"
                ]
                for _ in range(3)
            }
            assert len(got) == 1
        m = scrape(server)
        answered = {v: sample(m, "nv_inference_request_success_total", model="m", version=v) for v in counts}
        assert all(answered[v] >= counts[v] for v in counts)  # every series labelled by version
        assert sum(answered.values()) == 2000 + 300 + 60
        assert sample(m, "customml_model_split_weight", model="m", version="2") == pytest.approx(0.3)
    # --split on the command line wins over config.json
    with Server(repo, split=dict([parse_split("m=1:1e-9,2:1")])) as server:
        assert {server.post("/v2/models/m/infer", json=body).json()["model_version"] for _ in range(50)} == {"2"}


def test_sigterm_drains_in_flight_requests_and_exits_0(tmp_path):
    model = classifier()
    save(model, tmp_path / "m.cml")
    # A 1.5 s queue delay holds the request in flight while SIGTERM arrives.
    args = ("--max-batch-size", "8", "--max-queue-delay-us", "1500000", "--access-log", "--api-key", "k")
    proc, base = start_process(tmp_path / "m.cml", *args)
    key = {"Authorization": "Bearer k"}
    try:
        assert requests.get(base + "/v2", timeout=TIMEOUT).status_code == 401  # logged too
        x = rows(1)
        body = {"inputs": [{"name": "input", "shape": [1, 12], "datatype": "FP32", "data": x[0].tolist()}]}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            infer = functools.partial(requests.post, json=body, timeout=TIMEOUT, headers=key)
            pending = pool.submit(infer, base + "/v2/models/m/infer")
            deadline = time.monotonic() + TIMEOUT
            while (
                'nv_inference_pending_request_count{model="m",version="1"} 1.0'
                not in requests.get(base + "/metrics", timeout=TIMEOUT, headers={"Connection": "close", **key}).text
            ):  # the request is queued (for 1.5 s) when SIGTERM comes
                assert time.monotonic() < deadline
                time.sleep(0.02)
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            r = pending.result(TIMEOUT)
        assert r.status_code == 200 and np.array_equal(_logits(r), model.predict(x))
        out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, err
        assert time.monotonic() - start < 10
        log = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        answered = [e for e in log if e["path"] == "/v2/models/m/infer"]
        assert len(answered) == 1 and answered[0]["status"] == 200 and answered[0]["model_version"] == "1"
        assert answered[0]["duration_ms"] > 0 and answered[0]["method"] == "POST"
        assert [e["status"] for e in log if e["path"] == "/v2"] == [401]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)


def test_drain_delay_answers_with_readiness_off_then_exits_0(tmp_path):
    model = classifier()
    save(model, tmp_path / "m.cml")
    proc, base = start_process(tmp_path / "m.cml", "--drain-delay", "3")
    try:
        once = {"timeout": TIMEOUT, "headers": {"Connection": "close"}}
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        deadline = start + TIMEOUT
        while requests.get(base + "/v2/health/ready", **once).status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert time.monotonic() - start < 2.5, "the delay passed before readiness turned off"
        x = rows(2)
        body = {"inputs": [{"name": "input", "shape": [2, 12], "datatype": "FP32", "data": x.ravel().tolist()}]}
        r = requests.post(base + "/v2/models/m/infer", json=body, **once)  # still answered
        assert r.status_code == 200 and np.array_equal(_logits(r), model.predict(x))
        proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0 and time.monotonic() - start >= 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)


def test_the_exit_handler_turns_readiness_off_first(tmp_path):
    import uvicorn

    from customml.serve.server import _Server

    save(classifier(), tmp_path / "m.cml")
    with Server(tmp_path / "m.cml") as server:
        assert server.get("/v2/health/ready").status_code == 200
        _Server(uvicorn.Config(server.app), server.app).handle_exit(signal.SIGTERM, None)
        assert server.get("/v2/health/ready").status_code == 503
        assert server.get("/v2/health/live").status_code == 200
        assert server.infer("m", rows(1)).status_code == 200  # in-flight and late requests are still served


@pytest.mark.parametrize(
    "args, words",
    [
        (["/nonexistent/model.cml"], "no such file"),
        (["m.cml", "--split", "m=1"], "--split"),
        (["m.cml", "--max-batch-size", "-1"], "max_batch_size"),
    ],
)
def test_cli_errors_are_one_line_and_status_2(tmp_path, args, words):
    save(classifier(), tmp_path / "m.cml")
    run = subprocess.run(
        [sys.executable, "-m", "customml", "serve", *args, "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 3,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    assert run.returncode == 2 and words in run.stderr and run.stderr.startswith("error:"), run.stderr
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_tls_through_uvicorn_options(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (it makes the test's self-signed certificate)")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=TIMEOUT,
    )  # fmt: skip
    model = classifier()
    save(model, tmp_path / "m.cml")
    proc, base = start_process(
        tmp_path / "m.cml", "--ssl-keyfile", str(key), "--ssl-certfile", str(cert), verify=str(cert)
    )
    try:
        assert base.startswith("https://")
        x = rows(2)
        body = {"inputs": [{"name": "input", "shape": [2, 12], "datatype": "FP32", "data": x.ravel().tolist()}]}
        # Connection: close, as an idle TLS keep-alive connection holds the shutdown until the
        # drain timeout when the client never answers the server's close (asyncio's SSL shutdown).
        r = requests.post(
            base + "/v2/models/m/infer", json=body, timeout=TIMEOUT, verify=str(cert), headers={"Connection": "close"}
        )
        assert r.status_code == 200 and np.array_equal(_logits(r), model.predict(x))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0


def test_a_file_whose_stem_is_no_model_name_is_refused(tmp_path):
    save(classifier(), tmp_path / ".hidden.cml")
    with pytest.raises(ValueError, match="not a model name"):
        Server(tmp_path / ".hidden.cml")
