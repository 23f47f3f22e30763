"""The Embedder over real gRPC on loopback, with the real model."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc
from imgsearch_embedder.server import EmbedderServer
from imgsearch_embedder.settings import EmbedderSettings
from tests.embedder.images import encode, jpeg
from tests.fixtures.embedder import (
    LISTENING,
    default_embedding_dimension,
    embedder_test_settings,
)
from tests.fixtures.processes import PYTHON, ChildProcess, free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
DEFAULT_DIMENSION = default_embedding_dimension()


@pytest.fixture(scope="module")
async def channel(embedder_server: EmbedderServer):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{embedder_server.port}") as channel:
        yield channel


def _vectors(response: embedder_pb2.EmbedResponse) -> np.ndarray:
    return np.array([list(e.vector) for e in response.embeddings], dtype=np.float32)


def _metric(server: EmbedderServer, name: str) -> float:
    assert server.metrics_server is not None
    url = f"http://127.0.0.1:{server.metrics_server.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"metric {name} not exported")


async def test_get_model_describes_the_model(channel) -> None:
    stub = embedder_pb2_grpc.EmbedderStub(channel)
    info = await stub.GetModel(embedder_pb2.GetModelRequest())
    default = EmbedderSettings()
    assert info.model.startswith(f"efficientnet_lite0-{default.pooling}")
    assert (info.input_size, info.pooling) == (default.input_size, default.pooling)
    assert info.dimension == DEFAULT_DIMENSION
    assert (info.device, info.dtype) == ("cpu", "float32")
    assert len(info.fingerprint) == 64
    assert json.loads(info.descriptor)["dimension"] == info.dimension
    assert (info.max_images_per_request, info.max_batch_size) == (64, 16)


async def test_batched_equals_single_and_results_map_back(channel) -> None:
    stub = embedder_pb2_grpc.EmbedderStub(channel)
    images = [jpeg(name) for name in PHOTOS] * 4  # 16 images, 4 distinct
    together = _vectors(await stub.Embed(embedder_pb2.EmbedRequest(images=images)))
    singles = await asyncio.gather(
        *(stub.Embed(embedder_pb2.EmbedRequest(images=[image])) for image in images)
    )
    apart = np.concatenate([_vectors(reply) for reply in singles])
    assert together.shape == apart.shape == (16, DEFAULT_DIMENSION)
    np.testing.assert_allclose(together, apart, atol=1e-4)
    # Each answer belongs to its own request: same photo, same vector; others differ.
    similarity = apart @ apart.T
    for i in range(16):
        for j in range(16):
            same = i % 4 == j % 4
            assert (similarity[i, j] > 0.999) == same, (i, j, similarity[i, j])


async def test_concurrent_requests_share_forward_passes(channel, embedder_server) -> None:
    stub = embedder_pb2_grpc.EmbedderStub(channel)
    image = jpeg("chelsea")
    before = _metric(embedder_server, "embedder_batch_size_count")
    replies = await asyncio.gather(
        *(stub.Embed(embedder_pb2.EmbedRequest(images=[image])) for _ in range(64))
    )
    passes = _metric(embedder_server, "embedder_batch_size_count") - before
    assert len(replies) == 64
    assert all(len(r.embeddings) == 1 for r in replies)
    assert passes <= 16, f"64 concurrent requests took {passes} forward passes"


BAD_REQUESTS = {
    "no-images": ([], grpc.StatusCode.INVALID_ARGUMENT, "no images"),
    "empty-bytes": ([b""], grpc.StatusCode.INVALID_ARGUMENT, "images[0]: empty"),
    "garbage": ([jpeg("coffee"), b"\x89PNG nope"], grpc.StatusCode.INVALID_ARGUMENT, "images[1]"),
    "truncated": ([jpeg("coffee")[:3000]], grpc.StatusCode.INVALID_ARGUMENT, "truncated"),
    "too-many-pixels": (
        [encode(np.zeros((9000, 5000), dtype=np.uint8), "PNG")],
        grpc.StatusCode.INVALID_ARGUMENT,
        "exceeds the limit of 40000000 pixels",
    ),
    # Over a per-request limit: RESOURCE_EXHAUSTED, as embedder.proto promises.
    "too-many-images": ([b"x"] * 65, grpc.StatusCode.RESOURCE_EXHAUSTED, "limit of 64"),
    "too-many-bytes": (
        [b"x" * (2900 * 1024)] * 3,  # over our 8 MiB limit, under gRPC's 9 MiB
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "limit of 8388608 bytes",
    ),
    "over-grpc-limit": (
        [b"x" * (10 * 1024 * 1024)],
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "larger than max",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
async def test_bad_input_gets_its_status_and_the_server_stays_healthy(channel, case) -> None:
    images, code, message = BAD_REQUESTS[case]
    stub = embedder_pb2_grpc.EmbedderStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Embed(embedder_pb2.EmbedRequest(images=images))
    assert info.value.code() == code
    assert message in info.value.details()
    health = health_pb2_grpc.HealthStub(channel)
    assert (await health.Check(health_pb2.HealthCheckRequest())).status == SERVING
    reply = await stub.Embed(embedder_pb2.EmbedRequest(images=[jpeg("rocket")]))
    assert len(reply.embeddings[0].vector) == DEFAULT_DIMENSION
    info = await stub.GetModel(embedder_pb2.GetModelRequest())
    assert reply.fingerprint == info.fingerprint


async def test_expired_deadline_is_deadline_exceeded(channel) -> None:
    stub = embedder_pb2_grpc.EmbedderStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Embed(embedder_pb2.EmbedRequest(images=[jpeg("coffee")] * 32), timeout=0.001)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_health_is_not_serving_until_warm_and_while_draining() -> None:
    server = EmbedderServer(embedder_test_settings(metrics_port=None))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        request = health_pb2.HealthCheckRequest(service="imgsearch.v1.Embedder")
        assert (await health.Check(request)).status == NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Embed(embedder_pb2.EmbedRequest(images=[jpeg("coffee")]))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        await server.load_model()
        assert (await health.Check(request)).status == SERVING
        # No max_batch_size configured: the CPU default applies and is reported.
        assert (await stub.GetModel(embedder_pb2.GetModelRequest())).max_batch_size == 4
        # Drain: health flips first, while an in-flight call still completes.
        in_flight = asyncio.ensure_future(
            stub.Embed(embedder_pb2.EmbedRequest(images=[jpeg(n) for n in PHOTOS] * 8))
        )
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(server.stop(drain_delay_s=0.5, grace_s=10))
        await asyncio.sleep(0.1)
        assert (await health.Check(request)).status == NOT_SERVING
        assert len((await in_flight).embeddings) == 32
        await stopping


def test_sigterm_drains_in_flight_work_and_exits_cleanly() -> None:
    env = {
        "EMBEDDER_HOST": "127.0.0.1",
        "EMBEDDER_PORT": "0",
        "EMBEDDER_METRICS_PORT": "0",
        "EMBEDDER_DRAIN_DELAY_S": "0.5",
        # Room for 64 images on a slow or busy machine: the test is about
        # draining, not speed (10 s, the default grace, is ~25x what it needs idle).
        "EMBEDDER_SHUTDOWN_GRACE_S": "120",
    }
    child = ChildProcess("embedder", [PYTHON, "-m", "imgsearch_embedder"], env)
    try:
        port = child.wait_for_line(LISTENING, timeout=180)["port"]

        async def scenario() -> tuple[int, int]:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = embedder_pb2_grpc.EmbedderStub(channel)
                health = health_pb2_grpc.HealthStub(channel)
                big = embedder_pb2.EmbedRequest(images=[jpeg(n) for n in PHOTOS] * 16)
                in_flight = asyncio.ensure_future(stub.Embed(big))
                await asyncio.sleep(0.1)
                child.signal(signal.SIGTERM)
                await asyncio.sleep(0.2)
                status = (await health.Check(health_pb2.HealthCheckRequest())).status
                return status, len((await in_flight).embeddings)

        status, count = asyncio.run(scenario())
        assert status == NOT_SERVING
        assert count == 64
        assert child.proc.wait(30) == 0, child.tail()
    finally:
        child.stop()


def test_missing_weights_stop_start_up_with_instructions() -> None:
    child = ChildProcess(
        "embedder",
        [PYTHON, "-m", "imgsearch_embedder", "--model", "resnet18", "--port", "0"],
        {"EMBEDDER_METRICS_PORT": "0", "EMBEDDER_LOG_JSON": "false"},
    )
    try:
        assert child.proc.wait(120) == 1, child.tail()
        assert "cannot start" in child.tail()
        assert "EMBEDDER_WEIGHTS" in child.tail()
        assert "listening" not in child.tail()
    finally:
        child.stop()


def test_sigterm_while_the_model_loads_exits_cleanly() -> None:
    port = free_port()
    child = ChildProcess(
        "embedder",
        [PYTHON, "-m", "imgsearch_embedder", "--host", "127.0.0.1", "--port", str(port)],
        {"EMBEDDER_METRICS_PORT": "0"},
    )
    try:

        async def first_status() -> int:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                request = health_pb2.HealthCheckRequest()
                reply = await health.Check(request, wait_for_ready=True, timeout=60)
                return reply.status

        assert asyncio.run(first_status()) == NOT_SERVING  # still loading the model
        child.signal(signal.SIGTERM)
        assert child.proc.wait(60) == 0, child.tail()
        assert "listening" not in child.tail()
    finally:
        child.stop()
