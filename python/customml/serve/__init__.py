"""``customml serve``: a model server speaking the KServe Open Inference Protocol (V2)
REST API, with Triton's binary tensor extension, dynamic batching, A/B splits, a model
repository that reloads, and Prometheus metrics (docs/serving.md). Needs the serve extra
(``pip install 'customml[serve]'``: Starlette, uvicorn, orjson, prometheus_client)."""

from __future__ import annotations

from typing import Optional

from .config import ServeConfig

__all__ = ["ServeConfig", "create_app", "serve"]


def _require_extra() -> None:
    try:
        import orjson  # noqa: F401
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"customml serve needs the serve extra: pip install 'customml[serve]' ({exc})") from None


def create_app(path, config: Optional[ServeConfig] = None):
    """The server as an ASGI application for a ``.cml`` file or a model repository
    directory (``REPO/NAME/VERSION/model.cml``); models load when it starts."""
    _require_extra()
    from .app import create_app as create

    return create(str(path), config)


def serve(path, config: Optional[ServeConfig] = None) -> int:
    """Runs the server on uvicorn until SIGTERM or Ctrl-C, which drain in-flight
    requests; returns 0 after a drained shutdown."""
    _require_extra()
    from .server import serve as run

    return run(str(path), config)
