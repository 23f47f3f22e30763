"""gRPC server wiring shared by the services.

- `ObservabilityInterceptor`: request ids, access logs, RPC metrics, and the one
  place where exceptions become gRPC statuses (see `imgsearch.common.errors`).
- `create_grpc_server`: builds a `grpc.aio` server with health and reflection on
  an address (port 0 picks a free port, which is what tests use).
- `HealthState`: the stock health servicer, driven by readiness and shutdown.
- `wait_for_termination_signal`: SIGTERM/SIGINT handling for `serve()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import logging
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from imgsearch.common.errors import (
    ImgsearchError,
    InvalidArgumentError,
    ResourceExhaustedError,
    retry_metadata,
    status_for,
)
from imgsearch.common.logs import request_id_var
from imgsearch.common.metrics import RpcMetrics
from imgsearch.common.settings import ConfigurationError

REQUEST_ID_HEADER = "x-request-id"
# Calls gRPC itself admits beyond the service limit: room for probes (kubelet,
# Search's monitor) and reflection. Each may hold a request message, so keep it small.
PROBE_HEADROOM_RPCS = 4
_access_log = logging.getLogger("imgsearch.access")
_log = logging.getLogger(__name__)


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary RPC: request id, error mapping, access log, metrics.

    The request id comes from the `x-request-id` metadata when the caller sent
    one (so it can be followed across services), else a fresh one; it is put in
    a context variable for the logs and echoed in the trailing metadata.
    Server-streaming RPCs written as async generators (Search.FindDuplicates)
    get the same treatment; other streaming RPCs (health Watch, reflection)
    pass through untouched.
    """

    def __init__(self, metrics: RpcMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is not None and inspect.isasyncgenfunction(handler.unary_stream):
            return self._observe_stream(handler, handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        incoming = dict(handler_call_details.invocation_metadata or ())
        behaviour = handler.unary_unary
        deserialize = handler.request_deserializer
        metrics = self._metrics

        async def observed(raw: Any, context: grpc.aio.ServicerContext) -> Any:
            request_id = str(incoming.get(REQUEST_ID_HEADER) or uuid.uuid4().hex)
            token = request_id_var.set(request_id)
            context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                request = _parse_request(deserialize, raw)
                raw = None  # only the parsed message is needed (see _forget_frames)
                return await behaviour(request, context)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                # The handler aborted with its own status; keep it.
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception as exc:  # noqa: BLE001 -- the one place exceptions become statuses
                code, message = status_for(exc)
                if not isinstance(exc, ImgsearchError):  # INTERNAL, or MemoryError
                    _log.exception("unhandled error in %s", method)
                trailers = ((REQUEST_ID_HEADER, request_id), *retry_metadata(exc))
                raw = request = None  # see _forget_frames
                _forget_frames(exc)
                await context.abort(code, message, trailing_metadata=trailers)
            finally:
                elapsed = time.perf_counter() - started
                metrics.requests.labels(method, code.name).inc()
                metrics.latency.labels(method).observe(elapsed)
                _access_log.info(
                    "rpc",
                    extra={
                        "method": method,
                        "code": code.name,
                        "duration_ms": round(elapsed * 1000, 3),
                        "peer": context.peer(),
                    },
                )
                request_id_var.reset(token)

        # The request is parsed in `observed`, so a malformed message is
        # INVALID_ARGUMENT rather than gRPC's own UNKNOWN.
        return grpc.unary_unary_rpc_method_handler(
            observed, request_deserializer=None, response_serializer=handler.response_serializer
        )

    def _observe_stream(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        """The same for a server-streaming handler written as an async generator."""
        method = details.method
        incoming = dict(details.invocation_metadata or ())
        behaviour = handler.unary_stream
        metrics = self._metrics

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            request_id = str(incoming.get(REQUEST_ID_HEADER) or uuid.uuid4().hex)
            token = request_id_var.set(request_id)
            context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
            # Read now: the generator may be finalised after the call is gone, and
            # touching the context then crashes the process (grpcio's Cython layer).
            peer = context.peer()
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                async for message in behaviour(request, context):
                    yield message
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception as exc:  # noqa: BLE001 -- the one place exceptions become statuses
                code, message = status_for(exc)
                if not isinstance(exc, ImgsearchError):
                    _log.exception("unhandled error in %s", method)
                trailers = ((REQUEST_ID_HEADER, request_id), *retry_metadata(exc))
                await context.abort(code, message, trailing_metadata=trailers)
            finally:
                elapsed = time.perf_counter() - started
                metrics.requests.labels(method, code.name).inc()
                metrics.latency.labels(method).observe(elapsed)
                _access_log.info(
                    "rpc",
                    extra={"method": method, "code": code.name,
                           "duration_ms": round(elapsed * 1000, 3), "peer": peer},
                )  # fmt: skip
                with contextlib.suppress(ValueError):  # finalised in another context
                    request_id_var.reset(token)

        return grpc.unary_stream_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _forget_frames(error: BaseException) -> None:
    """Drop the frames (and so the request messages) an error that became a status refers to.

    The abort that follows raises from inside the handler's `except`, and
    grpc.aio keeps the resulting exceptions in reference cycles that only the
    cyclic garbage collector frees; large requests allocate few objects, so it
    rarely runs, and every refused request (RESOURCE_EXHAUSTED under a flood of
    64 MiB Inserts) stayed in memory with its frames: measured, ~5 MiB kept per
    refused 5 MiB request, unbounded. Without frames the error holds no request.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__


def _parse_request(deserialize: Callable[[bytes], Any] | None, raw: Any) -> Any:
    """The request message from its wire bytes; InvalidArgumentError if they do not parse."""
    if deserialize is None:
        return raw
    try:
        return deserialize(raw)
    except Exception as exc:  # noqa: BLE001 -- protobuf raises DecodeError and others
        raise InvalidArgumentError(f"the request is not a valid message: {exc}") from None


class ConcurrencyLimitInterceptor(grpc.aio.ServerInterceptor):
    """Sheds calls beyond their limit in progress at once with RESOURCE_EXHAUSTED.

    Two counts, two limits: unary calls (`limit`), and server-streaming calls
    written as async generators (`stream_limit`: Search.FindDuplicates, a scan
    of minutes that holds a matrix of vectors). Every unary call in progress
    holds its request message (up to the receive limit) and whatever its
    handler allocates, so their number bounds memory; a long stream holds far
    more for far longer, so it gets its own, smaller limit rather than taking
    places meant for short calls (with `stream_limit` None, streams are not
    limited here). A stream holds its place from its first message until it
    ends, fails or is cancelled. Health checks and reflection are exempt: an
    overloaded server still answers its probes, and sheds load rather than
    being restarted for it. The refusal is a `ResourceExhaustedError`
    (retriable) that names the limit and, when given, the setting that sets
    it; `ObservabilityInterceptor`, which must come before this one, maps it.
    """

    EXEMPT_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

    def __init__(
        self,
        limit: int,
        stream_limit: int | None = None,
        *,
        limit_setting: str = "",
        stream_limit_setting: str = "",
    ) -> None:
        self.limit = limit
        self.stream_limit = stream_limit
        self.in_progress = 0
        self.streams_in_progress = 0
        self._limit_name = f", {limit_setting}" if limit_setting else ""
        self._stream_limit_name = f", {stream_limit_setting}" if stream_limit_setting else ""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self.EXEMPT_PREFIXES):
            return handler
        if self.stream_limit is not None and inspect.isasyncgenfunction(handler.unary_stream):
            return self._limit_stream(handler)
        if handler.unary_unary is None:
            return handler
        behaviour = handler.unary_unary

        async def limited(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if self.in_progress >= self.limit:
                raise ResourceExhaustedError(
                    f"server busy: {self.in_progress} calls in progress (limit {self.limit}"
                    f"{self._limit_name}); retry with backoff"
                )
            self.in_progress += 1
            try:
                return await behaviour(request, context)
            finally:
                self.in_progress -= 1

        return grpc.unary_unary_rpc_method_handler(
            limited,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _limit_stream(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The same for a server-streaming handler, against `stream_limit`."""
        behaviour = handler.unary_stream

        async def limited(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if self.streams_in_progress >= (self.stream_limit or 0):
                raise ResourceExhaustedError(
                    f"server busy: {self.streams_in_progress} long-running streams in progress"
                    f" (limit {self.stream_limit}{self._stream_limit_name}); retry later"
                )
            self.streams_in_progress += 1
            try:
                async for message in behaviour(request, context):
                    yield message
            finally:
                self.streams_in_progress -= 1

        return grpc.unary_stream_rpc_method_handler(
            limited,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@dataclass(frozen=True)
class ServiceRegistration:
    """One gRPC service to expose: its generated `add_*_to_server` and servicer."""

    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    full_name: str  # e.g. imgsearch.v1.Embedder, taken from the descriptor


class HealthState:
    """The stock `grpc.health.v1` servicer, driven by readiness and shutdown.

    Every registered service and the overall server ("") report the same
    status: NOT_SERVING until `set_serving(True)`, NOT_SERVING for good once
    `enter_shutdown()` has been called.
    """

    def __init__(self, service_names: Sequence[str]) -> None:
        self.servicer = health.aio.HealthServicer()
        self._names = ["", *service_names]
        self._serving = False

    @property
    def serving(self) -> bool:
        return self._serving

    async def set_serving(self, serving: bool) -> None:
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self._names:
            await self.servicer.set(name, status)

    async def enter_shutdown(self) -> None:
        self._serving = False
        await self.servicer.enter_graceful_shutdown()


def create_grpc_server(
    address: str,
    registrations: Sequence[ServiceRegistration],
    health_state: HealthState,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    max_receive_message_bytes: int = 4 * 1024 * 1024,
    credentials: grpc.ServerCredentials | None = None,
    max_concurrent_rpcs: int | None = None,
    max_concurrent_streams: int | None = None,
    limit_settings: tuple[str, str] = ("", ""),
) -> tuple[grpc.aio.Server, int]:
    """Build (not start) a grpc.aio server with our services, health and reflection.

    Returns the server and the bound port, so `address="127.0.0.1:0"` works.
    `credentials` (see `imgsearch.common.server_security`) serve TLS; None
    serves plaintext. `max_concurrent_rpcs` caps the service calls in progress
    (see `ConcurrencyLimitInterceptor`; probes exempt), with gRPC's own limit a
    little above it as the backstop for every call, probes included;
    `max_concurrent_streams` does the same for long server streams (None: they
    count against no limit of ours). `limit_settings` names the two settings
    (e.g. `SEARCH_MAX_CONCURRENT_RPCS`) in the refusal messages.
    """
    options = [
        ("grpc.max_receive_message_length", max_receive_message_bytes),
        ("grpc.max_send_message_length", max_receive_message_bytes),
        # Keep idle client connections alive through proxies and load balancers.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        # Clients resolve DNS again only when a connection closes: recycling
        # connections every few minutes lets a long-lived channel (Search ->
        # Embedder through a headless Service) discover pods added by a scale-up.
        ("grpc.max_connection_age_ms", 300_000),
        ("grpc.max_connection_age_grace_ms", 30_000),
        *EXCLUSIVE_PORT_OPTIONS,
    ]
    chain = list(interceptors)
    transport_limit = None
    if max_concurrent_rpcs is not None:
        chain.append(
            ConcurrencyLimitInterceptor(
                max_concurrent_rpcs,
                max_concurrent_streams,
                limit_setting=limit_settings[0],
                stream_limit_setting=limit_settings[1],
            )
        )
        transport_limit = max_concurrent_rpcs + (max_concurrent_streams or 0) + PROBE_HEADROOM_RPCS
        # Without bandwidth-delay probing, a stream's receive window stays small
        # until its message is read: calls refused for the limit above buffer
        # 64 KiB each, not megabytes (measured: a flood of 40 x 7 MiB requests
        # at a limit of 8 added ~160 MB instead of ~300 MB).
        options.append(("grpc.http2.bdp_probe", 0))
    server = grpc.aio.server(
        interceptors=chain, options=options, maximum_concurrent_rpcs=transport_limit
    )
    for registration in registrations:
        registration.add_to_server(registration.servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_state.servicer, server)
    service_names = [
        *(registration.full_name for registration in registrations),
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    reflection.enable_server_reflection(service_names, server)
    port = bind_port(server, address, credentials, "gRPC")
    return server, port


# gRPC turns SO_REUSEPORT on by default: a second server on a port already in
# use would then start and share the port, splitting clients between the two.
EXCLUSIVE_PORT_OPTIONS = (("grpc.so_reuseport", 0),)


def bind_port(
    server: grpc.aio.Server,
    address: str,
    credentials: grpc.ServerCredentials | None = None,
    what: str = "gRPC",
) -> int:
    """Add `address` to `server` (built with `EXCLUSIVE_PORT_OPTIONS`); returns the port.

    Raises ConfigurationError, one line naming the address and the reason
    (e.g. "Address already in use"), when the port cannot be bound.
    """
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpcio: "Failed to bind to address ..."
        port = 0
    if port == 0:
        raise ConfigurationError(
            f"cannot listen on {address} ({what}):"
            f" {bind_error(address) or 'the address could not be bound'}"
        )
    return port


def bind_error(address: str) -> str | None:
    """Why `address` (host:port) cannot be bound now, as the OS says it; None if it can.

    Used to explain gRPC's bare "Failed to bind", and by `imgsearch up` to refuse
    a taken port before starting anything.
    """
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        infos = socket.getaddrinfo(host, int(port_text), type=socket.SOCK_STREAM)
        family, kind, proto, _, sockaddr = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(sockaddr)
    except (OSError, ValueError, IndexError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        if getattr(error, "errno", None) == errno.EADDRINUSE:
            return f"{reason} (another process listens on port {port_text})"
        return reason
    return None


async def wait_for_termination_signal() -> signal.Signals:
    """Wait until SIGTERM or SIGINT arrives; return which one."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(
            sig, lambda s=sig: received.done() or received.set_result(signal.Signals(s))
        )
    try:
        return await received
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def serve_until_terminated(
    name: str,
    address: str,
    start_up: Awaitable[None],
    stop: Callable[[], Awaitable[None]],
    startup_errors: tuple[type[Exception], ...] = (),
) -> int:
    """Run a server's start-up, announce it, serve until SIGTERM or SIGINT, then stop.

    The signal handlers go in first, so a SIGTERM during a long start-up (loading a
    model, waiting for dependencies) still ends in a clean shutdown. Once `start_up`
    completes, one line `NAME listening on ADDRESS` goes to stdout for scripts and
    supervisors (`imgsearch up`, tests). An error of `startup_errors` is logged as
    `cannot start: ...` and gives exit status 1; any other start-up error is logged
    the same way with its traceback (a bug) and also gives 1. `stop` always runs,
    whatever happened. Returns the exit status.
    """
    termination = asyncio.create_task(wait_for_termination_signal())
    starting = asyncio.ensure_future(start_up)
    status = 0
    try:
        await asyncio.wait({termination, starting}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            status = _start_up_status(starting, startup_errors)
            if status != 0:
                return status
            print(f"{name} listening on {address}", flush=True)
        received = await termination
        _log.info("received %s: draining", received.name)
    finally:
        for task in (starting, termination):
            task.cancel()
        # Outcomes are already reported above; here they are only collected.
        await asyncio.gather(starting, termination, return_exceptions=True)
        await stop()
    _log.info("%s stopped", name)
    return status


def _start_up_status(starting: asyncio.Future[None], expected: tuple[type[Exception], ...]) -> int:
    """0 when start-up succeeded; else log why it failed and return 1."""
    error = starting.exception() if not starting.cancelled() else None
    if error is None:
        return 0
    if isinstance(error, expected):
        _log.error("cannot start: %s", error)
    else:
        _log.error("cannot start: unexpected %s", type(error).__name__, exc_info=error)
    return 1


async def drain_and_stop(
    server: grpc.aio.Server, health_state: HealthState, drain_delay_s: float, grace_s: float
) -> None:
    """Graceful shutdown: NOT_SERVING first, then let in-flight RPCs finish.

    `drain_delay_s` keeps accepting RPCs while load balancers notice the health
    change; then `server.stop(grace_s)` refuses new RPCs and waits up to
    `grace_s` for in-flight ones.
    """
    await health_state.enter_shutdown()
    if drain_delay_s > 0:
        await asyncio.sleep(drain_delay_s)
    await server.stop(grace_s)
