"""The client's retries and deadlines: which codes are retried, large requests included.

Two layers:
- a stand-in Search server in this process (a generic gRPC handler) that fails
  the first attempts of a call with a chosen status and records each attempt
  and its deadline. Only a stand-in can produce every status on demand and
  count attempts, so this unit-tests the client's channel configuration;
- the real stack (`imgsearch up`) behind a TCP relay that resets the
  connection in the middle of a request larger than gRPC's default 256 KiB
  retry buffer: a real outage, survived by a real retry.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

import imgsearch.client as client_module
from imgsearch.client import Client, ItemInput, retryable_codes
from imgsearch.common import errors
from imgsearch.common.grpc_runtime import ObservabilityInterceptor
from imgsearch.common.metrics import RpcMetrics
from imgsearch.v1 import search_pb2
from tests.cli.conftest import run_cli
from tests.fixtures.relay import TcpRelay

MIB = 1024 * 1024


@dataclass
class StandIn:
    """What the stand-in server saw, and how it fails: `fail_first` attempts get `code`."""

    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    fail_first: int = 0
    attempts: list[str] = field(default_factory=list)  # method names
    deadlines: dict[str, float] = field(default_factory=dict)  # seconds left at arrival
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self, name: str, reply: Callable[[object], object]) -> Callable[..., object]:
        def handle(request: object, context: grpc.ServicerContext) -> object:
            with self.lock:
                self.attempts.append(name)
                self.deadlines[name] = context.time_remaining()
                failing = len(self.attempts) <= self.fail_first
            if failing:
                context.abort(self.code, f"stand-in {self.code.name}")
            return reply(request)

        return handle


def _insert_reply(request: search_pb2.InsertRequest) -> search_pb2.InsertResponse:
    results = [search_pb2.ItemResult(id=item.id or "x", code=0) for item in request.items]
    return search_pb2.InsertResponse(results=results, inserted=len(results))


def _get_reply(request: search_pb2.GetRequest) -> search_pb2.GetResponse:
    return search_pb2.GetResponse(missing_ids=list(request.ids))


@pytest.fixture
def stand_in() -> Iterator[tuple[StandIn, str]]:
    state = StandIn()
    messages = {
        "Search": (search_pb2.SearchRequest, search_pb2.SearchResponse, lambda r: None),
        "Insert": (search_pb2.InsertRequest, search_pb2.InsertResponse, _insert_reply),
        "Get": (search_pb2.GetRequest, search_pb2.GetResponse, _get_reply),
    }
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            state.handler(name, lambda r, reply=reply, out=out: reply(r) or out()),
            request_deserializer=request.FromString,
            response_serializer=out.SerializeToString,
        )
        for name, (request, out, reply) in messages.items()
    }
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_receive_message_length", 64 * MIB)],
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("imgsearch.v1.Search", handlers)]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield state, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def test_retried_codes_are_the_taxonomys_retriable_ones() -> None:
    assert retryable_codes() == ["RESOURCE_EXHAUSTED", "UNAVAILABLE"]
    for cls in (errors.UnavailableError, errors.ResourceExhaustedError):
        assert cls.retriable
    assert not errors.RequestTooLargeError.retriable


@pytest.mark.parametrize(
    ("raised", "attempts"),
    [
        (errors.ResourceExhaustedError("queue full"), 3),
        (errors.UnavailableError("dependency down"), 3),
        (errors.RequestTooLargeError("over the size limit"), 1),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
async def test_the_retriable_flag_decides_through_our_interceptor(
    raised: errors.ImgsearchError, attempts: int
) -> None:
    """A real grpc.aio server with our interceptor: an error that is not retriable
    (RequestTooLargeError shares RESOURCE_EXHAUSTED with a full queue) is sent with
    a negative retry pushback, so the client's retry policy does not send it again."""
    seen: list[str] = []

    async def fail(request: search_pb2.GetRequest, context: grpc.aio.ServicerContext) -> None:
        seen.append("Get")
        raise raised

    handler = grpc.unary_unary_rpc_method_handler(
        fail,
        request_deserializer=search_pb2.GetRequest.FromString,
        response_serializer=search_pb2.GetResponse.SerializeToString,
    )
    interceptor = ObservabilityInterceptor(RpcMetrics(CollectorRegistry()))
    server = grpc.aio.server(interceptors=[interceptor])
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("imgsearch.v1.Search", {"Get": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        with (
            Client(f"127.0.0.1:{port}", timeout=10) as client,
            pytest.raises(errors.ImgsearchError, match=raised.message),
        ):
            await asyncio.to_thread(client.get, ["x"])
    finally:
        await server.stop(grace=None)
    assert seen == ["Get"] * attempts


@pytest.mark.parametrize(
    ("code", "attempts", "error"),
    [
        (grpc.StatusCode.UNAVAILABLE, 3, errors.UnavailableError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 3, errors.ResourceExhaustedError),
        (grpc.StatusCode.INVALID_ARGUMENT, 1, errors.InvalidArgumentError),
        (grpc.StatusCode.NOT_FOUND, 1, errors.NotFoundError),
        (grpc.StatusCode.FAILED_PRECONDITION, 1, errors.FailedPreconditionError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 1, errors.DeadlineExceededError),
        (grpc.StatusCode.INTERNAL, 1, client_module.ClientError),
        (grpc.StatusCode.UNKNOWN, 1, client_module.ClientError),
        (grpc.StatusCode.ABORTED, 1, client_module.ClientError),
    ],
    ids=lambda value: getattr(value, "name", None) or str(value),
)
def test_only_retriable_codes_are_retried(
    stand_in: tuple[StandIn, str], code: grpc.StatusCode, attempts: int, error: type
) -> None:
    state, address = stand_in
    state.code, state.fail_first = code, 99
    with Client(address, timeout=10) as client, pytest.raises(error):
        client.search(vector=[1.0, 0.0])
    assert len(state.attempts) == attempts


def _noise_png(side: int, seed: int = 0) -> bytes:
    """A PNG of random pixels: incompressible, so `side` sets its size (side=400: ~480 KB)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _without_retry_buffer(max_message_bytes: int) -> list[tuple[str, object]]:
    options = _channel_options(max_message_bytes)
    return [option for option in options if option[0] != "grpc.per_rpc_retry_buffer_size"]


_channel_options = client_module.channel_options


@pytest.mark.parametrize("size_mib", [0.5, 16])
def test_requests_larger_than_256_kib_are_retried(
    stand_in: tuple[StandIn, str], size_mib: float
) -> None:
    state, address = stand_in
    state.fail_first = 2
    image = b"\xff" * int(size_mib * MIB)
    with Client(address, timeout=20) as client:
        client.search(image)
        assert state.attempts == ["Search"] * 3
        state.attempts.clear()
        state.fail_first = 1
        outcomes = client.insert([ItemInput(image=image, id="big")])
        assert [outcome.ok for outcome in outcomes] == [True]
        assert state.attempts == ["Insert"] * 2


def test_without_the_retry_buffer_large_requests_are_not_retried(
    stand_in: tuple[StandIn, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: gRPC's default 256 KiB buffer commits a 1 MiB call at once."""
    state, address = stand_in
    state.fail_first = 1
    monkeypatch.setattr(client_module, "channel_options", _without_retry_buffer)
    with Client(address, timeout=10) as client, pytest.raises(errors.UnavailableError):
        client.search(b"\xff" * MIB)
    assert state.attempts == ["Search"]


def test_requests_over_the_message_limit_are_refused_before_sending(
    stand_in: tuple[StandIn, str],
) -> None:
    state, address = stand_in
    with Client(address, max_message_bytes=MIB) as client:
        with pytest.raises(errors.InvalidArgumentError, match="over the limit"):
            client.search(b"\xff" * (MIB + 1))
        with pytest.raises(errors.InvalidArgumentError, match="over the limit"):
            client.insert([ItemInput(image=b"\xff" * (MIB + 1))])
    assert state.attempts == []


def test_cli_deadlines_reach_the_server(stand_in: tuple[StandIn, str], tmp_path: Path) -> None:
    """`--timeout` is every call's deadline; `--insert-timeout` that of each Insert request."""
    state, address = stand_in
    Image.new("RGB", (8, 8), "red").save(tmp_path / "red.png")
    result = run_cli(
        ["--timeout", "7", "ingest", str(tmp_path), "--insert-timeout", "77", "--json"], address
    )
    assert result.code == 0, result.stderr
    assert result.json()["inserted"] == 1
    assert state.attempts == ["Get", "Insert"]
    assert 5 < state.deadlines["Get"] <= 7.5  # gRPC rounds a deadline up on the wire
    assert 70 < state.deadlines["Insert"] <= 77.5


# --- a real outage in front of the real stack


@pytest.mark.slow
def test_large_insert_and_search_survive_a_connection_reset(
    stack_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = _noise_png(400, seed=9)
    assert len(image) > 400_000  # well over gRPC's default 256 KiB retry buffer
    cut = 300_000  # bytes sent upstream before the reset: past 256 KiB, before the end
    with TcpRelay(stack_address, cut_after_bytes=cut) as relay:
        with Client(relay.address, timeout=60) as client:
            outcomes = client.insert([ItemInput(image=image, id="retry-over-256k")])
        assert [outcome.ok for outcome in outcomes] == [True], outcomes
        assert (relay.cuts, relay.connections) == (1, 2)
    with TcpRelay(stack_address, cut_after_bytes=cut) as relay:
        with Client(relay.address, timeout=60) as client:
            hits = client.search(image, k=1).hits
        assert [hit.id for hit in hits] == ["retry-over-256k"]
        assert (relay.cuts, relay.connections) == (1, 2)

    # The control: with gRPC's default buffer the same outage reaches the caller.
    monkeypatch.setattr(client_module, "channel_options", _without_retry_buffer)
    with TcpRelay(stack_address, cut_after_bytes=cut) as relay:
        with Client(relay.address, timeout=60) as client, pytest.raises(errors.UnavailableError):
            client.insert([ItemInput(image=image, id="retry-over-256k")])
        assert relay.cuts == 1
    with Client(stack_address) as client:
        assert client.delete(["retry-over-256k"]) == 1
