"""Faults against the real processes, on each Milvus back end: nothing acknowledged is lost.

One test per back end, with a Milvus and a Redis of its own (the session's are
shared and must survive) and the session's Embedder, drives an ingest and
queries through Search while:

1. Milvus is SIGKILLed in the middle of the ingest and restarted: every item
   whose Insert was acknowledged is there afterwards, and re-running the whole
   ingest converges (every item once, no duplicates);
2. the Embedder is SIGKILLed and restarted on its port: while it is down, image
   requests fail with UNAVAILABLE once Search's retry budget is spent (seconds,
   not the caller's whole deadline); once it listens again, the first request
   succeeds (Search's retries and its reconnect backoff cover the reconnection)
   and health is SERVING again;
3. Redis flaps (SIGKILL and restart, SIGSTOP and SIGCONT) under mixed traffic:
   no request fails, and no result from before a write is served after it.

The Embedder killed is the session's (`EmbedderProcess`): it is restarted on its
port before the test ends, so later tests find it serving (a model load per back
end is the cost of this part).
"""

from __future__ import annotations

import asyncio
import io
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from imgsearch.v1 import search_pb2, search_pb2_grpc
from tests.fixtures.backends import (
    MILVUS_BACKENDS,
    MilvusLiteServer,
    MilvusStandalone,
    RedisServer,
    SearchServiceFactory,
    search_address,
)
from tests.fixtures.embedder import EmbedderProcess
from tests.fixtures.photos import PHOTO_NAMES, load_photo
from tests.search.test_search_resilience import wait_for_health

pytestmark = pytest.mark.slow

OK = 0
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(params=MILVUS_BACKENDS)
def killable_milvus(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A Milvus of this test's own: MilvusLiteServer or a private MilvusStandalone."""
    directory = Path(tempfile.mkdtemp(prefix=f"fault-{request.param}-"))
    standalone = request.param == "standalone"
    milvus: Any = MilvusStandalone(directory) if standalone else MilvusLiteServer(directory)
    milvus.start()
    try:
        yield milvus
    finally:
        milvus.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def small_photo(index: int) -> bytes:
    """A small photo whose bytes no other test produces (a unique JPEG comment)."""
    image = load_photo(PHOTO_NAMES[index % len(PHOTO_NAMES)], max_side=96)
    image = image.rotate(index * 13)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85, comment=uuid.uuid4().hex.encode())
    return buffer.getvalue()


@pytest.fixture
async def channel(
    killable_milvus: Any,
    embedder_process: EmbedderProcess,
    own_redis: RedisServer,
    search_service_factory: SearchServiceFactory,
) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to a Search service on this test's own Milvus and Redis, and the Embedder."""
    if not embedder_process.running:
        await asyncio.to_thread(embedder_process.restart)
    server = await search_service_factory(
        milvus_uri=killable_milvus.uri,
        redis_url=own_redis.url,
        embedder_address=embedder_process.address,
        milvus_timeout_s=3,
        embedder_timeout_s=10,
    )
    async with grpc.aio.insecure_channel(search_address(server)) as opened:
        yield opened


async def ingest(
    stub: search_pb2_grpc.SearchStub,
    batches: list[list[search_pb2.Item]],
    acked: set[str],
    failures: list[grpc.StatusCode],
    failed: asyncio.Event | None = None,
) -> None:
    """Insert batch after batch, as `imgsearch ingest` does; record what was acknowledged."""
    for batch in batches:
        try:
            reply = await stub.Insert(search_pb2.InsertRequest(items=batch), timeout=20)
        except grpc.aio.AioRpcError as error:
            failures.append(error.code())
            if failed is not None:
                failed.set()
            continue
        acked.update(result.id for result in reply.results if result.code == OK)


async def kill_milvus_mid_ingest(
    stub: search_pb2_grpc.SearchStub, milvus: Any, batches: list[list[search_pb2.Item]]
) -> set[str]:
    """Ingest while Milvus is SIGKILLed after a few batches and restarted; the acked ids."""
    acked: set[str] = set()
    failures: list[grpc.StatusCode] = []
    failed = asyncio.Event()
    running = asyncio.create_task(ingest(stub, batches, acked, failures, failed))
    while len(acked) < 8:
        assert not running.done(), failures
        await asyncio.sleep(0.05)
    milvus.kill()  # an Insert is in flight or about to be
    await asyncio.wait(
        [running, asyncio.ensure_future(failed.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    await asyncio.to_thread(milvus.restart)
    await running
    # Only the outage's own statuses: retriable, nothing that blames the request.
    assert failures, "Milvus was killed mid-ingest, some Insert must have failed"
    assert set(failures) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
    return acked


async def test_faults_lose_nothing_acknowledged_and_recover(
    channel: grpc.aio.Channel,
    killable_milvus: Any,
    embedder_process: EmbedderProcess,
    own_redis: RedisServer,
):
    stub = search_pb2_grpc.SearchStub(channel)
    items = [search_pb2.Item(id=f"p{i}", image=small_photo(i)) for i in range(24)]
    batches = [items[start : start + 3] for start in range(0, len(items), 3)]

    # 1. Milvus SIGKILLed mid-ingest: the acknowledged items survive; a re-run converges.
    acked = await kill_milvus_mid_ingest(stub, killable_milvus, batches)
    await wait_for_health(channel, SERVING, within_s=60)
    got = await stub.Get(search_pb2.GetRequest(ids=sorted(acked)), timeout=20)
    assert list(got.missing_ids) == [], "acknowledged items were lost"
    rerun_failures: list[grpc.StatusCode] = []
    rerun: set[str] = set()
    await ingest(stub, batches, rerun, rerun_failures)
    assert rerun_failures == []
    assert rerun == {item.id for item in items}
    assert (await stub.Stats(search_pb2.StatsRequest(), timeout=20)).item_count == len(items)

    # 2. The Embedder SIGKILLed: image queries fail fast and clearly, then recover at once.
    await kill_the_embedder(stub, channel, embedder_process)

    # 3. Redis flapping under mixed traffic: no request fails, nothing stale is served.
    await flap_redis_under_traffic(stub, own_redis, items)


async def kill_the_embedder(
    stub: search_pb2_grpc.SearchStub, channel: grpc.aio.Channel, embedder_process: EmbedderProcess
) -> None:
    embedder_process.kill()
    asked = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as down:
        await stub.Search(search_pb2.SearchRequest(image=small_photo(100)), timeout=20)
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Embedder" in (down.value.details() or "")
    # Within the retry budget (backoffs of 0.1 and 0.2 s, then at most 2 s waiting for
    # the channel), not the 20 s the caller allowed.
    assert time.monotonic() - asked < 8
    await asyncio.to_thread(embedder_process.start)
    started = time.monotonic()
    reply = await stub.Search(search_pb2.SearchRequest(image=small_photo(101), top_k=3), timeout=20)
    assert len(reply.hits) == 3
    inserted = await stub.Insert(
        search_pb2.InsertRequest(items=[search_pb2.Item(id="after", image=small_photo(102))]),
        timeout=20,
    )
    assert inserted.inserted == 1
    assert time.monotonic() - started < 10
    await wait_for_health(channel, SERVING, within_s=15)


async def flap_redis_under_traffic(
    stub: search_pb2_grpc.SearchStub, redis: RedisServer, items: list[search_pb2.Item]
) -> None:
    query = search_pb2.SearchRequest(id="p0", top_k=len(items) + 5)
    before = {hit.id for hit in (await stub.Search(query, timeout=20)).hits}  # and cached
    stop = asyncio.Event()
    errors: list[str] = []

    async def traffic() -> None:
        round_index = 0
        while not stop.is_set():
            round_index += 1
            try:
                await stub.Search(query, timeout=20)
                await stub.Search(search_pb2.SearchRequest(image=items[1].image), timeout=20)
                labels = {"round": str(round_index)}
                relabel = search_pb2.Item(id="p2", image=items[2].image, labels=labels)
                await stub.Insert(search_pb2.InsertRequest(items=[relabel]), timeout=20)
            except grpc.aio.AioRpcError as error:
                errors.append(f"{error.code().name}: {error.details()}")

    running = asyncio.create_task(traffic())
    await asyncio.sleep(0.4)
    await asyncio.to_thread(redis.kill)  # refused: every command fails at once
    await asyncio.sleep(0.4)
    await asyncio.to_thread(redis.restart)  # back, empty
    await asyncio.sleep(0.4)
    assert redis.child is not None
    redis.child.signal(signal.SIGSTOP)  # hangs: every command times out
    await asyncio.sleep(0.6)
    redis.child.signal(signal.SIGCONT)
    # A write in the middle of the flapping, then the deleted item must never come back.
    deleted = await stub.Delete(search_pb2.DeleteRequest(ids=["p5"]), timeout=20)
    assert deleted.deleted == 1
    await asyncio.sleep(0.5)
    stop.set()
    await running
    assert errors == [], errors
    for _ in range(3):
        reply = await stub.Search(query, timeout=20)
        assert "p5" not in {hit.id for hit in reply.hits}
        assert {hit.id for hit in reply.hits} == before - {"p5"}
