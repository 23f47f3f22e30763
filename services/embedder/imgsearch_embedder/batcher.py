"""Dynamic batching: images from concurrent requests share one forward pass.

Callers `submit` preprocessed images; each image waits in a bounded queue with
its own future. One consumer per device forms a batch of up to
`max_batch_size` images, or whatever has arrived `max_delay` after the first
one, drops images whose caller gave up (cancelled, or past its deadline), runs
the batch function once in the model's thread, and resolves each future.

Progress is observable: `stalled_for()` is how long work has been waiting with
no forward pass finishing (0 when idle), which is what health reports on; a
hung forward pass (a wedged GPU, a deadlocked kernel) shows there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from imgsearch.common.errors import (
    DeadlineExceededError,
    ImgsearchError,
    ResourceExhaustedError,
    UnavailableError,
)

_log = logging.getLogger(__name__)

BatchFunction = Callable[[Sequence[np.ndarray]], np.ndarray]


class BatchContractError(ImgsearchError):
    """The batch function broke its contract (wrong number of results)."""


class BatcherMetrics:
    """Batch sizes, queue waits and forward times, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.batch_size = Histogram(
            "embedder_batch_size",
            "Images per forward pass.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=registry,
        )
        self.queue_wait = Histogram(
            "embedder_queue_wait_seconds",
            "Time an image waited in the queue before its forward pass started.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.forward_time = Histogram(
            "embedder_forward_seconds",
            "Duration of one forward pass (batch stacking and copies included).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self.images = Counter(
            "embedder_images", "Images embedded (rate() gives images per second).",
            registry=registry,
        )  # fmt: skip
        self.dropped = Counter(
            "embedder_dropped_images",
            "Images dropped before their forward pass, by reason.",
            ["reason"],
            registry=registry,
        )
        self.stalled = Gauge(
            "embedder_stalled_seconds",
            "How long images have waited with no forward pass finishing (0 when idle).",
            registry=registry,
        )


@dataclass(eq=False)
class _Pending:
    image: np.ndarray
    future: asyncio.Future[np.ndarray]
    deadline: float | None  # event-loop time, or None for no deadline
    enqueued_at: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """Groups images from concurrent callers into batches for one device.

    The batch function's contract, checked on every call: given N images it
    returns an array of N rows, row i being the result for image i. If it
    raises, each image of the batch is retried alone, so an error caused by
    one image fails that image's caller only.
    """

    def __init__(
        self,
        batch_function: BatchFunction,
        *,
        max_batch_size: int,
        max_delay_s: float,
        queue_size: int,
        model_executor: Executor,
        metrics: BatcherMetrics,
    ) -> None:
        self._batch_function = batch_function
        self._max_batch_size = max_batch_size
        self._max_delay_s = max_delay_s
        self._queue_size = queue_size
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_size)
        self._executor = model_executor
        self._metrics = metrics
        self._consumer: asyncio.Task[None] | None = None
        self._closed = False
        self.forward_passes = 0
        self._running = False  # a forward pass is in the model's thread
        self._progress_at = time.monotonic()  # last pass finished, or work arrived when idle

    def stalled_for(self) -> float:
        """Seconds work has been waiting with no forward pass finishing; 0 when idle."""
        if not self._running and self._queue.empty():
            return 0.0
        return time.monotonic() - self._progress_at

    def _progressed(self) -> None:
        self._progress_at = time.monotonic()

    def start(self) -> None:
        if self._consumer is None:
            self._consumer = asyncio.create_task(self._consume(), name="embedder-batcher")

    async def close(self) -> None:
        """Stop taking work; fail whatever is still queued with UNAVAILABLE."""
        self._closed = True
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(UnavailableError("embedder is shutting down"))

    async def submit(self, images: Sequence[np.ndarray], deadline: float | None) -> np.ndarray:
        """Embed `images`; returns one row per image, in order.

        All of a request's images are queued or none is: when the queue cannot
        take them all, RESOURCE_EXHAUSTED at once rather than an unbounded wait.
        """
        if self._closed:
            raise UnavailableError("embedder is shutting down")
        free = self._queue_size - self._queue.qsize()
        if len(images) > free:
            self._metrics.dropped.labels("queue_full").inc(len(images))
            raise ResourceExhaustedError(
                f"embedder queue is full ({self._queue.qsize()} of {self._queue_size} images "
                "waiting); retry with backoff"
            )
        loop = asyncio.get_running_loop()
        if not self._running and self._queue.empty():
            self._progressed()  # idle until now: the wait starts here
        pending = [_Pending(image, loop.create_future(), deadline) for image in images]
        for item in pending:
            self._queue.put_nowait(item)
        try:
            rows = await asyncio.gather(*(item.future for item in pending))
        finally:
            # If the caller went away, its queued images are skipped by the consumer.
            for item in pending:
                item.future.cancel()
        return np.stack(rows)

    async def _next_batch(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        close_at = loop.time() + self._max_delay_s
        while len(batch) < self._max_batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = close_at - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    def _live(self, batch: list[_Pending]) -> list[_Pending]:
        """Drop images whose caller cancelled or whose deadline has passed."""
        now = asyncio.get_running_loop().time()
        live = []
        for item in batch:
            if item.future.done():
                self._metrics.dropped.labels("cancelled").inc()
            elif item.deadline is not None and now >= item.deadline:
                self._metrics.dropped.labels("deadline").inc()
                item.future.set_exception(
                    DeadlineExceededError("deadline passed while waiting for the model")
                )
            else:
                live.append(item)
        return live

    def _run(self, images: list[np.ndarray]) -> np.ndarray:
        started = time.perf_counter()
        result = self._batch_function(images)
        self._metrics.forward_time.observe(time.perf_counter() - started)
        self.forward_passes += 1
        if len(result) != len(images):
            raise BatchContractError(
                f"batch function returned {len(result)} results for {len(images)} images"
            )
        return result

    async def _forward(self, images: list[np.ndarray]) -> np.ndarray:
        """One forward pass in the model's thread, tracked for `stalled_for`."""
        self._running = True
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._run, images
            )
        finally:
            self._running = False
            self._progressed()

    async def _consume(self) -> None:
        while True:
            live = self._live(await self._next_batch())
            if not live:
                self._progressed()  # every image of the batch was dropped
                continue
            now = time.perf_counter()
            for item in live:
                self._metrics.queue_wait.observe(now - item.enqueued_at)
            self._metrics.batch_size.observe(len(live))
            images = [item.image for item in live]
            try:
                rows = await self._forward(images)
            except Exception as batch_error:  # noqa: BLE001 -- isolated per image below
                _log.warning(
                    "batch of %d failed (%s); retrying images alone", len(live), batch_error
                )
                await self._run_alone(live)
                continue
            self._metrics.images.inc(len(live))
            for item, row in zip(live, rows, strict=True):
                if not item.future.done():
                    item.future.set_result(row)

    async def _run_alone(self, items: list[_Pending]) -> None:
        for item in items:
            if item.future.done():
                continue
            try:
                row = (await self._forward([item.image]))[0]
            except Exception as error:  # noqa: BLE001 -- this image's own failure
                if not item.future.done():
                    item.future.set_exception(error)
                continue
            self._metrics.images.inc()
            if not item.future.done():
                item.future.set_result(row)
