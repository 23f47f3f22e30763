"""The admission gate in front of decoding: limit, order, overload, deadlines, cancellation.

Pure asyncio logic, tested directly; the server tests drive it with real requests.
"""

from __future__ import annotations

import asyncio

import pytest

from imgsearch.common.errors import DeadlineExceededError, ResourceExhaustedError
from imgsearch_embedder.admission import Admission


async def _hold(gate: Admission, count: int, log: list[str], name: str, release: asyncio.Event):
    async with gate.admit(count, None):
        log.append(name)
        await release.wait()


async def test_requests_wait_until_their_images_fit_in_arrival_order() -> None:
    gate = Admission(limit=4, max_waiting=100)
    log: list[str] = []
    first, second, third = asyncio.Event(), asyncio.Event(), asyncio.Event()
    a = asyncio.ensure_future(_hold(gate, 3, log, "a", first))
    b = asyncio.ensure_future(_hold(gate, 2, log, "b", second))  # 3 + 2 > 4: waits
    c = asyncio.ensure_future(_hold(gate, 1, log, "c", third))  # would fit, but b is first
    await asyncio.sleep(0.01)
    assert log == ["a"]
    assert gate.in_flight == 3
    assert gate.waiting == 3
    first.set()
    await asyncio.sleep(0.01)
    assert log == ["a", "b", "c"]
    assert gate.in_flight == 3
    second.set()
    third.set()
    await asyncio.gather(a, b, c)
    assert gate.in_flight == 0
    assert gate.waiting == 0


async def test_a_request_larger_than_the_limit_goes_alone() -> None:
    gate = Admission(limit=4, max_waiting=100)
    async with gate.admit(10, None):
        assert gate.in_flight == 10


async def test_too_many_waiting_images_is_resource_exhausted() -> None:
    gate = Admission(limit=1, max_waiting=3)
    release = asyncio.Event()
    holder = asyncio.ensure_future(_hold(gate, 1, [], "holder", release))
    waiter = asyncio.ensure_future(_hold(gate, 3, [], "waiter", release))
    await asyncio.sleep(0.01)
    with pytest.raises(ResourceExhaustedError, match="queue is full"):
        async with gate.admit(1, None):
            pass
    release.set()
    await asyncio.gather(holder, waiter)


async def test_deadline_while_waiting_is_deadline_exceeded_and_frees_the_place() -> None:
    gate = Admission(limit=1, max_waiting=10)
    release = asyncio.Event()
    holder = asyncio.ensure_future(_hold(gate, 1, [], "holder", release))
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    with pytest.raises(DeadlineExceededError):
        async with gate.admit(1, loop.time() + 0.02):
            pass
    assert gate.waiting == 0
    release.set()
    await holder
    async with gate.admit(1, None):  # nothing leaked
        assert gate.in_flight == 1


async def test_cancelled_waiters_leave_the_line() -> None:
    gate = Admission(limit=1, max_waiting=10)
    release = asyncio.Event()
    log: list[str] = []
    holder = asyncio.ensure_future(_hold(gate, 1, log, "holder", release))
    quitter = asyncio.ensure_future(_hold(gate, 1, log, "quitter", asyncio.Event()))
    patient = asyncio.ensure_future(_hold(gate, 1, log, "patient", release))
    await asyncio.sleep(0.01)
    quitter.cancel()
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(holder, patient)
    assert log == ["holder", "patient"]
    assert gate.in_flight == 0
    assert gate.waiting == 0


async def test_pending_bytes_are_bounded_and_one_request_always_fits() -> None:
    gate = Admission(limit=100, max_waiting=100, max_pending_bytes=1000)
    release = asyncio.Event()
    log: list[str] = []
    # Alone, a request over the byte budget is still admitted.
    async with gate.admit(1, None, nbytes=5000):
        assert gate.pending_bytes == 5000
    holder = asyncio.ensure_future(_hold_bytes(gate, 600, log, release))
    await asyncio.sleep(0.01)
    with pytest.raises(ResourceExhaustedError, match="600 bytes of pending images"):
        async with gate.admit(1, None, nbytes=500):
            pass
    assert gate.pending_bytes == 600  # the refused request left nothing behind
    async with gate.admit(1, None, nbytes=400):
        assert gate.pending_bytes == 1000
    release.set()
    await holder
    assert gate.pending_bytes == 0


async def test_bytes_of_waiting_requests_count_and_are_returned_on_deadline() -> None:
    gate = Admission(limit=1, max_waiting=100, max_pending_bytes=1000)
    release = asyncio.Event()
    holder = asyncio.ensure_future(_hold_bytes(gate, 300, [], release))
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    waiter = asyncio.ensure_future(gate.admit(1, loop.time() + 0.05, nbytes=600).__aenter__())
    await asyncio.sleep(0.01)
    assert gate.pending_bytes == 900  # waiting, not admitted, but holding its bytes
    with pytest.raises(DeadlineExceededError):
        await waiter
    assert gate.pending_bytes == 300
    release.set()
    await holder
    assert gate.pending_bytes == 0


async def _hold_bytes(gate: Admission, nbytes: int, log: list[str], release: asyncio.Event):
    async with gate.admit(1, None, nbytes=nbytes):
        log.append(str(nbytes))
        await release.wait()
