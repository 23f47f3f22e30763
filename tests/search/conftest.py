"""Fixtures of the Search tests: sample photos and one Search service per test.

Each test gets its own collection (and so its own cache namespace) on the
session's Milvus back end, Redis and Embedder, so tests cannot see each
other's items; `milvus_uri` runs every test that uses `search` once per back end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from imgsearch.v1 import search_pb2, search_pb2_grpc
from tests.fixtures.backends import RedisServer, SearchServiceFactory, search_address
from tests.fixtures.photos import load_photos


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """The sample photos as JPEG bytes, by name."""
    return load_photos()


@dataclass
class SearchUnderTest:
    """A running Search service and a client channel to it."""

    server: Any  # imgsearch_search.server.SearchServer
    channel: grpc.aio.Channel
    stub: search_pb2_grpc.SearchStub
    redis: RedisServer
    milvus_uri: str

    async def insert(self, items: list[search_pb2.Item]) -> search_pb2.InsertResponse:
        return await self.stub.Insert(search_pb2.InsertRequest(items=items), timeout=120)

    async def count(self) -> int:
        stats = await self.stub.Stats(search_pb2.StatsRequest(), timeout=30)
        return int(stats.item_count)


@pytest.fixture
async def search(
    milvus_uri: str,
    redis_server: RedisServer,
    redis_url: str,
    embedder_address: str,
    search_service_factory: SearchServiceFactory,
) -> AsyncIterator[SearchUnderTest]:
    """A Search service on a fresh collection of the current Milvus back end."""
    server = await search_service_factory(
        milvus_uri=milvus_uri, redis_url=redis_url, embedder_address=embedder_address
    )
    channel = grpc.aio.insecure_channel(
        search_address(server), options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    )
    try:
        yield SearchUnderTest(
            server=server,
            channel=channel,
            stub=search_pb2_grpc.SearchStub(channel),
            redis=redis_server,
            milvus_uri=milvus_uri,
        )
    finally:
        await channel.close()
