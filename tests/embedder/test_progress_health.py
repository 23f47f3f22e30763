"""A hung model is not healthy: the Embedder's health, and Search's, follow batch progress.

The forward pass is the real one (EfficientNet-Lite0, eager so that a forward
pre-hook can be attached) made to hang inside torch by a hook that waits on an
event; nothing is faked around it.
"""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc
from imgsearch_embedder.server import EmbedderServer
from tests.embedder.images import jpeg
from tests.fixtures.embedder import default_embedding_dimension, embedder_test_settings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
STALL_TIMEOUT_S = 1.0


async def _status(channel: grpc.aio.Channel, service: str) -> int:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return reply.status


async def _wait_for(channel: grpc.aio.Channel, service: str, status: int, within_s: float) -> float:
    started = time.monotonic()
    while (await _status(channel, service)) != status:
        assert time.monotonic() - started < within_s, f"{service!r} never became {status}"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture(scope="module")
async def hangable_embedder():
    """An Embedder whose real forward pass hangs while `gate` is clear."""
    server = EmbedderServer(
        embedder_test_settings(
            metrics_port=None, cpu_freeze=False, max_batch_size=4, stall_timeout_s=STALL_TIMEOUT_S
        )
    )
    await server.start()
    await server.load_model()
    gate = threading.Event()
    gate.set()
    assert server.model is not None

    def hang(module: object, args: object) -> None:
        gate.wait(120)  # returns None: a pre-hook's return value would replace the input

    hook = server.model.trunk.register_forward_pre_hook(hang)
    try:
        yield server, gate
    finally:
        gate.set()
        hook.remove()
        await server.stop(drain_delay_s=0, grace_s=1)


async def test_a_hung_forward_pass_turns_both_services_not_serving_and_back(
    hangable_embedder, search_service_factory, milvus_lite_uri: str, redis_url: str
) -> None:
    server, gate = hangable_embedder
    address = f"127.0.0.1:{server.port}"
    search = await search_service_factory(
        milvus_uri=milvus_lite_uri, redis_url=redis_url, embedder_address=address
    )
    async with (
        grpc.aio.insecure_channel(address) as channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{search.port}") as search_channel,
    ):
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        request = embedder_pb2.EmbedRequest(images=[jpeg("coffee")])
        assert await _status(channel, "imgsearch.v1.Embedder") == SERVING
        gate.clear()
        stuck = asyncio.ensure_future(stub.Embed(request, timeout=60))
        # The bound plus the watchdog's period, with room for a loaded machine.
        await _wait_for(channel, "imgsearch.v1.Embedder", NOT_SERVING, within_s=10)
        assert await _status(channel, "") == NOT_SERVING  # liveness sees it too
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Embed(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "not making progress" in (info.value.details() or "")
        assert time.monotonic() - started < 5, "a new call waited instead of failing fast"
        # GetModel is answered from memory even now: it cannot tell a hung model.
        reply = await stub.GetModel(embedder_pb2.GetModelRequest())
        assert reply.dimension == default_embedding_dimension()
        await _wait_for(search_channel, "imgsearch.v1.Search", NOT_SERVING, within_s=15)
        gate.set()
        assert len((await stuck).embeddings) == 1  # the hung call completes once released
        await _wait_for(channel, "imgsearch.v1.Embedder", SERVING, within_s=10)
        await _wait_for(search_channel, "imgsearch.v1.Search", SERVING, within_s=15)
        assert len((await stub.Embed(request, timeout=30)).embeddings) == 1
