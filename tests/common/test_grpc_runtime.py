"""The shared server runtime over real gRPC on loopback.

The servicer here is a stand-in on purpose: these tests pin down the runtime
(error mapping, request ids, health, reflection), not a service's behaviour,
and a stand-in lets each test pick exactly which exception a handler raises.
"""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from imgsearch.common.errors import InvalidArgumentError, NotFoundError
from imgsearch.common.grpc_runtime import (
    HealthState,
    ObservabilityInterceptor,
    ServiceRegistration,
    create_grpc_server,
    drain_and_stop,
)
from imgsearch.common.metrics import RpcMetrics
from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc


class _ScriptedEmbedder(embedder_pb2_grpc.EmbedderServicer):
    """Raises whatever the first image's bytes name, to exercise error mapping."""

    async def Embed(self, request, context):
        kind = request.images[0].decode() if request.images else ""
        if kind == "invalid":
            raise InvalidArgumentError("images[0]: bad")
        if kind == "missing":
            raise NotFoundError("no such thing")
        if kind == "crash":
            raise RuntimeError("boom")
        return embedder_pb2.EmbedResponse(model="scripted")


@pytest.fixture
async def runtime_server():
    registry = CollectorRegistry()
    metrics = RpcMetrics(registry)
    name = embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name
    health_state = HealthState([name])
    await health_state.set_serving(False)
    server, port = create_grpc_server(
        "127.0.0.1:0",
        [
            ServiceRegistration(
                embedder_pb2_grpc.add_EmbedderServicer_to_server, _ScriptedEmbedder(), name
            )
        ],
        health_state,
        interceptors=[ObservabilityInterceptor(metrics)],
    )
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield channel, health_state, server, registry
    await channel.close()
    await server.stop(None)


async def test_errors_map_to_their_status_codes_never_unknown(runtime_server):
    channel, _, _, registry = runtime_server
    stub = embedder_pb2_grpc.EmbedderStub(channel)
    cases = {
        b"invalid": grpc.StatusCode.INVALID_ARGUMENT,
        b"missing": grpc.StatusCode.NOT_FOUND,
        b"crash": grpc.StatusCode.INTERNAL,
    }
    for payload, expected in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Embed(embedder_pb2.EmbedRequest(images=[payload]))
        assert info.value.code() == expected
    assert "boom" not in info.value.details()  # internals are logged, not leaked
    ok = await stub.Embed(embedder_pb2.EmbedRequest(images=[b"fine"]))
    assert ok.model == "scripted"
    method = "/imgsearch.v1.Embedder/Embed"
    for code in ("OK", "INVALID_ARGUMENT", "NOT_FOUND", "INTERNAL"):
        value = registry.get_sample_value(
            "grpc_server_handled_total", {"method": method, "code": code}
        )
        assert value == 1, code


async def test_request_id_is_echoed_or_generated(runtime_server):
    channel, *_ = runtime_server
    stub = embedder_pb2_grpc.EmbedderStub(channel)
    call = stub.Embed(
        embedder_pb2.EmbedRequest(images=[b"x"]), metadata=(("x-request-id", "abc123"),)
    )
    await call
    assert ("x-request-id", "abc123") in tuple(await call.trailing_metadata())
    call = stub.Embed(embedder_pb2.EmbedRequest(images=[b"x"]))
    await call
    generated = dict(await call.trailing_metadata())["x-request-id"]
    assert len(generated) == 32


async def test_health_follows_readiness_and_shutdown(runtime_server):
    channel, health_state, server, _ = runtime_server
    health = health_pb2_grpc.HealthStub(channel)
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    serving = health_pb2.HealthCheckResponse.SERVING
    assert (await health.Check(health_pb2.HealthCheckRequest())).status == not_serving
    await health_state.set_serving(True)
    for service in ("", "imgsearch.v1.Embedder"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == serving
    await drain_and_stop(server, health_state, drain_delay_s=0, grace_s=1)
    assert not health_state.serving
    await health_state.set_serving(True)  # ignored once shutting down
    assert (
        await health_state.servicer.Check(health_pb2.HealthCheckRequest(), None)
    ).status == not_serving


async def test_reflection_lists_the_services(runtime_server):
    channel, *_ = runtime_server
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for reply in stub.ServerReflectionInfo(iter([request])):
        names = {service.name for service in reply.list_services_response.service}
        break
    assert {"imgsearch.v1.Embedder", "grpc.health.v1.Health"} <= names
