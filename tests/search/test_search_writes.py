"""Writes whose callers go away, deadlines, load shedding and settings of existing collections.

Milvus or the Embedder is reached through a TCP relay that holds traffic back
(`TcpRelay.delay_s`), so a write is still on its way to Milvus when its caller
cancels or its deadline passes, the way a slow network or a busy Milvus looks.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import grpc
import numpy as np
import pytest
from PIL import Image

from imgsearch.v1 import search_pb2, search_pb2_grpc
from tests.fixtures.backends import SearchServiceFactory, search_address
from tests.search.test_search_faults import small_photo
from tests.search.test_search_resilience import TcpRelay, expect_status, photo, relay_factory

pytestmark = pytest.mark.slow
__all__ = ["relay_factory"]  # the fixture, imported for this module's tests

Relays = Callable[[str], Awaitable[TcpRelay]]


async def hit_ids(stub: search_pb2_grpc.SearchStub, query: search_pb2.SearchRequest) -> set[str]:
    return {hit.id for hit in (await stub.Search(query, timeout=30)).hits}


async def until_stored(stub: search_pb2_grpc.SearchStub, item_id: str, stored: bool) -> None:
    """Wait until Milvus shows the write (or the delete) that the caller gave up on."""
    for _ in range(100):
        try:
            got = await stub.Get(search_pb2.GetRequest(ids=[item_id]), timeout=30)
        except grpc.aio.AioRpcError as error:  # behind the relay's held-back traffic
            if error.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                raise
        else:
            if bool(got.items) == stored:
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{item_id} never became {'stored' if stored else 'deleted'}")


async def cached_twice(stub: search_pb2_grpc.SearchStub, query: search_pb2.SearchRequest) -> None:
    for _ in range(30):  # a fresh generation lets nobody cache for a moment
        await stub.Search(query, timeout=30)
        if (await stub.Search(query, timeout=30)).cached:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the query was never cached")


async def test_writes_the_caller_abandons_never_leave_stale_results_cached(
    milvus_uri: str,
    redis_url: str,
    embedder_address: str,
    search_service_factory: SearchServiceFactory,
    relay_factory: Relays,
):
    relay = await relay_factory(milvus_uri)
    server = await search_service_factory(
        milvus_uri=f"http://{relay.address}",
        redis_url=redis_url,
        embedder_address=embedder_address,
        milvus_timeout_s=10,
    )
    async with grpc.aio.insecure_channel(search_address(server)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        images = {name: photo(name) for name in ("coffee", "rocket", "moon")}
        items = [search_pb2.Item(id=name, image=images[name]) for name in ("coffee", "rocket")]
        await stub.Insert(search_pb2.InsertRequest(items=items), timeout=60)
        await stub.Search(search_pb2.SearchRequest(image=images["moon"]), timeout=60)  # embedded
        query = search_pb2.SearchRequest(id="coffee", top_k=10)
        await cached_twice(stub, query)

        # Cancelled while the upsert is on its way: Milvus applies it, the cache hears of it.
        relay.delay_s = 0.8
        moon = search_pb2.Item(id="moon", image=images["moon"])
        call = stub.Insert(search_pb2.InsertRequest(items=[moon]), timeout=60)
        await asyncio.sleep(0.3)
        call.cancel()
        relay.delay_s = 0.0
        await until_stored(stub, "moon", stored=True)
        assert "moon" in await hit_ids(stub, query)

        # The same for a Delete.
        await cached_twice(stub, query)
        relay.delay_s = 0.8
        call = stub.Delete(search_pb2.DeleteRequest(ids=["moon"]), timeout=60)
        await asyncio.sleep(0.3)
        call.cancel()
        relay.delay_s = 0.0
        await until_stored(stub, "moon", stored=False)
        await server.servicer.wait_for_writes(10)
        assert "moon" not in await hit_ids(stub, query)


async def test_a_write_that_times_out_in_milvus_but_lands_later_is_not_cached_around(
    milvus_lite_uri: str,
    redis_url: str,
    embedder_address: str,
    search_service_factory: SearchServiceFactory,
    relay_factory: Relays,
):
    relay = await relay_factory(milvus_lite_uri)
    server = await search_service_factory(
        milvus_uri=f"http://{relay.address}",
        redis_url=redis_url,
        embedder_address=embedder_address,
        milvus_timeout_s=0.5,
    )
    async with grpc.aio.insecure_channel(search_address(server)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        images = {name: photo(name) for name in ("coins", "clock")}
        await stub.Insert(
            search_pb2.InsertRequest(items=[search_pb2.Item(id="coins", image=images["coins"])]),
            timeout=60,
        )
        await stub.Search(search_pb2.SearchRequest(image=images["clock"]), timeout=60)
        query = search_pb2.SearchRequest(id="coins", top_k=10)
        await cached_twice(stub, query)

        relay.response_delay_s = 1.5  # Milvus applies the upsert; pymilvus gives up waiting
        clock = search_pb2.Item(id="clock", image=images["clock"])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Insert(search_pb2.InsertRequest(items=[clock]), timeout=60)
        assert info.value.code() in (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.UNAVAILABLE,
        )
        relay.response_delay_s = 0.0
        await until_stored(stub, "clock", stored=True)
        # Its outcome was unknown: nothing computed meanwhile was cached.
        assert "clock" in await hit_ids(stub, query)
        assert not (await stub.Search(query, timeout=30)).cached


async def test_one_deadline_covers_every_milvus_call_of_a_delete(
    milvus_lite_uri: str,
    redis_url: str,
    embedder_address: str,
    search_service_factory: SearchServiceFactory,
    relay_factory: Relays,
):
    relay = await relay_factory(milvus_lite_uri)
    server = await search_service_factory(
        milvus_uri=f"http://{relay.address}",
        redis_url=redis_url,
        embedder_address=embedder_address,
        milvus_timeout_s=10,
    )
    async with grpc.aio.insecure_channel(search_address(server)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        item = search_pb2.Item(id="coffee", image=photo("coffee"))
        await stub.Insert(search_pb2.InsertRequest(items=[item]), timeout=60)
        relay.delay_s = 0.7  # each of the Delete's three Milvus calls now takes 0.7 s
        started = time.monotonic()
        await expect_status(
            stub.Delete(search_pb2.DeleteRequest(ids=["coffee"]), timeout=1.0),
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
        await server.servicer.wait_for_writes(10)
        # The server stopped at the caller's deadline, not three deadlines later.
        assert time.monotonic() - started < 1.6


def noise_jpeg(side: int) -> bytes:
    """A photo-sized JPEG of random pixels (large, and unique to this call)."""
    pixels = np.random.default_rng().integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


async def test_the_callers_longer_deadline_wins_over_the_default(
    milvus_lite_uri: str,
    redis_url: str,
    embedder_address: str,
    search_service_factory: SearchServiceFactory,
    relay_factory: Relays,
):
    relay = await relay_factory(embedder_address)
    server = await search_service_factory(
        milvus_uri=milvus_lite_uri,
        redis_url=redis_url,
        embedder_address=relay.address,
        embedder_timeout_s=3.0,  # each Embed call's cap
        milvus_timeout_s=0.5,  # without a caller deadline: 3.5 s in all
        embed_concurrency=1,
        embedder_retries=0,
    )
    async with grpc.aio.insecure_channel(search_address(server)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        # One bad image fails the first Embed call; then each image is embedded
        # alone: four calls one after another, each about a second behind the relay.
        items = [
            search_pb2.Item(id="bad", image=b"not an image" + uuid.uuid4().bytes),
            search_pb2.Item(id="good-1", image=small_photo(1)),
            search_pb2.Item(id="good-2", image=small_photo(2)),
        ]
        warm = search_pb2.Item(id="warm-up", image=small_photo(3))  # a cold model is slow
        await stub.Insert(search_pb2.InsertRequest(items=[warm]), timeout=60)
        relay.delay_s = 1.0
        started = time.monotonic()
        reply = await stub.Insert(search_pb2.InsertRequest(items=items), timeout=60)
        assert time.monotonic() - started > 3.5  # longer than the default would allow
        assert [result.code for result in reply.results] == [3, 0, 0]


async def test_one_embed_call_may_use_all_of_the_callers_deadline(
    milvus_lite_uri: str,
    redis_url: str,
    embedder_address: str,
    search_service_factory: SearchServiceFactory,
    relay_factory: Relays,
):
    """A slow Embed call (a large Insert on a busy CPU) is not cut at the setting's cap."""
    relay = await relay_factory(embedder_address)
    server = await search_service_factory(
        milvus_uri=milvus_lite_uri,
        redis_url=redis_url,
        embedder_address=relay.address,
        embedder_timeout_s=2.0,  # each Embed call's cap when the caller sets no deadline
        milvus_timeout_s=5.0,
        embedder_retries=0,
    )
    async with grpc.aio.insecure_channel(search_address(server)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        warm = search_pb2.Item(id="warm-up", image=small_photo(4))  # a cold model is slow
        await stub.Insert(search_pb2.InsertRequest(items=[warm]), timeout=60)
        relay.delay_s = 3.0  # every Embed call now takes longer than the 2 s cap
        slow = search_pb2.Item(id="slow-" + uuid.uuid4().hex, image=small_photo(5))
        reply = await stub.Insert(search_pb2.InsertRequest(items=[slow]), timeout=60)
        assert [result.code for result in reply.results] == [0]
        # Without a caller deadline the cap holds: the call is cut, nothing is written.
        other = search_pb2.Item(id="capped-" + uuid.uuid4().hex, image=small_photo(6))
        await expect_status(
            stub.Insert(search_pb2.InsertRequest(items=[other])),
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "Embed",
        )
        got = await stub.Get(search_pb2.GetRequest(ids=[slow.id, other.id]), timeout=30)
        assert [item.id for item in got.items] == [slow.id]


async def test_search_sheds_load_beyond_its_milvus_queue_and_insert_bytes(
    milvus_lite_uri: str,
    redis_url: str,
    embedder_address: str,
    search_service_factory: SearchServiceFactory,
    relay_factory: Relays,
):
    milvus = await relay_factory(milvus_lite_uri)
    embedder = await relay_factory(embedder_address)
    server = await search_service_factory(
        milvus_uri=f"http://{milvus.address}",
        redis_url=redis_url,
        embedder_address=embedder.address,
        cache_enabled=False,
        milvus_max_pending=2,
        insert_bytes_in_flight=1024 * 1024,
    )
    async with grpc.aio.insecure_channel(search_address(server)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        await stub.Insert(
            search_pb2.InsertRequest(items=[search_pb2.Item(id="moon", image=photo("moon"))]),
            timeout=60,
        )
        dimension = (await stub.Stats(search_pb2.StatsRequest(), timeout=30)).dimension
        vector = search_pb2.Vector(values=[1.0] * dimension)
        query = search_pb2.SearchRequest(vector=vector, top_k=1)

        milvus.delay_s = 0.5
        outcomes = await asyncio.gather(
            *(stub.Search(query, timeout=30) for _ in range(8)), return_exceptions=True
        )
        shed = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert 2 <= 8 - len(shed) < 8
        for error in shed:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "SEARCH_MILVUS_MAX_PENDING=2" in (error.details() or "")
        milvus.delay_s = 0.0
        assert len((await stub.Search(query, timeout=30)).hits) == 1

        # Image bytes in flight: a second large Insert waits for none, it is refused.
        embedder.delay_s = 1.0
        big = [search_pb2.Item(id=f"big-{i}", image=noise_jpeg(800)) for i in range(2)]
        assert all(600_000 < len(item.image) < 1024 * 1024 for item in big)  # two do not fit
        first = asyncio.ensure_future(
            stub.Insert(search_pb2.InsertRequest(items=[big[0]]), timeout=60)
        )
        await asyncio.sleep(0.3)
        await expect_status(
            stub.Insert(search_pb2.InsertRequest(items=[big[1]]), timeout=60),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "SEARCH_INSERT_BYTES_IN_FLIGHT",
        )
        assert (await first).inserted == 1
        embedder.delay_s = 0.0
        retried = await stub.Insert(search_pb2.InsertRequest(items=[big[1]]), timeout=60)
        assert retried.inserted == 1


async def test_an_existing_collection_gets_the_configured_consistency_and_a_drift_warning(
    milvus_uri: str,
    redis_url: str,
    embedder_address: str,
    unique_collection: str,
    search_service_factory: SearchServiceFactory,
    caplog: pytest.LogCaptureFixture,
):
    common = {
        "milvus_uri": milvus_uri,
        "redis_url": redis_url,
        "embedder_address": embedder_address,
        "collection": unique_collection,
        "cache_enabled": False,
    }
    first = await search_service_factory(
        **common, index_type="FLAT", metric_type="IP", consistency_level="Bounded"
    )
    await first.stop(drain_delay_s=0, grace_s=1)

    with caplog.at_level(logging.WARNING, logger="imgsearch_search.store"):
        second = await search_service_factory(**common)  # HNSW, COSINE, Session
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "NOT applied" in w and "index_type: stored FLAT, configured HNSW" in w for w in warnings
    ), warnings
    assert any("metric_type: stored IP, configured COSINE" in w for w in warnings), warnings

    async with grpc.aio.insecure_channel(search_address(second)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        for name in ("horse", "brick", "grass"):
            item = search_pb2.Item(id=name, image=photo(name))
            await stub.Insert(search_pb2.InsertRequest(items=[item]), timeout=60)
            # Read-your-writes (Session, applied per request), though the collection
            # was created Bounded, which would answer from a stale snapshot.
            reply = await stub.Search(search_pb2.SearchRequest(id=name, top_k=5), timeout=30)
            assert reply.hits[0].id == name
            got = await stub.Get(search_pb2.GetRequest(ids=[name]), timeout=30)
            assert [stored.id for stored in got.items] == [name]
