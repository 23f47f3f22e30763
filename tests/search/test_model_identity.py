"""Search and the Embedder's model fingerprint: stored with the collection, checked, in keys."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc
from imgsearch_search.cache import CacheMetrics, QueryCache
from imgsearch_search.server import SearchServer, StartupError
from imgsearch_search.settings import SearchSettings
from imgsearch_search.store import FINGERPRINT_PROPERTY, MODEL_PROPERTY


async def _served(embedder_address: str) -> embedder_pb2.GetModelResponse:
    import grpc

    async with grpc.aio.insecure_channel(embedder_address) as channel:
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        return await stub.GetModel(embedder_pb2.GetModelRequest(), timeout=30)


def _settings(milvus_uri: str, redis_url: str, embedder: str, collection: str) -> SearchSettings:
    return SearchSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        milvus_uri=milvus_uri,
        redis_url=redis_url,
        embedder_address=embedder,
        collection=collection,
        startup_timeout_s=30,
    )


def _create(uri: str, name: str, dimension: int, properties: dict[str, str]) -> None:
    client = MilvusClient(uri=uri, dedicated=True, timeout=60)
    try:
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
        client.create_collection(name, schema=schema, properties=properties)
    finally:
        client.close()


async def _refusal(settings: SearchSettings) -> str:
    server = SearchServer(settings)
    await server.start()
    try:
        with pytest.raises(StartupError) as info:
            await asyncio.wait_for(server.connect(), timeout=60)
        return str(info.value)
    finally:
        await server.stop(drain_delay_s=0, grace_s=1)


async def test_a_collection_of_another_fingerprint_is_refused_naming_both(
    milvus_lite_uri: str, redis_url: str, embedder_address: str, unique_collection: str
) -> None:
    served = await _served(embedder_address)
    assert len(served.fingerprint) == 64
    other = "0123456789abcdef" * 4
    # Same name and dimension: only the fingerprint tells the vectors apart.
    _create(
        milvus_lite_uri,
        unique_collection,
        served.dimension,
        {MODEL_PROPERTY: served.model, FINGERPRINT_PROPERTY: other},
    )
    message = await _refusal(
        _settings(milvus_lite_uri, redis_url, embedder_address, unique_collection)
    )
    assert other in message
    assert served.fingerprint in message
    assert "re-index" in message
    assert "SEARCH_COLLECTION" in message
    assert "imgsearch ingest" in message


async def test_a_collection_from_before_fingerprints_is_refused(
    milvus_lite_uri: str, redis_url: str, embedder_address: str, unique_collection: str
) -> None:
    served = await _served(embedder_address)
    _create(milvus_lite_uri, unique_collection, served.dimension, {MODEL_PROPERTY: served.model})
    message = await _refusal(
        _settings(milvus_lite_uri, redis_url, embedder_address, unique_collection)
    )
    assert "created before model fingerprints" in message
    assert served.fingerprint in message


async def test_a_new_collection_records_the_embedders_fingerprint(
    milvus_lite_uri: str, redis_url: str, embedder_address: str, unique_collection: str
) -> None:
    served = await _served(embedder_address)
    server = SearchServer(
        _settings(milvus_lite_uri, redis_url, embedder_address, unique_collection)
    )
    await server.start()
    try:
        await asyncio.wait_for(server.connect(), timeout=60)
        assert server.store.info is not None
        assert server.store.info.fingerprint == served.fingerprint
    finally:
        await server.stop(drain_delay_s=0, grace_s=1)
    client = MilvusClient(uri=milvus_lite_uri, dedicated=True, timeout=60)
    try:
        properties = client.describe_collection(unique_collection)["properties"]
    finally:
        client.close()
    assert properties[FINGERPRINT_PROPERTY] == served.fingerprint
    # A restart with the same Embedder accepts its own collection.
    again = SearchServer(_settings(milvus_lite_uri, redis_url, embedder_address, unique_collection))
    await again.start()
    try:
        await asyncio.wait_for(again.connect(), timeout=60)
    finally:
        await again.stop(drain_delay_s=0, grace_s=1)


async def test_cached_embeddings_are_keyed_by_fingerprint(redis_url: str) -> None:
    from prometheus_client import CollectorRegistry

    settings = SearchSettings(redis_url=redis_url)
    metrics = CacheMetrics(CollectorRegistry())
    namespace = f"test-{uuid.uuid4().hex}"
    first, second = "a" * 64, "b" * 64
    writer = QueryCache(settings, namespace, first, metrics)
    same = QueryCache(settings, namespace, first, metrics)
    other = QueryCache(settings, namespace, second, metrics)
    digest = uuid.uuid4().hex
    vector = np.arange(8, dtype=np.float32)
    try:
        await writer.put_embeddings({digest: vector})
        found = await same.get_embeddings([digest], 8)
        assert found[0] is not None
        np.testing.assert_array_equal(found[0], vector)
        # Same image, same dimension, another descriptor: never the old vector.
        assert await other.get_embeddings([digest], 8) == [None]
    finally:
        for cache in (writer, same, other):
            await cache.close()


async def test_query_views_are_cached_apart_from_whole_image_embeddings(redis_url: str) -> None:
    """A whole-image entry never answers a query that wants views, and the reverse.

    The Embedding messages are built by hand: the test is about the cache's keys,
    not about what the Embedder finds.
    """
    from prometheus_client import CollectorRegistry

    settings = SearchSettings(redis_url=redis_url)
    cache = QueryCache(
        settings, f"test-{uuid.uuid4().hex}", "c" * 64, CacheMetrics(CollectorRegistry())
    )
    whole_only, with_views, no_views = (uuid.uuid4().hex for _ in range(3))
    vector = np.arange(8, dtype=np.float32)
    inset = embedder_pb2.View(kind="inset", vector=[1.0] * 8, box=[0, 0, 1, 1], score=0.9)
    detectors = "0123456789abcdef"
    try:
        await cache.put_embeddings({whole_only: vector})
        assert await cache.get_query_embedding(whole_only, 8, detectors) is None
        await cache.put_query_embedding(
            with_views, embedder_pb2.Embedding(vector=vector.tolist(), views=[inset]), detectors
        )
        found = await cache.get_query_embedding(with_views, 8, detectors)
        assert found is not None
        assert [view.kind for view in found.views] == ["inset"]
        assert list(found.views[0].box) == [0, 0, 1, 1]
        # Other detectors (a changed views.py), or an Embedder that does not look: a miss.
        assert await cache.get_query_embedding(with_views, 8, "fedcba9876543210") is None
        assert await cache.get_query_embedding(with_views, 8, "") is None
        # The views call also fills the whole-image entry: the same vector.
        np.testing.assert_array_equal((await cache.get_embeddings([with_views], 8))[0], vector)
        # "No views" is an answer too, cached as such, under the detectors that looked.
        await cache.put_query_embedding(
            no_views, embedder_pb2.Embedding(vector=vector.tolist()), detectors
        )
        empty = await cache.get_query_embedding(no_views, 8, detectors)
        assert empty is not None
        assert not empty.views
        # An Embedder that did not look ("" detectors) says nothing about what one that
        # looks would find, and the reverse.
        await cache.put_query_embedding(
            whole_only, embedder_pb2.Embedding(vector=vector.tolist()), ""
        )
        assert await cache.get_query_embedding(whole_only, 8, "") is not None
        assert await cache.get_query_embedding(whole_only, 8, detectors) is None
        # Another dimension (another model, a corrupt entry) is a miss.
        assert await cache.get_query_embedding(with_views, 16, detectors) is None
    finally:
        await cache.close()
