"""The one timing helper of bench/: wall time of single calls, of back-to-back batches of
calls, and of rounds in which several candidates take turns, all on time.perf_counter_ns.
Every probe and every figure a suite records outside pytest-benchmark (p50 / p99 of batch-1
predict) times through it. It imports nothing but NumPy, so a process that must load only
the library it times (bench/peers_isolated.py's "isolated" mode, bench/fma_peak.py) can use it.

Reading what it returns: noise on a shared machine only ever slows a call down, so the
minimum is the code's speed and the median the machine's; candidates compared with each
other should be measured in rounds, so that drifting load falls on all of them alike.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Hashable, List, Optional, Tuple, TypeVar

import numpy as np

clock = time.perf_counter_ns  # ns, monotonic; the clock everything here reads

T = TypeVar("T")


def call_ns(
    fn: Callable[[], object], calls: int, *, warmup: int = 0, before: Optional[Callable[[], object]] = None
) -> np.ndarray:
    """Wall time in ns (int64) of each of ``calls`` single calls of fn, after ``warmup``
    untimed calls; ``before``, when given, runs untimed before every timed call."""
    for _ in range(warmup):
        fn()
    ns = np.empty(calls, np.int64)
    for i in range(calls):
        if before is not None:
            before()
        t0 = clock()
        fn()
        ns[i] = clock() - t0
    return ns


def per_call_s(fn: Callable[[], object], number: int) -> float:
    """Seconds a call, over ``number`` back-to-back calls timed together (for calls too
    short for one clock read pair each)."""
    t0 = clock()
    for _ in range(number):
        fn()
    return (clock() - t0) / 1e9 / number


def once(fn: Callable[[], T]) -> Tuple[T, float]:
    """fn's result and the seconds its one call took."""
    t0 = clock()
    out = fn()
    return out, (clock() - t0) / 1e9


def calls_in(seconds: float, fn: Callable[[], object], *, at_least: int = 1, at_most: Optional[int] = None) -> int:
    """How many calls of fn take about ``seconds``, from one timed call after one warm-up
    call, clamped to [at_least, at_most]."""
    fn()
    _, one = once(fn)
    n = max(at_least, int(seconds / max(one, 1e-9)))
    return n if at_most is None else min(n, at_most)


def rounds(
    candidates: Dict[Hashable, T], n: int, measure: Callable[[T], float], *, alternate: bool = False
) -> Dict[Hashable, List[float]]:
    """``n`` rounds in which every candidate is measured once in turn, ``measure(candidate)``
    giving one figure (reversed order every other round when ``alternate``, so that no
    candidate always follows the same one): the figures of each candidate, in round order."""
    keys = list(candidates)
    out: Dict[Hashable, List[float]] = {k: [] for k in keys}
    for r in range(n):
        for k in keys[::-1] if alternate and r % 2 else keys:
            out[k].append(measure(candidates[k]))
    return out


def one_call_ns(fn: Callable[[], object]) -> int:
    """Wall time in ns of one call of fn (a measure for rounds)."""
    return int(call_ns(fn, 1)[0])
