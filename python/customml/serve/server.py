"""``customml serve``: the application on uvicorn, one process (several would split the
repository state and the metrics; scale out with replicas). SIGTERM (or Ctrl-C) turns the
readiness probe to 503 at once, stops accepting connections ``--drain-delay`` seconds later,
lets in-flight requests finish (up to ``--drain-timeout``) and exits with status 0."""

from __future__ import annotations

import math
import socket
import sys
import threading
from typing import Optional

import uvicorn

from .app import _Guard, create_app
from .config import ServeConfig


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: _Guard) -> None:
        super().__init__(config)
        self._app = app
        self._delay: Optional[threading.Timer] = None

    def handle_exit(self, sig: int, frame) -> None:
        self._app.state.draining = True  # readiness first, before the sockets close
        delay = self._app.state.config.drain_delay_s
        if delay > 0 and self._delay is None:
            # Keep taking requests while the load balancer sees the 503 and stops sending;
            # a second signal stops at once.
            self._delay = threading.Timer(delay, self._stop, (sig, frame))
            self._delay.daemon = True
            self._delay.start()
            return
        self._stop(sig, frame)

    def _stop(self, sig: int, frame) -> None:
        super().handle_exit(sig, frame)
        # A drained shutdown is a normal exit: uvicorn would raise the signal again
        # after shutting down, which makes the exit status 128 + signal.
        self._captured_signals.clear()


def listen(host: str, port: int) -> socket.socket:
    """The listening socket (bound here, so port 0 gives a free port that is then known)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(path: str, config: Optional[ServeConfig] = None, sock: Optional[socket.socket] = None) -> int:
    """Serves ``path`` (a ``.cml`` file or a model repository) until SIGTERM or Ctrl-C;
    returns the exit status (0 after a drained shutdown)."""
    config = config or ServeConfig()
    app = create_app(path, config)
    sock = sock or listen(config.host, config.port)
    host, port = sock.getsockname()[:2]
    uv = uvicorn.Config(
        app,
        log_level="info",
        access_log=False,  # ours is --access-log, as JSON
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(config.drain_timeout_s),
        ssl_keyfile=config.ssl_keyfile,
        ssl_certfile=config.ssl_certfile,
    )
    server = _Server(uv, app)
    scheme = "https" if config.ssl_certfile else "http"
    print(f"customml serve: {scheme}://{host}:{port} ({path})", flush=True)
    server.run(sockets=[sock])
    if not server.started:
        return 2
    print("customml serve: drained and stopped", file=sys.stderr, flush=True)
    return 0
