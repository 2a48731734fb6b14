"""The models the server holds: a model repository laid out as Triton's
(``REPO/NAME/VERSION/model.cml``, versions positive integers) or one ``.cml`` file (model
NAME = the file's stem, version 1). Each name serves its latest version, or the versions
of its A/B split (``--split`` or ``REPO/NAME/config.json`` = ``{"split": {"1": 0.9, "2":
0.1}}``). A new version is loaded and warmed up before it takes traffic; a version that
leaves is dropped once its in-flight requests are done."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import os
import random
import re
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from .. import ops
from ..io import load
from .batcher import Batcher
from .config import ServeConfig
from .metrics import Metrics
from .protocol import ProtocolError

log = logging.getLogger("customml.serve")

# A name is one path component that cannot climb out of the repository ("..", "/", "\").
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
_VERSION = re.compile(r"[1-9][0-9]{0,17}\Z")
MODEL_FILE = "model.cml"
INPUT_NAME = "input"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ProtocolError(400, f"invalid model name {name!r}: letters, digits, '_', '.', '-', not starting with '.'")
    return name


class ServedModel:
    """One loaded, warmed-up version of a model."""

    def __init__(self, name: str, version: str, path: str, config: ServeConfig, pool, metrics: Metrics) -> None:
        self.name, self.version, self.path = name, version, path
        self.model = load(path, device=config.device)
        self.input_dim = int(self.model.input_dim)
        self.output_dim = int(self.model.output_dim)
        loss = self.model._loss
        # probabilities: softmax over the logits, or the sigmoid of one logit (P(class 1))
        self.activation = None if loss is None or not loss.classification else loss.name
        self.outputs: Tuple[str, ...] = ("logits", "probabilities", "class") if self.activation else ("logits",)
        for rows in {1, max(1, config.max_batch_size)}:  # the plan, the workspaces, the caches
            self.model.predict(np.zeros((rows, self.input_dim), np.float32))
        labels = (name, version)
        self.batcher = Batcher(
            self.model.predict, pool, config.threads, config.max_batch_size, config.max_queue_delay_us, metrics, labels
        )
        self.in_flight = 0
        # The float32 parameters and the plan predict runs (its copy, packed / int8 / sparse)
        self.memory_bytes = 4 * self.model.count_params() + self.model._net.inference_bytes

    def tensors(self, logits: np.ndarray, names) -> Dict[str, np.ndarray]:
        out = {"logits": logits}
        if "probabilities" in names:
            # The ops predict_proba runs, on a copy: the logits may be a view of a batch.
            p = logits.copy()
            out["probabilities"] = (
                ops.sigmoid(p, out=p) if self.activation == "binary_cross_entropy" else ops.softmax(p, out=p)
            )
        if "class" in names:
            out["class"] = (
                (logits[:, 0] > 0).astype(np.int64) if self.output_dim == 1 else logits.argmax(axis=1).astype(np.int64)
            )
        return out

    def metadata(self, versions: List[str]) -> Dict:
        dims = {"logits": self.output_dim, "probabilities": self.output_dim}
        return {
            "name": self.name,
            "versions": versions,
            "platform": "customml",
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, self.input_dim]}],
            "outputs": [
                {"name": n, "datatype": "INT64", "shape": [-1]}
                if n == "class"
                else {"name": n, "datatype": "FP32", "shape": [-1, dims[n]]}
                for n in self.outputs
            ],
        }


class _Entry:
    """A name's served versions (immutable: a change swaps the whole entry)."""

    def __init__(self, versions: Dict[str, ServedModel], split: Optional[List[Tuple[str, float]]]) -> None:
        self.versions = versions
        self.latest = max(versions, key=int)
        self.split = [(v, w) for v, w in split or [] if v in versions] or None


def _unit(request_id: str) -> float:
    """A request id's fixed point in [0, 1): the same id always lands on the same version."""
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "little") / 2.0**64


class Repository:
    def __init__(self, path: str, config: ServeConfig, pool: concurrent.futures.ThreadPoolExecutor, metrics: Metrics):
        self.path = os.path.abspath(path)
        if not os.path.exists(self.path):
            raise ValueError(f"[serve] {path}: no such file or directory")
        self.single = os.path.isfile(self.path)
        stem = os.path.splitext(os.path.basename(self.path))[0]
        if self.single and not _NAME.match(stem):
            raise ValueError(f"[serve] {path}: {stem!r} is not a model name: letters, digits, '_', '.', '-'")
        self._config, self._pool, self._metrics = config, pool, metrics
        self._entries: Dict[str, _Entry] = {}
        self._unloaded: set = set()  # unloaded on request: polling leaves them unloaded
        self._errors: Dict[Tuple[str, str], str] = {}
        self._failed: Dict[Tuple[str, str], Tuple[int, int]] = {}  # the file (mtime, size) that failed
        self._lock = asyncio.Lock()

    # -- what is on disk ----------------------------------------------------------------

    def on_disk(self) -> Dict[str, Dict[str, str]]:
        """name -> version -> model file."""
        if self.single:
            return {os.path.splitext(os.path.basename(self.path))[0]: {"1": self.path}}
        found: Dict[str, Dict[str, str]] = {}
        for name in sorted(os.listdir(self.path)):
            folder = os.path.join(self.path, name)
            if not _NAME.match(name) or not os.path.isdir(folder):
                continue
            versions = {
                v: os.path.join(folder, v, MODEL_FILE)
                for v in os.listdir(folder)
                if _VERSION.match(v) and os.path.isfile(os.path.join(folder, v, MODEL_FILE))
            }
            if versions:
                found[name] = versions
        return found

    def _split(self, name: str) -> Optional[List[Tuple[str, float]]]:
        if name in self._config.split:
            return self._config.split[name]
        if self.single:
            return None
        path = os.path.join(self.path, name, "config.json")
        if not os.path.isfile(path):
            return None
        try:
            with open(path, encoding="utf-8") as f:
                split = json.load(f).get("split")
            pairs = [(str(int(v)), float(w)) for v, w in split.items()]
            if len(pairs) < 2 or not all(w > 0 for _, w in pairs):
                raise ValueError("needs two or more versions with weights > 0")
        except (ValueError, TypeError, AttributeError, OSError) as exc:
            message = f"{path}: invalid split, serving the latest version: {exc}"
            if self._errors.get((name, "")) != message:  # once, not at every poll
                log.error("%s", message)
            self._errors[(name, "")] = message
            return None
        total = sum(w for _, w in pairs)
        return [(v, w / total) for v, w in pairs]

    # -- changes ------------------------------------------------------------------------

    async def sync(self, names: Optional[List[str]] = None) -> None:
        """Brings the served versions in line with the disk (for ``names``, or all)."""
        async with self._lock:
            disk = self.on_disk()
            for name in names if names is not None else sorted(set(disk) | set(self._entries)):
                if name in self._unloaded and names is None:
                    continue
                await self._sync_one(name, disk.get(name, {}))

    async def _sync_one(self, name: str, versions: Dict[str, str]) -> None:
        split = self._split(name)
        old = self._entries.get(name)
        served = dict(old.versions) if old else {}
        if split:
            wanted = [v for v, _ in split if v in versions]
            for version in wanted:
                if version not in served:
                    await self._load(name, version, versions[version], served)
        else:
            # The newest version that loads (a broken newest one leaves the previous serving).
            wanted = []
            for version in sorted(versions, key=int, reverse=True):
                if version in served or await self._load(name, version, versions[version], served):
                    wanted = [version]
                    break
        keep = {v: m for v, m in served.items() if v in wanted}
        if not keep and served and versions:
            keep = served  # on disk but nothing new loads: the old versions keep serving
        if keep:
            self._entries[name] = _Entry(keep, split)
            self._publish(name)
        else:
            self._entries.pop(name, None)
        for version, model in served.items():
            if version not in keep:
                await self._retire(model)

    async def _load(self, name: str, version: str, path: str, served: Dict[str, ServedModel]) -> bool:
        """Loads and warms up a version into ``served``; False (and the reason kept for the
        index) when it fails. A file that failed is tried again only once it changes."""
        try:
            stamp = os.stat(path)
        except OSError as exc:
            self._errors[(name, version)] = str(exc)
            return False
        key = (stamp.st_mtime_ns, stamp.st_size)
        if self._failed.get((name, version)) == key:
            return False
        try:
            served[version] = await asyncio.get_running_loop().run_in_executor(
                self._pool, ServedModel, name, version, path, self._config, self._pool, self._metrics
            )
        except (ValueError, TypeError, OSError, RuntimeError) as exc:
            # A half-written or corrupt file fails its checks: kept out, tried again once it changes.
            self._errors[(name, version)] = str(exc)
            self._failed[(name, version)] = key
            log.error("cannot load %s version %s: %s", name, version, exc)
            return False
        self._errors.pop((name, version), None)
        self._failed.pop((name, version), None)
        log.info("loaded %s version %s from %s", name, version, path)
        return True

    def _publish(self, name: str) -> None:
        entry = self._entries[name]
        weights = dict(entry.split) if entry.split else {entry.latest: 1.0}
        for version, model in entry.versions.items():
            self._metrics.model_ready.labels(name, version).set(1)
            self._metrics.memory.labels(name, version).set(model.memory_bytes)
            self._metrics.split_weight.labels(name, version).set(weights.get(version, 0.0))

    async def _retire(self, model: ServedModel) -> None:
        """Waits for the version's in-flight requests (bounded by the drain timeout), then drops it."""
        self._metrics.model_ready.labels(model.name, model.version).set(0)
        deadline = time.monotonic() + self._config.drain_timeout_s
        while model.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await model.batcher.close()
        self._metrics.forget(model.name, model.version)
        log.info("unloaded %s version %s", model.name, model.version)

    async def load(self, name: str) -> None:
        check_name(name)
        if name not in self.on_disk():
            raise ProtocolError(404, f"no model {name!r} in the repository")
        self._unloaded.discard(name)
        await self.sync([name])
        if name not in self._entries:
            reasons = "; ".join(r for (n, _), r in self._errors.items() if n == name)
            raise ProtocolError(400, f"failed to load {name!r}: {reasons}")

    async def unload(self, name: str) -> None:
        check_name(name)
        async with self._lock:
            entry = self._entries.pop(name, None)
            if entry is None:
                raise ProtocolError(404, f"model {name!r} is not loaded")
            self._unloaded.add(name)
            for model in entry.versions.values():
                await self._retire(model)

    async def poll(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sync()
            except OSError as exc:
                log.error("repository poll failed: %s", exc)

    async def close(self) -> None:
        async with self._lock:
            for entry in self._entries.values():
                for model in entry.versions.values():
                    await self._retire(model)
            self._entries.clear()

    # -- requests -----------------------------------------------------------------------

    def resolve(
        self, name: str, version: Optional[str], request_id: Optional[str] = None, split: bool = True
    ) -> ServedModel:
        """The version that answers: the one named, else by the split's weights (sticky per
        request id; ``split=False``: metadata, always the latest), else the latest. 404 when
        there is none, 503 when the name is on disk but not loaded."""
        entry = self._entries.get(name)
        if entry is None:
            if not _NAME.match(name):
                raise ProtocolError(404, "unknown model (invalid name)")
            if name in self.on_disk():
                raise ProtocolError(503, f"model {name!r} is not ready (loading, failed to load or unloaded)")
            raise ProtocolError(404, f"unknown model {name!r}")
        if version is not None:
            model = entry.versions.get(version)
            if model is None:
                raise ProtocolError(404, f"model {name!r} has no loaded version {version!r}")
            return model
        if entry.split is None or not split:
            return entry.versions[entry.latest]
        u = _unit(request_id) if request_id else random.random()
        total = sum(w for _, w in entry.split)
        for v, w in entry.split:
            u -= w / total
            if u < 0:
                return entry.versions[v]
        return entry.versions[entry.split[-1][0]]

    def versions(self, name: str) -> List[str]:
        entry = self._entries.get(name)
        return sorted(entry.versions, key=int) if entry else []

    @property
    def ready(self) -> bool:
        return bool(self._entries)

    def index(self) -> List[Dict]:
        rows = []
        for name, versions in self.on_disk().items():
            entry = self._entries.get(name)
            for version in sorted(versions, key=int):
                row = {"name": name, "version": version, "state": "UNAVAILABLE", "reason": ""}
                if entry and version in entry.versions:
                    row["state"] = "READY"
                elif (name, version) in self._errors:
                    row["reason"] = self._errors[(name, version)]
                elif name in self._unloaded:
                    row["reason"] = "unloaded"
                rows.append(row)
        return rows
