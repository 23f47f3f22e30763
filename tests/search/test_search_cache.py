"""The Redis cache of the Search service: what shares an entry, what invalidates it, and
the embedding cache that lets known images skip the Embedder.

Real Redis, real Embedder, the real Milvus Lite server (the cache does not
depend on the Milvus back end); the Embedder is reached through a TCP relay
where a test must prove that the Embedder was *not* needed.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Awaitable, Callable

import grpc
import numpy as np
import pytest

from imgsearch.v1 import search_pb2, search_pb2_grpc
from imgsearch_search import cache as cache_module
from tests.fixtures.backends import SearchServiceFactory, search_address
from tests.fixtures.photos import cropped, jpeg, load_photo
from tests.fixtures.waiting import eventually
from tests.search.test_search_resilience import TcpRelay, expect_status, relay_factory
from tests.search.test_search_resilience import photo as unique_photo

pytestmark = pytest.mark.slow
__all__ = ["relay_factory"]  # the fixture, imported for this module's tests

NAMES = ("astronaut", "coffee", "rocket", "moon", "coins")


def item(name: str, **labels: str) -> search_pb2.Item:
    return search_pb2.Item(id=name, image=jpeg(load_photo(name)), labels=labels)


async def cached_search(stub: search_pb2_grpc.SearchStub, query: search_pb2.SearchRequest) -> bool:
    """Whether the reply to `query` came from the cache."""
    return (await stub.Search(query)).cached


async def test_a_write_through_one_replica_invalidates_every_replicas_results(
    milvus_lite_uri: str,
    redis_url: str,
    embedder_address: str,
    unique_collection: str,
    search_service_factory: SearchServiceFactory,
    monkeypatch: pytest.MonkeyPatch,
):
    # The replicas run in this process. Long enough that the two searches that must not be
    # cached (right after the write) run inside the window even on a loaded machine.
    monkeypatch.setattr(cache_module, "SETTLE_S", 1.0)
    common = {
        "milvus_uri": milvus_lite_uri,
        "redis_url": redis_url,
        "embedder_address": embedder_address,
        "collection": unique_collection,
        # A stalled round trip on a loaded machine must not open the breaker (no caching).
        "redis_timeout_s": 2.0,
    }
    replica_a = await search_service_factory(**common)
    replica_b = await search_service_factory(**common)
    async with (
        grpc.aio.insecure_channel(search_address(replica_a)) as channel_a,
        grpc.aio.insecure_channel(search_address(replica_b)) as channel_b,
    ):
        a, b = search_pb2_grpc.SearchStub(channel_a), search_pb2_grpc.SearchStub(channel_b)
        await a.Insert(search_pb2.InsertRequest(items=[item(n) for n in NAMES[:4]]))
        query = search_pb2.SearchRequest(image=jpeg(load_photo("coins")), top_k=3)
        assert not (await a.Search(query)).cached
        assert (await a.Search(query)).cached
        assert (await b.Search(query)).cached  # same collection, same cache entry

        await b.Insert(search_pb2.InsertRequest(items=[item("coins")]))
        after_insert = await a.Search(query)
        assert not after_insert.cached
        assert after_insert.hits[0].id == "coins"
        # B's write is unsettled: A's reads might not show it yet, so A stores
        # nothing; B itself (it reads its own writes) may.
        assert not (await a.Search(query)).cached
        # Once the write has settled, A stores its next result and serves it after.
        assert await eventually(lambda: cached_search(a, query))

        assert (await b.Delete(search_pb2.DeleteRequest(ids=["coins"]))).deleted == 1
        after_delete = await a.Search(query)
        assert not after_delete.cached
        assert "coins" not in {hit.id for hit in after_delete.hits}


async def test_equivalent_queries_share_one_entry_and_different_ones_do_not(
    milvus_lite_uri: str,
    redis_url: str,
    embedder_address: str,
    search_service_factory: SearchServiceFactory,
):
    server = await search_service_factory(
        milvus_uri=milvus_lite_uri, redis_url=redis_url, embedder_address=embedder_address
    )
    async with grpc.aio.insecure_channel(search_address(server)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        await stub.Insert(
            search_pb2.InsertRequest(
                items=[item(name, kind="photo", color=name[0]) for name in NAMES]
            )
        )

        def by_id(filter_text: str, **extra: object) -> search_pb2.SearchRequest:
            return search_pb2.SearchRequest(id="coffee", top_k=3, filter=filter_text, **extra)

        assert not (await stub.Search(by_id('kind == "photo" and color in ["a", "c"]'))).cached
        # Same conditions in another order, other quotes, repeated values: one entry.
        same = by_id("color in ['c', 'a', 'c']   and kind=='photo'")
        assert (await stub.Search(same)).cached
        for different in (
            by_id('kind == "photo" and color in ["a"]'),
            by_id('kind == "photo" and color in ["a", "c"]', min_score=0.1),
            search_pb2.SearchRequest(id="coffee", top_k=4, filter='kind == "photo"'),
        ):
            assert not (await stub.Search(different)).cached

        got = await stub.Get(search_pb2.GetRequest(ids=["rocket"], include_vectors=True))
        vector = np.asarray(got.items[0].vector, dtype=np.float32)
        first = await stub.Search(search_pb2.SearchRequest(vector=search_pb2.Vector(values=vector)))
        assert not first.cached
        # The server normalises query vectors before keying the cache, so a scaled
        # copy is the same query (by 4: exact in binary floating point).
        scaled = search_pb2.Vector(values=(vector * 4.0).tolist())
        again = await stub.Search(search_pb2.SearchRequest(vector=scaled))
        assert again.cached
        assert list(again.hits) == list(first.hits)


async def test_known_images_skip_the_embedder(
    milvus_lite_uri: str,
    redis_url: str,
    embedder_address: str,
    search_service_factory: SearchServiceFactory,
    relay_factory: Callable[[str], Awaitable[TcpRelay]],
):
    relay = await relay_factory(embedder_address)
    server = await search_service_factory(
        milvus_uri=milvus_lite_uri,
        redis_url=redis_url,
        embedder_address=relay.address,
        embedder_retries=0,
        embedder_timeout_s=3,
    )
    async with grpc.aio.insecure_channel(search_address(server)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        # Deadlines of the caller's own: the 3 s cap is for calls without one (a busy CPU).
        await stub.Insert(search_pb2.InsertRequest(items=[item(n) for n in NAMES]), timeout=120)
        # A query photo nobody inserted: its embedding is cached by this search.
        query_image = jpeg(cropped(load_photo("rocket"), 0.7), quality=60)
        first = await stub.Search(search_pb2.SearchRequest(image=query_image, top_k=2), timeout=60)
        assert first.hits[0].id == "rocket"
        assert (await stub.Delete(search_pb2.DeleteRequest(ids=["moon"]))).deleted == 1

        await relay.cut()  # from here on the Embedder cannot be reached
        again = await stub.Search(search_pb2.SearchRequest(image=query_image, top_k=2))
        assert not again.cached  # the delete made the cached result unreachable...
        assert [hit.id for hit in again.hits] == [hit.id for hit in first.hits]  # ...not the vector

        # Re-inserting known images (new labels) needs no Embedder either.
        relabelled = await stub.Insert(
            search_pb2.InsertRequest(items=[item("moon", round="2"), item("coffee", round="2")])
        )
        assert [result.code for result in relabelled.results] == [0, 0]
        got = await stub.Get(search_pb2.GetRequest(ids=["moon", "coffee"]))
        assert [dict(stored.labels) for stored in got.items] == [{"round": "2"}] * 2

        # An image never seen does.
        unseen = search_pb2.Item(id="clock", image=unique_photo("clock"))
        await expect_status(
            stub.Insert(search_pb2.InsertRequest(items=[unseen])),
            grpc.StatusCode.UNAVAILABLE,
            "Embedder",
        )


async def test_with_the_cache_disabled_nothing_is_cached(
    milvus_lite_uri: str,
    embedder_address: str,
    search_service_factory: SearchServiceFactory,
):
    server = await search_service_factory(
        milvus_uri=milvus_lite_uri,
        redis_url="redis://127.0.0.1:1/0",  # never contacted
        embedder_address=embedder_address,
        cache_enabled=False,
    )
    async with grpc.aio.insecure_channel(search_address(server)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        await stub.Insert(search_pb2.InsertRequest(items=[item("coffee"), item("rocket")]))
        for _ in range(2):
            reply = await stub.Search(search_pb2.SearchRequest(id="coffee", top_k=2))
            assert not reply.cached
            assert [hit.id for hit in reply.hits] == ["coffee", "rocket"]
        stats = await stub.Stats(search_pb2.StatsRequest())
        assert not stats.cache_available
        assert (stats.cache_hits, stats.cache_misses) == (0, 0)


async def test_metrics_count_cache_outcomes_rpcs_and_dependency_calls(
    milvus_lite_uri: str,
    redis_url: str,
    embedder_address: str,
    search_service_factory: SearchServiceFactory,
):
    server = await search_service_factory(
        milvus_uri=milvus_lite_uri, redis_url=redis_url, embedder_address=embedder_address
    )
    async with grpc.aio.insecure_channel(search_address(server)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        await stub.Insert(search_pb2.InsertRequest(items=[item("coffee"), item("rocket")]))
        for _ in range(3):
            await stub.Search(search_pb2.SearchRequest(id="coffee", top_k=2))
        await expect_status(
            stub.Search(search_pb2.SearchRequest(id="missing")), grpc.StatusCode.NOT_FOUND
        )

    url = f"http://127.0.0.1:{server.metrics_server.port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['search_cache_lookups_total{kind="result",outcome="miss"}'] >= 2
    assert samples['search_cache_lookups_total{kind="result",outcome="hit"}'] == 2
    handled = 'grpc_server_handled_total{code="%s",method="/imgsearch.v1.Search/Search"}'
    assert samples[handled % "OK"] == 3
    assert samples[handled % "NOT_FOUND"] == 1
    milvus_search = (
        'search_dependency_call_seconds_count{dependency="milvus",operation="the search",'
        'outcome="ok"}'
    )
    assert samples[milvus_search] == 1  # two of the three searches came from Redis
    assert samples['search_query_seconds_count{cache="hit",query="id"}'] == 2
    assert samples['search_query_seconds_count{cache="miss",query="id"}'] == 1
    assert any(
        key.startswith('search_dependency_call_seconds_count{dependency="embedder"')
        for key in samples
    )
