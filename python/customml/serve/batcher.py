"""Runs a model version's predictions off the event loop in the server's thread pool
(predict releases the GIL), one request at a time or merged into batches (dynamic
batching, as Triton's): requests queue, and when a thread is free the queued rows, up to
``max_batch_size``, run as one predict whose output rows go back to their requests. With
a queue delay the batch waits up to that long for more rows; with 0 it takes what is
queued, so batches form only under load and a lone request never waits."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import time
from typing import Callable, Deque, List, Optional, Tuple

import numpy as np

from .metrics import Metrics

Predict = Callable[[np.ndarray], np.ndarray]


class _Item:
    __slots__ = ("x", "future", "queued_at")

    def __init__(self, x: np.ndarray, future: asyncio.Future, queued_at: float) -> None:
        self.x = x
        self.future = future
        self.queued_at = queued_at


class Batcher:
    def __init__(
        self,
        predict: Predict,
        pool: concurrent.futures.ThreadPoolExecutor,
        threads: int,
        max_batch_size: int,
        max_queue_delay_us: int,
        metrics: Metrics,
        labels: Tuple[str, str],
    ) -> None:
        self._predict = predict
        self._pool = pool
        self._max_rows = max_batch_size
        self._delay = max_queue_delay_us * 1e-6
        self._queue: Deque[_Item] = collections.deque()
        self._queued_rows = 0
        self._wakeup: Optional[asyncio.Event] = None
        self._slots: Optional[asyncio.Semaphore] = None
        self._threads = threads
        self._task: Optional[asyncio.Task] = None
        self._queue_seconds = metrics.queue_duration.labels(*labels)
        self._compute_seconds = metrics.compute_duration.labels(*labels)
        self._inferences = metrics.inferences.labels(*labels)
        self._executions = metrics.executions.labels(*labels)

    @property
    def batching(self) -> bool:
        return self._max_rows > 1

    def _run(self, x: np.ndarray, queued_at: List[float]) -> np.ndarray:
        """In a pool thread: predict, timed."""
        start = time.perf_counter()
        for t in queued_at:
            self._queue_seconds.observe(start - t)
        y = self._predict(x)
        self._compute_seconds.observe(time.perf_counter() - start)
        self._inferences.inc(x.shape[0])
        self._executions.inc()
        return y

    async def infer(self, x: np.ndarray) -> np.ndarray:
        """The model's output rows for ``x``."""
        loop = asyncio.get_running_loop()
        if not self.batching:
            return await loop.run_in_executor(self._pool, self._run, x, [time.perf_counter()])
        if self._task is None:
            self._wakeup, self._slots = asyncio.Event(), asyncio.Semaphore(self._threads)
            self._task = loop.create_task(self._form_batches())
        assert self._wakeup is not None
        item = _Item(x, loop.create_future(), time.perf_counter())
        self._queue.append(item)
        self._queued_rows += x.shape[0]
        self._wakeup.set()
        return await item.future

    async def _form_batches(self) -> None:
        assert self._wakeup is not None and self._slots is not None
        loop = asyncio.get_running_loop()
        while True:
            # A free thread first: while every thread is busy, requests pile up in the
            # queue and the next batch takes them all.
            await self._slots.acquire()
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._delay > 0:
                deadline = self._queue[0].queued_at + self._delay
                while self._queued_rows < self._max_rows:
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), left)
                    except asyncio.TimeoutError:
                        break
            items = [self._queue.popleft()]
            rows = items[0].x.shape[0]
            while self._queue and rows + self._queue[0].x.shape[0] <= self._max_rows:
                items.append(self._queue.popleft())
                rows += items[-1].x.shape[0]
            self._queued_rows -= rows
            x = items[0].x if len(items) == 1 else np.concatenate([i.x for i in items])
            future = loop.run_in_executor(self._pool, self._run, x, [i.queued_at for i in items])
            future.add_done_callback(functools.partial(self._deliver, items))

    def _deliver(self, items: List[_Item], done: asyncio.Future) -> None:
        assert self._slots is not None
        self._slots.release()
        exc = done.exception()
        if exc is not None:
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        y = done.result()
        at = 0
        for item in items:
            n = item.x.shape[0]
            if not item.future.done():  # the client may have gone (cancelled)
                item.future.set_result(y[at : at + n])
            at += n

    async def close(self) -> None:
        """Stops forming batches (the caller drained the queue first)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
