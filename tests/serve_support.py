"""What the serve tests share: small saved models and a real uvicorn server on a free
loopback port, run in a thread of the test process (a subprocess where signals matter)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed (pip install '.[serve]')")
pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install '.[serve]')")
requests = pytest.importorskip("requests", reason="requests is not installed")

import uvicorn  # noqa: E402

import customml as cm  # noqa: E402
from customml.serve import ServeConfig, create_app  # noqa: E402
from customml.serve.server import listen  # noqa: E402

FEATURES = 12
TIMEOUT = 20  # seconds: every request is bounded


def classifier(seed: int = 0, classes: int = 5, loss: str = "softmax_cross_entropy"):
    """A small trained-shape MLP with random weights (the server's behaviour, not accuracy, is under test)."""
    model = cm.Sequential(
        [cm.layers.Dense(16, activation="relu"), cm.layers.Dense(classes)], input_dim=FEATURES, seed=seed
    )
    model.compile(optimizer="adam", loss=loss)
    return model


def save(model, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def rows(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, FEATURES)).astype(np.float32)


class Server:
    """A uvicorn server for ``path`` on 127.0.0.1 and a free port, in a thread; ``url``
    is host:port, ``base`` the http URL."""

    def __init__(self, path, **options) -> None:
        self.config = ServeConfig(**options)
        self.app = create_app(str(path), self.config)
        sock = listen("127.0.0.1", 0)
        self.url = f"127.0.0.1:{sock.getsockname()[1]}"
        self.base = f"http://{self.url}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + TIMEOUT
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        self.session = requests.Session()

    def get(self, path: str, **kw):
        return self.session.get(self.base + path, timeout=TIMEOUT, **kw)

    def post(self, path: str, **kw):
        return self.session.post(self.base + path, timeout=TIMEOUT, **kw)

    def infer(self, model: str, x: np.ndarray, version: Optional[str] = None, outputs=None, **kw):
        body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
        if outputs:
            body["outputs"] = [{"name": n} for n in outputs]
        route = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        return self.post(route, json=body, **kw)

    def close(self) -> None:
        self.session.close()
        self.server.should_exit = True
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the server did not stop"

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def scrape(server: Server, **kw) -> dict:
    """The /metrics samples: {(name, frozenset(labels.items())): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = server.get("/metrics", **kw).text
    return {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }


def sample(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def start_process(path, *args: str, verify=True) -> "tuple[subprocess.Popen, str]":
    """``customml serve path --port 0 args`` in a subprocess; returns it and its base URL
    (``verify``: requests' TLS verification, a CA bundle for a self-signed server)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "customml", "serve", str(path), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("customml serve: http"):
        proc.kill()
        raise RuntimeError(f"unexpected first line {line!r}: {proc.communicate(timeout=TIMEOUT)}")
    base = line.split()[2]
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            if requests.get(base + "/v2/health/ready", timeout=TIMEOUT, verify=verify).status_code == 200:
                return proc, base
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"the server did not become ready: {proc.communicate(timeout=TIMEOUT)}")
        time.sleep(0.05)
