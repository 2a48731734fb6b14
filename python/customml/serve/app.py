"""The HTTP side: the Open Inference Protocol's REST routes (health, metadata, inference,
the repository extension) and ``/metrics`` as a Starlette application, behind a small ASGI
layer that checks the API key and writes the access log."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import logging
import time
from typing import Any, Dict, Optional

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import __version__
from .config import ServeConfig
from .metrics import Metrics
from .protocol import HEADER_LENGTH, ProtocolError, encode_response, error_body, parse_request
from .repository import INPUT_NAME, Repository

access_log = logging.getLogger("customml.serve.access")


class ServerState:
    """What the routes share: options, metrics, the thread pool and the repository."""

    def __init__(self, path: str, config: ServeConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.pool = concurrent.futures.ThreadPoolExecutor(config.threads, thread_name_prefix="customml-serve")
        self.repository = Repository(path, config, self.pool, self.metrics)
        self.draining = False
        self._poll: Optional[asyncio.Task] = None

    @property
    def ready(self) -> bool:
        return not self.draining and self.repository.ready

    async def start(self) -> None:
        await self.repository.sync()
        if self.config.poll_interval_s > 0:
            self._poll = asyncio.get_running_loop().create_task(self.repository.poll(self.config.poll_interval_s))
        self.metrics.server_ready.set_function(lambda: float(self.ready))

    async def stop(self) -> None:
        self.draining = True
        if self._poll is not None:
            self._poll.cancel()
        await self.repository.close()
        self.pool.shutdown(wait=True)


def _error(status: int, message: str) -> Response:
    return Response(error_body(message), status_code=status, media_type="application/json")


def _json(value: object, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json")


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ProtocolError(413, f"the body ({declared} bytes) is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(413, f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _routes(state: ServerState) -> list:
    repo, metrics, config = state.repository, state.metrics, state.config

    async def live(request: Request) -> Response:
        return Response(status_code=200)

    async def ready(request: Request) -> Response:
        return Response(status_code=200 if state.ready else 503)

    async def server_metadata(request: Request) -> Response:
        return _json(
            {"name": "customml", "version": __version__, "extensions": ["binary_tensor_data", "model_repository"]}
        )

    async def model_metadata(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        try:
            model = repo.resolve(name, version, split=False)
        except ProtocolError as exc:
            return _error(exc.status, exc.message)
        return _json(model.metadata(repo.versions(name)))

    async def model_ready(request: Request) -> Response:
        try:
            repo.resolve(request.path_params["name"], request.path_params.get("version"), split=False)
        except ProtocolError as exc:
            return _error(exc.status, exc.message)
        return Response(status_code=200 if state.ready else 503)

    async def infer(request: Request) -> Response:
        start = time.perf_counter()
        name, version = request.path_params["name"], request.path_params.get("version")
        try:
            model = repo.resolve(name, version, request.headers.get("x-request-id"))
        except ProtocolError as exc:
            return _error(exc.status, exc.message)
        labels = (model.name, model.version)
        model.in_flight += 1
        pending = metrics.pending.labels(*labels)
        pending.inc()
        try:
            body = await _body(request, config.max_body_bytes)
            req = parse_request(body, request.headers.get(HEADER_LENGTH), INPUT_NAME, model.input_dim, model.outputs)
            logits = await model.batcher.infer(req.x)
            tensors = model.tensors(logits, [n for n, _ in req.outputs])
            content, headers = encode_response(model.name, model.version, req.id, req.outputs, tensors)
        except ProtocolError as exc:
            metrics.fail(*labels, str(exc.status))
            return _error(exc.status, exc.message)
        except ValueError as exc:  # predict's own checks
            metrics.fail(*labels, "400")
            return _error(400, str(exc))
        finally:
            model.in_flight -= 1
            pending.dec()
        metrics.success.labels(*labels).inc()
        metrics.request_duration.labels(*labels).observe(time.perf_counter() - start)
        headers["x-model-version"] = model.version
        return Response(content, headers=headers)

    async def index(request: Request) -> Response:
        body = await request.body()
        try:
            options = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError as exc:
            return _error(400, f"malformed JSON in the request: {exc}")
        if not isinstance(options, dict):
            return _error(400, "the request must be a JSON object")
        only_ready = bool(options.get("ready", False))
        rows = [r for r in repo.index() if not only_ready or r["state"] == "READY"]
        return _json(rows)

    async def load(request: Request) -> Response:
        try:
            await repo.load(request.path_params["name"])
        except ProtocolError as exc:
            return _error(exc.status, exc.message)
        return Response(status_code=200)

    async def unload(request: Request) -> Response:
        try:
            await repo.unload(request.path_params["name"])
        except ProtocolError as exc:
            return _error(exc.status, exc.message)
        return Response(status_code=200)

    async def scrape(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    return [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        Route(model, model_metadata),
        Route(versioned, model_metadata),
        Route(model + "/ready", model_ready),
        Route(versioned + "/ready", model_ready),
        Route(model + "/infer", infer, methods=["POST"]),
        Route(versioned + "/infer", infer, methods=["POST"]),
        Route("/v2/repository/index", index, methods=["POST"]),
        Route("/v2/repository/models/{name}/load", load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", unload, methods=["POST"]),
        Route("/metrics", scrape),
    ]


class _Guard:
    """ASGI layer in front of the routes: the API key (a bearer token, not asked on the
    health routes, which probes call) and the access log (one JSON line per request)."""

    def __init__(self, app, state: ServerState) -> None:
        self.app = app
        self.state = state
        api_key, log_requests = state.config.api_key, state.config.access_log
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.log_requests = log_requests

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif not self.log_requests:
            await self._authorized(scope, receive, send)
        else:
            await self._logged(scope, receive, send)

    async def _authorized(self, scope, receive, send) -> None:
        if self.expected is not None and not scope["path"].startswith("/v2/health/"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await Response(
                    error_body("missing or wrong API key (Authorization: Bearer KEY)"),
                    status_code=401,
                    headers={"www-authenticate": "Bearer"},
                    media_type="application/json",
                )(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _logged(self, scope, receive, send) -> None:
        """The request, then its access log line (refused ones included)."""
        start = time.perf_counter()
        seen: Dict[str, Any] = {"status": 500, "bytes": 0, "version": None}

        async def send_logged(message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                seen["version"] = dict(message.get("headers", [])).get(b"x-model-version", b"").decode() or None
            elif message["type"] == "http.response.body":
                seen["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self._authorized(scope, receive, send_logged)
        finally:
            headers = dict(scope["headers"])
            client = scope.get("client") or ("", 0)
            line = {
                "time": time.time(),
                "client": client[0],
                "method": scope["method"],
                "path": scope["path"],
                "status": seen["status"],
                "bytes": seen["bytes"],
                "duration_ms": round((time.perf_counter() - start) * 1e3, 3),
                "model_version": seen["version"],
                "request_id": headers.get(b"x-request-id", b"").decode("latin-1") or None,
            }
            access_log.info(orjson.dumps(line).decode())


def create_app(path: str, config: Optional[ServeConfig] = None):
    """The server as an ASGI application (run it with uvicorn or any ASGI server) for a
    ``.cml`` file or a model repository directory. Models load when the application
    starts (its lifespan), before it takes requests."""
    config = config or ServeConfig()
    state = ServerState(path, config)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await state.start()
        yield
        await state.stop()

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(getattr(exc, "status_code", 404), str(getattr(exc, "detail", "not found")))

    async def internal(request: Request, exc: Exception) -> Response:
        logging.getLogger("customml.serve").exception("internal error on %s", request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}")

    app = Starlette(
        routes=_routes(state),
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_found, Exception: internal},
    )
    if config.access_log and not access_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False
    return _Guard(app, state)
