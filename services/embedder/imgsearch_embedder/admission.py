"""Admission: how many images may be between decoding and their result at once.

Decoding further ahead than the model can use buys nothing: the decoded images
only wait in the batch queue, holding memory, and on a CPU-only host the decode
threads take cores from the forward pass that is running. So a request first
waits here, as undecoded bytes, until its images fit in `limit` (a couple of
batches); it is decoded only then. Waiting is first come, first served, bounded
by `max_waiting` images (beyond it: RESOURCE_EXHAUSTED at once) and by the
caller's deadline (DEADLINE_EXCEEDED).

Memory is bounded by bytes, not only by counts: a request's encoded bytes stay
in memory from its arrival until its answer, whether it waits or is being
decoded, so the bytes of all pending requests together are bounded by
`max_pending_bytes`; a request that would go beyond gets RESOURCE_EXHAUSTED at
once (unless nothing else is pending: one request always fits).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from imgsearch.common.errors import DeadlineExceededError, ResourceExhaustedError


class Admission:
    """A FIFO gate counting images in flight; a request larger than `limit` goes alone."""

    def __init__(self, limit: int, max_waiting: int, max_pending_bytes: int | None = None) -> None:
        self.limit = limit
        self.max_waiting = max_waiting
        self.max_pending_bytes = max_pending_bytes
        self.in_flight = 0
        self.waiting = 0
        self.pending_bytes = 0  # encoded bytes of requests admitted or waiting
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, count: int) -> bool:
        return self.in_flight == 0 or self.in_flight + count <= self.limit

    def _release(self, count: int) -> None:
        self.in_flight -= count
        while self._waiters and self._fits(self._waiters[0][0]):
            waiting_count, granted = self._waiters.popleft()
            if granted.done():  # its caller gave up
                continue
            self.in_flight += waiting_count
            granted.set_result(None)

    async def _acquire(self, count: int) -> None:
        if not self._waiters and self._fits(count):
            self.in_flight += count
            return
        if self.waiting + count > self.max_waiting:
            raise ResourceExhaustedError(
                f"embedder queue is full ({self.waiting} images waiting, limit"
                f" {self.max_waiting}); retry with backoff"
            )
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (count, granted)
        self._waiters.append(entry)
        self.waiting += count
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release(count)  # admitted just as the caller went away
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
            raise
        finally:
            self.waiting -= count

    def _reserve_bytes(self, nbytes: int) -> None:
        limit = self.max_pending_bytes
        if limit is not None and self.pending_bytes and self.pending_bytes + nbytes > limit:
            raise ResourceExhaustedError(
                f"embedder is holding {self.pending_bytes} bytes of pending images (limit"
                f" {limit}); retry with backoff"
            )
        self.pending_bytes += nbytes

    @contextlib.asynccontextmanager
    async def admit(
        self, count: int, deadline: float | None, nbytes: int = 0
    ) -> AsyncIterator[None]:
        """Hold room for `count` images (`nbytes` encoded) for the body of the `async with`."""
        self._reserve_bytes(nbytes)
        try:
            timeout = None if deadline is None else deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(self._acquire(count), timeout)
            except TimeoutError:
                raise DeadlineExceededError("deadline passed while waiting for the model") from None
            try:
                yield
            finally:
                self._release(count)
        finally:
            self.pending_bytes -= nbytes
