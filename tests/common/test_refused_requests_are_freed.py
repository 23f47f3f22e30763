"""A request refused with an error status is freed at once, not when the cyclic GC runs.

grpc.aio keeps the exception of an aborted call in reference cycles; while the
error's traceback held the handler's frames, each refused request (and all the
handler held) stayed in memory until a cyclic collection, which large
messages rarely trigger: a flood of refused 5 MiB Inserts grew Search by ~5 MiB
per request, unbounded (tests/search/test_search_memory.py holds the bound
end to end). The stand-in servicer is on purpose: the test pins down the
runtime's interceptor, and a local object of the handler is what it watches.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref

import grpc
import pytest
from prometheus_client import CollectorRegistry

from imgsearch.common import errors
from imgsearch.common.grpc_runtime import (
    HealthState,
    ObservabilityInterceptor,
    ServiceRegistration,
    create_grpc_server,
)
from imgsearch.common.metrics import RpcMetrics
from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc


class _Held:
    """Stands for what a handler holds (its request, the images it read)."""


class _RefusingEmbedder(embedder_pb2_grpc.EmbedderServicer):
    def __init__(self) -> None:
        self.held: list[weakref.ref[_Held]] = []

    async def Embed(self, request, context):
        held = _Held()
        self.held.append(weakref.ref(held))
        if request.images[0] == b"bug":
            raise KeyError("a bug: INTERNAL")
        raise errors.ResourceExhaustedError("busy")


@pytest.mark.parametrize("image", [b"busy", b"bug"])
async def test_a_refused_request_leaves_nothing_behind(
    image: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pytest's log capture keeps every record, with the traceback of a logged
    # INTERNAL error: in a service the record is dropped once written.
    monkeypatch.setattr(logging.getLogger("imgsearch.common.grpc_runtime"), "disabled", True)
    servicer = _RefusingEmbedder()
    name = embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name
    server, port = create_grpc_server(
        "127.0.0.1:0",
        [ServiceRegistration(embedder_pb2_grpc.add_EmbedderServicer_to_server, servicer, name)],
        HealthState([name]),
        interceptors=[ObservabilityInterceptor(RpcMetrics(CollectorRegistry()))],
        max_concurrent_rpcs=4,
    )
    await server.start()
    gc.disable()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = embedder_pb2_grpc.EmbedderStub(channel)
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.Embed(embedder_pb2.EmbedRequest(images=[image]), timeout=10)
        await asyncio.sleep(0.1)
        assert len(servicer.held) == 3
        assert [ref() for ref in servicer.held] == [None, None, None]
    finally:
        gc.enable()
        await server.stop(0)
