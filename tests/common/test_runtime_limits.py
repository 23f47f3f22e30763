"""The shared runtime's load shedding, error classes and start-up lifecycle, over real gRPC.

The servicer is a stand-in on purpose (as in test_grpc_runtime.py): these tests
pin down the runtime, and a stand-in lets a test hold calls open exactly as long
as it needs.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from imgsearch.common import errors
from imgsearch.common.grpc_runtime import (
    HealthState,
    ObservabilityInterceptor,
    ServiceRegistration,
    create_grpc_server,
    serve_until_terminated,
)
from imgsearch.common.metrics import RpcMetrics
from imgsearch.common.resources import cgroup_cpu_quota
from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc


class _HeldEmbedder(embedder_pb2_grpc.EmbedderServicer):
    """Holds every Embed call until `release` is set; raises MemoryError for b"oom"."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0
        self.two_entered = asyncio.Event()

    async def Embed(self, request, context):
        if request.images and request.images[0] == b"oom":
            raise MemoryError
        self.entered += 1
        if self.entered >= 2:
            self.two_entered.set()
        await self.release.wait()
        return embedder_pb2.EmbedResponse(model="held")


@pytest.fixture
async def limited_server():
    servicer = _HeldEmbedder()
    name = embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name
    health_state = HealthState([name])
    server, port = create_grpc_server(
        "127.0.0.1:0",
        [ServiceRegistration(embedder_pb2_grpc.add_EmbedderServicer_to_server, servicer, name)],
        health_state,
        interceptors=[ObservabilityInterceptor(RpcMetrics(CollectorRegistry()))],
        max_concurrent_rpcs=2,
    )
    await server.start()
    await health_state.set_serving(True)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield servicer, channel
    finally:
        servicer.release.set()
        await channel.close()
        await server.stop(0)


async def test_calls_beyond_the_limit_are_shed_while_health_still_answers(limited_server) -> None:
    servicer, channel = limited_server
    stub = embedder_pb2_grpc.EmbedderStub(channel)
    held = [asyncio.ensure_future(stub.Embed(embedder_pb2.EmbedRequest())) for _ in range(2)]
    await asyncio.wait_for(servicer.two_entered.wait(), 10)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Embed(embedder_pb2.EmbedRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "server busy: 2 calls in progress (limit 2)" in (info.value.details() or "")
    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(5):  # probes are exempt from the limit
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    servicer.release.set()
    await asyncio.gather(*held)
    assert (await stub.Embed(embedder_pb2.EmbedRequest(), timeout=5)).model == "held"


async def test_memory_error_is_resource_exhausted_not_internal(limited_server) -> None:
    _, channel = limited_server
    stub = embedder_pb2_grpc.EmbedderStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Embed(embedder_pb2.EmbedRequest(images=[b"oom"]), timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "short of memory" in (info.value.details() or "")


def test_error_classes_say_whether_to_retry_and_whose_fault_it_is() -> None:
    cases = {
        errors.InvalidArgumentError: (grpc.StatusCode.INVALID_ARGUMENT, False, True),
        errors.NotFoundError: (grpc.StatusCode.NOT_FOUND, False, True),
        errors.RequestTooLargeError: (grpc.StatusCode.RESOURCE_EXHAUSTED, False, True),
        errors.ResourceExhaustedError: (grpc.StatusCode.RESOURCE_EXHAUSTED, True, False),
        errors.UnavailableError: (grpc.StatusCode.UNAVAILABLE, True, False),
        errors.DeadlineExceededError: (grpc.StatusCode.DEADLINE_EXCEEDED, False, False),
    }
    for error_class, (code, retriable, input_error) in cases.items():
        error = error_class("x")
        assert (error.code, error.retriable, error.input_error) == (code, retriable, input_error)
    assert errors.status_for(MemoryError())[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert errors.status_for(KeyError("k"))[0] == grpc.StatusCode.INTERNAL


class _KnownStartupError(RuntimeError):
    pass


async def _run_lifecycle(start_up, stop_log: list[str]) -> int:
    async def stop() -> None:
        stop_log.append("stopped")

    return await serve_until_terminated(
        "unit", "127.0.0.1:0", start_up, stop, startup_errors=(_KnownStartupError,)
    )


@pytest.mark.parametrize(
    "error", [_KnownStartupError("weights missing"), RuntimeError("a bug"), KeyError("x")]
)
async def test_any_start_up_error_exits_1_and_still_stops(error: Exception, caplog) -> None:
    async def start_up() -> None:
        raise error

    stop_log: list[str] = []
    assert await _run_lifecycle(start_up(), stop_log) == 1
    assert stop_log == ["stopped"]
    assert "cannot start" in caplog.text


async def test_sigterm_after_start_up_exits_0_and_stops(capsys) -> None:
    async def start_up() -> None:
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)

    stop_log: list[str] = []
    assert await _run_lifecycle(start_up(), stop_log) == 0
    assert stop_log == ["stopped"]
    assert "unit listening on 127.0.0.1:0" in capsys.readouterr().out


# cgroup files as a container sees them (a unit test over a temporary directory:
# the test machine's own cgroups are whatever its host gave it).
@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "150000 100000"}, 1.5),
        ({"cpu.max": "max 100000"}, None),
        ({"cpu/cpu.cfs_quota_us": "200000", "cpu/cpu.cfs_period_us": "100000"}, 2.0),
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
        ({"kubepods/pod1/cpu.max": "50000 100000"}, 0.5),
        ({}, None),
    ],
    ids=["v2", "v2-unlimited", "v1", "v1-unlimited", "v2-nested", "none"],
)
def test_cgroup_cpu_quota_is_read_from_v2_or_v1(tmp_path: Path, files, quota) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    proc = tmp_path / "proc-cgroup"
    own = "/kubepods/pod1" if any(name.startswith("kubepods") for name in files) else "/"
    proc.write_text(f"0::{own}\n4:cpu,cpuacct:/\n")
    assert cgroup_cpu_quota(root=tmp_path, proc_cgroup=proc) == quota


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xff\xff", b"\x0a\x05ab", b"\x0a\x80\x80\x80\x80\x10"],
    ids=["tag", "short", "len"],
)
async def test_a_malformed_request_message_is_invalid_argument(limited_server, raw: bytes) -> None:
    _, channel = limited_server
    call = channel.unary_unary("/imgsearch.v1.Embedder/Embed")  # raw bytes, no serializer
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(raw, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid message" in (info.value.details() or "")
