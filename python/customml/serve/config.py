"""The server's options: one dataclass, its command-line flags and their checks. Importing
this module needs no third-party package, so ``customml --help`` works without the serve
extra; the server itself needs it."""

import argparse
import dataclasses
import os
from typing import List, Optional, Tuple

__all__ = ["ServeConfig", "add_arguments", "config_from_args", "parse_split"]

API_KEY_ENV = "CUSTOMML_SERVE_API_KEY"


@dataclasses.dataclass
class ServeConfig:
    """Options of ``customml serve`` (``customml.serve.create_app`` takes the same).

    ``max_batch_size`` 0 or 1 runs each request on its own; above 1, requests for the same
    model version are queued and merged up to that many rows, waiting at most
    ``max_queue_delay_us`` for more (0: no waiting, whatever is queued when a thread is
    free forms the batch, as in Triton). ``threads`` is the thread pool that runs predict
    (it releases the GIL). ``split`` maps a model name to its A/B versions and weights.
    ``poll_interval_s`` > 0 rescans the repository that often for new or removed versions."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 0
    max_queue_delay_us: int = 0
    threads: int = 0  # 0: the number of CPUs
    api_key: Optional[str] = None
    poll_interval_s: float = 0.0
    split: dict = dataclasses.field(default_factory=dict)  # name -> [(version, weight)]
    max_body_bytes: int = 64 << 20
    access_log: bool = False
    drain_timeout_s: float = 30.0
    drain_delay_s: float = 0.0
    device: str = "cpu"
    ssl_keyfile: Optional[str] = None
    ssl_certfile: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("port", "max_batch_size", "max_queue_delay_us", "threads"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"[serve] {name} must be an integer >= 0, got {value!r}")
        if self.port > 65535:
            raise ValueError(f"[serve] port must be at most 65535, got {self.port}")
        if self.max_body_bytes < 1:
            raise ValueError(f"[serve] max_body_bytes must be >= 1, got {self.max_body_bytes}")
        if not self.poll_interval_s >= 0 or not self.drain_timeout_s >= 0 or not self.drain_delay_s >= 0:
            raise ValueError("[serve] poll_interval_s, drain_timeout_s and drain_delay_s must be >= 0")
        if self.api_key is not None and not self.api_key:
            raise ValueError("[serve] api_key must not be empty")
        if self.threads == 0:
            self.threads = os.cpu_count() or 1


def parse_split(text: str) -> Tuple[str, List[Tuple[str, float]]]:
    """``NAME=V:W,V:W`` (e.g. ``fmnist=1:0.9,2:0.1``) -> (name, [(version, weight)]);
    the weights are positive and are normalized to sum to 1."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"[serve] --split must look like NAME=1:0.9,2:0.1, got {text!r}")
    pairs = []
    for item in rest.split(","):
        version, sep, weight = item.partition(":")
        try:
            w = float(weight)
        except ValueError:
            w = float("nan")
        if not sep or not version.isdigit() or not w > 0 or w == float("inf"):
            raise ValueError(f"[serve] --split {text!r}: each entry is VERSION:WEIGHT with a weight > 0, got {item!r}")
        pairs.append((str(int(version)), w))
    if len({v for v, _ in pairs}) != len(pairs) or len(pairs) < 2:
        raise ValueError(f"[serve] --split {text!r} must name at least two distinct versions")
    total = sum(w for _, w in pairs)
    return name, [(v, w / total) for v, w in pairs]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``customml serve`` flags."""
    d = ServeConfig.__dataclass_fields__
    parser.add_argument(
        "path", help="a .cml model file, or a repository directory laid out REPO/NAME/VERSION/model.cml"
    )
    parser.add_argument("--host", default=d["host"].default, help="bind address (default 127.0.0.1: loopback only)")
    parser.add_argument("--port", type=int, default=d["port"].default, help="default 8000; 0 picks a free port")
    parser.add_argument(
        "--max-batch-size", type=int, default=0, help="merge queued requests up to this many rows (default 0: off)"
    )
    parser.add_argument(
        "--max-queue-delay-us", type=int, default=0, help="wait at most this long for a batch to fill (default 0)"
    )
    parser.add_argument("--threads", type=int, default=0, help="threads that run predict (default: the CPU count)")
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer KEY' on every route but health (or ${API_KEY_ENV})",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=0.0,
        help="rescan the repository every this many seconds (default 0: off)",
    )
    parser.add_argument(
        "--split", action="append", default=[], metavar="NAME=V:W,V:W", help="A/B split of a model's versions"
    )
    parser.add_argument("--max-body-bytes", type=int, default=d["max_body_bytes"].default, help="larger bodies get 413")
    parser.add_argument("--access-log", action="store_true", help="one JSON line per request on stderr")
    parser.add_argument(
        "--drain-timeout", type=float, default=30.0, help="on SIGTERM, seconds to let in-flight requests finish"
    )
    parser.add_argument(
        "--drain-delay",
        type=float,
        default=0.0,
        help="on SIGTERM, seconds of answering (readiness 503) before the socket closes (default 0)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ssl-keyfile", default=None, help="TLS (uvicorn's option)")
    parser.add_argument("--ssl-certfile", default=None, help="TLS (uvicorn's option)")


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    splits = dict(parse_split(text) for text in args.split)
    return ServeConfig(
        host=args.host,
        port=args.port,
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        threads=args.threads,
        api_key=args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV),
        poll_interval_s=args.poll_interval,
        split=splits,
        max_body_bytes=args.max_body_bytes,
        access_log=args.access_log,
        drain_timeout_s=args.drain_timeout,
        drain_delay_s=args.drain_delay,
        device=args.device,
        ssl_keyfile=args.ssl_keyfile,
        ssl_certfile=args.ssl_certfile,
    )
