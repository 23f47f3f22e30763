"""The dynamic batcher's contract, with a stand-in batch function.

These are unit tests of the batching logic: a stand-in batch function (not the
model) lets each test control timing, count calls and inject failures exactly.
The real model goes through the batcher in tests/embedder/test_server.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from imgsearch.common.errors import DeadlineExceededError, ResourceExhaustedError
from imgsearch_embedder.batcher import BatchContractError, BatcherMetrics, DynamicBatcher


class Recorder:
    """Batch function returning each image's first value, recording batch sizes."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[int] = []
        self.delay_s = delay_s
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        self.gate.wait(5)
        if self.delay_s:
            threading.Event().wait(self.delay_s)
        self.batches.append(len(images))
        if any(image[0] == -1 for image in images) and len(images) > 1:
            raise RuntimeError("poisoned batch")
        if len(images) == 1 and images[0][0] == -1:
            raise ValueError("poison image")
        return np.array([[float(image[0])] for image in images])


@pytest.fixture
async def make_batcher():
    executor = ThreadPoolExecutor(1)
    made: list[DynamicBatcher] = []

    def factory(function, **overrides) -> DynamicBatcher:
        options = {"max_batch_size": 8, "max_delay_s": 0.02, "queue_size": 64, **overrides}
        batcher = DynamicBatcher(
            function,
            model_executor=executor,
            metrics=BatcherMetrics(CollectorRegistry()),
            **options,
        )
        batcher.start()
        made.append(batcher)
        return batcher

    yield factory
    for batcher in made:
        await batcher.close()
    executor.shutdown()


def image(value: float) -> np.ndarray:
    return np.array([value])


async def test_concurrent_callers_share_batches_and_get_their_own_results(make_batcher):
    recorder = Recorder()
    batcher = make_batcher(recorder)
    results = await asyncio.gather(*(batcher.submit([image(i)], None) for i in range(32)))
    assert [float(r[0][0]) for r in results] == list(range(32))
    assert sum(recorder.batches) == 32
    assert len(recorder.batches) <= 6  # 32 images at most 8 per batch, plus timing slack
    assert max(recorder.batches) == 8


async def test_a_multi_image_request_keeps_its_order(make_batcher):
    batcher = make_batcher(Recorder(), max_batch_size=3)
    rows = await batcher.submit([image(v) for v in (5, 4, 3, 2, 1)], None)
    assert rows[:, 0].tolist() == [5, 4, 3, 2, 1]


async def test_wrong_number_of_results_is_caught(make_batcher):
    batcher = make_batcher(lambda images: np.zeros((len(images) + 1, 1)))
    with pytest.raises(BatchContractError, match="returned 2 results for 1 images"):
        await batcher.submit([image(1)], None)


async def test_one_bad_image_fails_only_its_caller(make_batcher):
    recorder = Recorder()
    recorder.gate.clear()  # hold the first batch so all three land together
    batcher = make_batcher(recorder)
    calls = [asyncio.ensure_future(batcher.submit([image(v)], None)) for v in (1, -1, 3)]
    await asyncio.sleep(0.05)
    recorder.gate.set()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert float(outcomes[0][0][0]) == 1
    assert float(outcomes[2][0][0]) == 3
    assert isinstance(outcomes[1], ValueError)


async def test_full_queue_is_resource_exhausted_at_once(make_batcher):
    recorder = Recorder()
    recorder.gate.clear()  # the consumer blocks, the queue fills up
    batcher = make_batcher(recorder, queue_size=4, max_batch_size=1)
    first = asyncio.ensure_future(batcher.submit([image(0)], None))
    await asyncio.sleep(0.05)  # consumer took image 0 and is blocked on the gate
    held = asyncio.ensure_future(batcher.submit([image(v) for v in range(4)], None))
    await asyncio.sleep(0.01)
    with pytest.raises(ResourceExhaustedError, match="queue is full"):
        await asyncio.wait_for(batcher.submit([image(9)], None), 0.5)
    recorder.gate.set()
    await first
    assert (await held)[:, 0].tolist() == [0, 1, 2, 3]


async def test_expired_and_cancelled_images_skip_the_forward_pass(make_batcher):
    recorder = Recorder()
    recorder.gate.clear()
    batcher = make_batcher(recorder, max_batch_size=1)
    blocker = asyncio.ensure_future(batcher.submit([image(0)], None))
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    expired = asyncio.ensure_future(batcher.submit([image(1)], loop.time() + 0.01))
    cancelled = asyncio.ensure_future(batcher.submit([image(2)], None))
    await asyncio.sleep(0.05)
    cancelled.cancel()
    recorder.gate.set()
    await blocker
    with pytest.raises(DeadlineExceededError):
        await expired
    live = await batcher.submit([image(3)], None)
    assert float(live[0][0]) == 3
    assert recorder.batches == [1, 1]  # image 0 and image 3 only


async def test_stalled_for_counts_only_while_work_waits_on_a_pass_that_does_not_finish(
    make_batcher,
) -> None:
    recorder = Recorder()
    batcher = make_batcher(recorder)
    assert batcher.stalled_for() == 0.0  # idle
    await batcher.submit([np.array([1.0])], None)
    await asyncio.sleep(0.05)
    assert batcher.stalled_for() == 0.0  # idle again after progress
    recorder.gate.clear()  # the next forward pass hangs
    stuck = asyncio.ensure_future(batcher.submit([np.array([2.0])], None))
    await asyncio.sleep(0.3)
    assert batcher.stalled_for() >= 0.25
    recorder.gate.set()
    await stuck
    assert batcher.stalled_for() == 0.0
