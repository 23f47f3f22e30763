"""The Search service when its dependencies fail, and its process lifecycle.

Outages are real: the service reaches the real Embedder or the real Milvus Lite
server through a TCP relay that the test cuts (every connection dropped, new
ones refused) and restores on the same port, the way a pod restart or a
network partition looks to the service. Only the Milvus Lite server is used:
these tests are about the service's reaction, not about the back end.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pymilvus import DataType, MilvusClient

from imgsearch.v1 import search_pb2, search_pb2_grpc
from imgsearch_search.server import SearchServer, StartupError
from imgsearch_search.settings import SearchSettings
from tests.fixtures.backends import SearchServiceFactory, search_address
from tests.fixtures.embedder import default_embedding_dimension
from tests.fixtures.photos import cropped, load_photo
from tests.fixtures.processes import PYTHON, ChildProcess, free_port

pytestmark = pytest.mark.slow

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class TcpRelay:
    """Forwards 127.0.0.1:port to a target; `cut()` severs it, `restore()` mends it.

    `delay_s` holds back every chunk towards the target by that long after it
    arrived (latency of a slow network or dependency), `response_delay_s` every
    chunk coming back: a request applied whose answer arrives too late.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.delay_s = 0.0
        self.response_delay_s = 0.0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _relay(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ):
        try:
            target_reader, target_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, target_writer))

        async def pump(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, towards_target: bool
        ) -> None:
            chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

            async def read() -> None:
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    while data := await reader.read(65536):
                        delay = self.delay_s if towards_target else self.response_delay_s
                        chunks.put_nowait((time.monotonic() + delay, data))
                chunks.put_nowait((0.0, b""))

            reading = asyncio.create_task(read())
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while (chunk := await chunks.get())[1]:
                    await asyncio.sleep(max(0.0, chunk[0] - time.monotonic()))
                    writer.write(chunk[1])
                    await writer.drain()
            reading.cancel()
            writer.transport.abort()

        await asyncio.gather(
            pump(client_reader, target_writer, True), pump(target_reader, client_writer, False)
        )
        self._writers.difference_update((client_writer, target_writer))


@pytest.fixture
async def relay_factory() -> AsyncIterator[Callable[[str], Awaitable[TcpRelay]]]:
    relays: list[TcpRelay] = []

    async def make(address: str) -> TcpRelay:
        host, port = address.removeprefix("http://").rsplit(":", 1)
        relay = TcpRelay(host, int(port))
        await relay.restore()
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        await relay.cut()


async def health_status(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(
        health_pb2.HealthCheckRequest(service="imgsearch.v1.Search"), timeout=5
    )
    return int(reply.status)


async def wait_for_health(channel: grpc.aio.Channel, status: int, within_s: float) -> float:
    """Wait until the health status is `status`; returns how long it took."""
    started = time.monotonic()
    while (await health_status(channel)) != status:
        assert time.monotonic() - started < within_s, f"health never became {status}"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def expect_status(call: Awaitable[object], code: grpc.StatusCode, *fragments: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    details = info.value.details() or ""
    assert info.value.code() == code, details
    for fragment in fragments:
        assert fragment in details, details
    return details


def photo(name: str, keep: float = 1.0) -> bytes:
    """A sample photo whose bytes no other test produced (a unique JPEG comment).

    Unique bytes keep the Redis embedding cache, which is keyed by content and
    shared by every collection of the model, from answering for the Embedder.
    """
    image = load_photo(name)
    image = cropped(image, keep) if keep < 1.0 else image
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, comment=uuid.uuid4().hex.encode())
    return buffer.getvalue()


async def test_embedder_outage_fails_image_calls_clearly_and_recovers(
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
        embedder_retries=1,
        embedder_timeout_s=5,
    )
    async with grpc.aio.insecure_channel(search_address(server)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        items = [search_pb2.Item(id=name, image=photo(name)) for name in ("coffee", "rocket")]
        assert (await stub.Insert(search_pb2.InsertRequest(items=items))).inserted == 2

        query_image = photo("coffee", 0.9)
        await relay.cut()
        started = time.monotonic()
        await expect_status(
            stub.Search(search_pb2.SearchRequest(image=query_image)),
            grpc.StatusCode.UNAVAILABLE,
            "Embedder",
            relay.address,
        )
        await expect_status(
            stub.Insert(
                search_pb2.InsertRequest(items=[search_pb2.Item(id="moon", image=photo("moon"))])
            ),
            grpc.StatusCode.UNAVAILABLE,
            "Embedder",
        )
        assert time.monotonic() - started < 10  # fails fast, does not hang
        # Nothing half-written, and what needs no Embedder still works.
        assert (await stub.Stats(search_pb2.StatsRequest())).item_count == 2
        by_id = await stub.Search(search_pb2.SearchRequest(id="rocket", top_k=2))
        assert [hit.id for hit in by_id.hits] == ["rocket", "coffee"]
        await wait_for_health(channel, NOT_SERVING, within_s=10)

        await relay.restore()
        await wait_for_health(channel, SERVING, within_s=15)
        reply = await stub.Search(search_pb2.SearchRequest(image=query_image, top_k=1))
        assert reply.hits[0].id == "coffee"


async def test_a_caller_deadline_shorter_than_a_slow_embedder_writes_nothing(
    milvus_lite_uri: str,
    redis_url: str,
    embedder_address: str,
    search_service_factory: SearchServiceFactory,
    relay_factory: Callable[[str], Awaitable[TcpRelay]],
):
    relay = await relay_factory(embedder_address)
    server = await search_service_factory(
        milvus_uri=milvus_lite_uri, redis_url=redis_url, embedder_address=relay.address
    )
    async with grpc.aio.insecure_channel(search_address(server)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        relay.delay_s = 2.0
        started = time.monotonic()
        await expect_status(
            stub.Insert(
                search_pb2.InsertRequest(items=[search_pb2.Item(id="late", image=photo("moon"))]),
                timeout=1.0,
            ),
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
        assert time.monotonic() - started < 1.9
        relay.delay_s = 0.0
        await asyncio.sleep(3.0)  # long after the delayed Embed would have answered
        got = await stub.Get(search_pb2.GetRequest(ids=["late"]), timeout=10)
        assert list(got.missing_ids) == ["late"]
        assert (await stub.Stats(search_pb2.StatsRequest())).item_count == 0


async def test_milvus_outage_is_unavailable_naming_milvus_and_recovers(
    milvus_lite_uri: str,
    redis_url: str,
    embedder_address: str,
    search_service_factory: SearchServiceFactory,
    relay_factory: Callable[[str], Awaitable[TcpRelay]],
):
    relay = await relay_factory(milvus_lite_uri)
    server = await search_service_factory(
        milvus_uri=f"http://{relay.address}",
        redis_url=redis_url,
        embedder_address=embedder_address,
        milvus_timeout_s=3,
        cache_enabled=False,
    )
    async with grpc.aio.insecure_channel(search_address(server)) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        items = [search_pb2.Item(id=name, image=photo(name)) for name in ("coffee", "rocket")]
        assert (await stub.Insert(search_pb2.InsertRequest(items=items))).inserted == 2

        await relay.cut()
        started = time.monotonic()
        await expect_status(
            stub.Search(search_pb2.SearchRequest(id="coffee"), timeout=30),
            grpc.StatusCode.UNAVAILABLE,
            "Milvus",
        )
        await expect_status(
            stub.Insert(
                search_pb2.InsertRequest(items=[search_pb2.Item(id="moon", image=photo("moon"))]),
                timeout=30,
            ),
            grpc.StatusCode.UNAVAILABLE,
            "Milvus",
        )
        await expect_status(
            stub.Delete(search_pb2.DeleteRequest(ids=["coffee"]), timeout=30),
            grpc.StatusCode.UNAVAILABLE,
            "Milvus",
        )
        assert time.monotonic() - started < 20  # bounded by milvus_timeout_s per call
        await wait_for_health(channel, NOT_SERVING, within_s=10)

        await relay.restore()
        await wait_for_health(channel, SERVING, within_s=20)
        stats = await stub.Stats(search_pb2.StatsRequest())
        assert stats.item_count == 2  # the failed insert and delete changed nothing
        reply = await stub.Search(search_pb2.SearchRequest(id="coffee", top_k=2))
        assert [hit.id for hit in reply.hits] == ["coffee", "rocket"]


def settings_for(milvus_uri: str, redis_url: str, embedder: str, **overrides: object):
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": None,
        "milvus_uri": milvus_uri,
        "redis_url": redis_url,
        "embedder_address": embedder,
        "health_check_interval_s": 0.5,
        **overrides,
    }
    return SearchSettings(**values)  # type: ignore[arg-type]


async def test_start_up_waits_for_the_embedder_then_serves(
    milvus_lite_uri: str,
    redis_url: str,
    embedder_address: str,
    unique_collection: str,
    relay_factory: Callable[[str], Awaitable[TcpRelay]],
):
    relay = await relay_factory(embedder_address)
    await relay.cut()
    server = SearchServer(
        settings_for(milvus_lite_uri, redis_url, relay.address, collection=unique_collection)
    )
    await server.start()
    connecting = asyncio.create_task(server.connect())
    try:
        async with grpc.aio.insecure_channel(search_address(server)) as channel:
            assert await health_status(channel) == NOT_SERVING
            stub = search_pb2_grpc.SearchStub(channel)
            await expect_status(
                stub.Stats(search_pb2.StatsRequest()), grpc.StatusCode.UNAVAILABLE, "starting"
            )
            await asyncio.sleep(1.5)
            assert not connecting.done()
            await relay.restore()
            await asyncio.wait_for(connecting, timeout=30)
            assert await health_status(channel) == SERVING
            assert (await stub.Stats(search_pb2.StatsRequest())).collection == unique_collection
    finally:
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError, StartupError):
            await connecting
        await server.stop(drain_delay_s=0, grace_s=1)


async def test_a_collection_of_another_model_is_refused_at_start_up(
    milvus_lite_uri: str, redis_url: str, embedder_address: str, unique_collection: str
):
    client = MilvusClient(uri=milvus_lite_uri, dedicated=True, timeout=60)
    try:
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=512)
        client.create_collection(
            unique_collection, schema=schema, properties={"imgsearch.model": "resnet18-avg"}
        )
        foreign = f"{unique_collection}_foreign"
        client.create_collection(foreign, dimension=1280)  # not made by imgsearch
    finally:
        client.close()

    for collection, fragments in (
        (
            unique_collection,
            ("512-d", "resnet18-avg", f"{default_embedding_dimension()}-d", "efficientnet_lite0"),
        ),
        (foreign, ("not created by imgsearch",)),
    ):
        server = SearchServer(
            settings_for(milvus_lite_uri, redis_url, embedder_address, collection=collection)
        )
        await server.start()
        try:
            with pytest.raises(StartupError) as info:
                await asyncio.wait_for(server.connect(), timeout=30)
            for fragment in fragments:
                assert fragment in str(info.value)
        finally:
            await server.stop(drain_delay_s=0, grace_s=1)


def test_the_process_serves_then_drains_on_sigterm_and_exits_nonzero_when_it_cannot_start(
    milvus_lite_uri: str, redis_url: str, embedder_address: str, unique_collection: str
):
    env = {
        "SEARCH_HOST": "127.0.0.1",
        "SEARCH_PORT": "0",
        "SEARCH_METRICS_HOST": "127.0.0.1",
        "SEARCH_METRICS_PORT": "0",
        "SEARCH_MILVUS_URI": milvus_lite_uri,
        "SEARCH_REDIS_URL": redis_url,
        "SEARCH_EMBEDDER_ADDRESS": embedder_address,
        "SEARCH_COLLECTION": unique_collection,
        "SEARCH_LOG_LEVEL": "INFO",
    }
    child = ChildProcess("search", [PYTHON, "-m", "imgsearch_search"], env)
    try:
        match = child.wait_for_line(r"search listening on 127\.0\.0\.1:(\d+)", timeout=60)

        async def check() -> None:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{match.group(1)}") as channel:
                assert await health_status(channel) == SERVING
                stats = await search_pb2_grpc.SearchStub(channel).Stats(search_pb2.StatsRequest())
                assert stats.collection == unique_collection

        asyncio.run(check())
        started = time.monotonic()
        child.signal(signal.SIGTERM)
        assert child.proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 15
        assert any("search stopped" in line for line in child.lines), child.tail()
    finally:
        child.stop()

    dead_port = free_port()
    failing = ChildProcess(
        "search-no-embedder",
        [PYTHON, "-m", "imgsearch_search", "--startup-timeout-s", "3"],
        {**env, "SEARCH_EMBEDDER_ADDRESS": f"127.0.0.1:{dead_port}"},
    )
    try:
        assert failing.proc.wait(timeout=60) == 1
        assert any("cannot start" in line and "Embedder" in line for line in failing.lines), (
            failing.tail()
        )
    finally:
        failing.stop()
    assert os.environ.get("SEARCH_PORT") is None  # the child's settings did not leak here
