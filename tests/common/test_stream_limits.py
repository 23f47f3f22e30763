"""Long server streams (Search.FindDuplicates) count against a limit of their own, over real gRPC.

The servicer is a stand-in on purpose (as in test_runtime_limits.py): the
runtime's limit is what is under test, and a stand-in holds a stream open
exactly as long as the test needs (a real scan of a test-sized collection ends
in milliseconds). The server is built by the same factory and with the same
settings names as Search's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from imgsearch.common.grpc_runtime import (
    HealthState,
    ObservabilityInterceptor,
    ServiceRegistration,
    create_grpc_server,
)
from imgsearch.common.metrics import RpcMetrics
from imgsearch.v1 import search_pb2, search_pb2_grpc

LIMIT_SETTINGS = ("SEARCH_MAX_CONCURRENT_RPCS", "SEARCH_MAX_CONCURRENT_STREAMS")


class HeldScans(search_pb2_grpc.SearchServicer):
    """FindDuplicates sends one progress message, then holds until `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.open_streams = 0
        self.finished = 0

    async def FindDuplicates(self, request, context):
        self.open_streams += 1
        try:
            yield search_pb2.FindDuplicatesResponse(
                progress=search_pb2.DuplicatesProgress(items_done=0, items_total=10)
            )
            await self.release.wait()
            yield search_pb2.FindDuplicatesResponse(summary=search_pb2.DuplicatesSummary())
            self.finished += 1
        finally:
            self.open_streams -= 1

    async def Stats(self, request, context):
        return search_pb2.StatsResponse(item_count=3, dimension=4, model="held")


@asynccontextmanager
async def held_search(
    stream_limit: int, rpc_limit: int = 8
) -> AsyncIterator[tuple[HeldScans, int, grpc.aio.Channel]]:
    """A server with the stand-in Search and the runtime's limits: (servicer, port, channel)."""
    servicer = HeldScans()
    name = search_pb2.DESCRIPTOR.services_by_name["Search"].full_name
    health_state = HealthState([name])
    server, port = create_grpc_server(
        "127.0.0.1:0",
        [ServiceRegistration(search_pb2_grpc.add_SearchServicer_to_server, servicer, name)],
        health_state,
        interceptors=[ObservabilityInterceptor(RpcMetrics(CollectorRegistry()))],
        max_concurrent_rpcs=rpc_limit,
        max_concurrent_streams=stream_limit,
        limit_settings=LIMIT_SETTINGS,
    )
    await server.start()
    await health_state.set_serving(True)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield servicer, port, channel
    finally:
        servicer.release.set()
        await channel.close()
        await server.stop(0)


async def _open_scan(stub: search_pb2_grpc.SearchStub) -> grpc.aio.UnaryStreamCall:
    """A FindDuplicates call that has started (its first message has arrived)."""
    call = stub.FindDuplicates(search_pb2.FindDuplicatesRequest(threshold=0.9), timeout=30)
    first = await call.read()
    assert first.HasField("progress")
    return call


async def _rest(call: grpc.aio.UnaryStreamCall) -> list[str]:
    """The kinds of the messages left in a started call, to its end."""
    kinds = []
    while (message := await call.read()) != grpc.aio.EOF:
        kinds.append(message.WhichOneof("event"))
    return kinds


async def _refused(stub: search_pb2_grpc.SearchStub) -> grpc.aio.AioRpcError:
    call = stub.FindDuplicates(search_pb2.FindDuplicatesRequest(threshold=0.9), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    return info.value


async def test_streams_beyond_their_limit_are_shed_naming_the_limit() -> None:
    async with held_search(stream_limit=2) as (servicer, _, channel):
        stub = search_pb2_grpc.SearchStub(channel)
        held = [await _open_scan(stub) for _ in range(2)]
        refused = await _refused(stub)
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.details() == (
            "server busy: 2 long-running streams in progress"
            " (limit 2, SEARCH_MAX_CONCURRENT_STREAMS); retry later"
        )
        assert servicer.open_streams == 2, "the refused call never reached the servicer"
        # Streams have their own count: short calls and probes still pass.
        assert (await stub.Stats(search_pb2.StatsRequest(), timeout=5)).model == "held"
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # A stream that ends gives its place back.
        servicer.release.set()
        for call in held:
            assert await _rest(call) == ["summary"]
        servicer.release.clear()
        again = [await _open_scan(stub) for _ in range(2)]
        assert (await _refused(stub)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # So does one its caller cancels (a closed browser tab, a Ctrl-C).
        again[0].cancel()
        deadline = asyncio.get_running_loop().time() + 10
        while servicer.open_streams > 1:
            assert asyncio.get_running_loop().time() < deadline, "the slot was not freed"
            await asyncio.sleep(0.02)
        replacement = await _open_scan(stub)
        replacement.cancel()
        again[1].cancel()


async def test_a_stream_does_not_take_the_place_of_a_short_call() -> None:
    async with held_search(stream_limit=1, rpc_limit=1) as (_, _, channel):
        stub = search_pb2_grpc.SearchStub(channel)
        held = await _open_scan(stub)  # a stream does not use the unary place
        assert (await stub.Stats(search_pb2.StatsRequest(), timeout=5)).model == "held"
        held.cancel()


async def test_callers_that_go_away_mid_stream_leave_the_server_running() -> None:
    """Closing the channel as the scan ends (the call finalised after the caller left) once
    crashed the process: the stream's access log read the dead call's peer."""
    async with held_search(stream_limit=2) as (servicer, port, _):
        for _ in range(3):
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            await _open_scan(search_pb2_grpc.SearchStub(channel))
            servicer.release.set()
            await channel.close()
            servicer.release.clear()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = search_pb2_grpc.SearchStub(channel)
            assert (await stub.Stats(search_pb2.StatsRequest(), timeout=5)).model == "held"
            deadline = asyncio.get_running_loop().time() + 10
            while servicer.open_streams:
                assert asyncio.get_running_loop().time() < deadline, "places were not given back"
                await asyncio.sleep(0.02)
            held = [await _open_scan(stub) for _ in range(2)]
            for call in held:
                call.cancel()
