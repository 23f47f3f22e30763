"""The index and metric settings: each combination builds, searches and reports itself.

HNSW with COSINE (the default) is what every other Search test runs; these
cover the other index types and the IP metric on both Milvus back ends.
"""

from __future__ import annotations

import grpc
import pytest

from imgsearch.v1 import search_pb2, search_pb2_grpc
from tests.fixtures.backends import SearchServiceFactory, search_address

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("index_type", "metric_type"), [("FLAT", "IP"), ("IVF_FLAT", "COSINE")])
async def test_index_and_metric_settings(
    index_type: str,
    metric_type: str,
    milvus_uri: str,
    redis_url: str,
    embedder_address: str,
    photos: dict[str, bytes],
    search_service_factory: SearchServiceFactory,
):
    server = await search_service_factory(
        milvus_uri=milvus_uri,
        redis_url=redis_url,
        embedder_address=embedder_address,
        index_type=index_type,
        metric_type=metric_type,
        nlist=4,
        nprobe=4,
    )
    async with grpc.aio.insecure_channel(search_address(server)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        names = ("astronaut", "coffee", "rocket", "moon", "coins")
        items = [search_pb2.Item(id=name, image=photos[name]) for name in names]
        assert (await stub.Insert(search_pb2.InsertRequest(items=items))).inserted == 5
        stats = await stub.Stats(search_pb2.StatsRequest())
        assert (stats.index_type, stats.metric_type) == (index_type, metric_type)

        reply = await stub.Search(search_pb2.SearchRequest(image=photos["rocket"], top_k=5))
        assert reply.hits[0].id == "rocket"
        assert reply.hits[0].score == pytest.approx(1.0, abs=1e-3)
        assert len(reply.hits) == 5
        # Unit vectors: IP and COSINE give the same scores, all in [-1, 1].
        assert all(-1.0 <= hit.score <= 1.0 for hit in reply.hits)
        by_id = await stub.Search(search_pb2.SearchRequest(id="moon", top_k=5))
        assert sorted(hit.id for hit in by_id.hits) == sorted(names)
        # Similarity is symmetric, whichever item asks.
        from_moon = next(hit.score for hit in by_id.hits if hit.id == "rocket")
        from_rocket = await stub.Search(search_pb2.SearchRequest(id="rocket", top_k=5))
        to_moon = next(hit.score for hit in from_rocket.hits if hit.id == "moon")
        assert from_moon == pytest.approx(to_moon, abs=1e-4)
