"""The gateway's gRPC client of Search: one channel, deadlines, the caller's credentials.

Every call carries the caller's `Authorization` header as `authorization`
metadata (Search checks bearer tokens when its auth is on: nothing reaches it
without the caller's token), and the gateway's request id as `x-request-id`.
Failures become `ApiError`s through the one status table in `errors`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imgsearch.v1 import search_pb2, search_pb2_grpc
from imgsearch_web.errors import ApiError, from_rpc_error
from imgsearch_web.settings import WebSettings

_log = logging.getLogger(__name__)

Metadata = Sequence[tuple[str, str]]


def channel_credentials(settings: WebSettings) -> grpc.ChannelCredentials | None:
    """TLS credentials for the Search channel, or None for plain gRPC."""
    if settings.search_tls_ca_file is None:
        return None
    try:
        root = settings.search_tls_ca_file.read_bytes()
    except OSError as error:
        raise SystemExit(
            f"cannot read WEB_SEARCH_TLS_CA_FILE {settings.search_tls_ca_file}: {error}"
        ) from None
    return grpc.ssl_channel_credentials(root_certificates=root)


class SearchBackend:
    """A grpc.aio channel to the Search service; `open()` in start-up, `close()` at shutdown."""

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.address = settings.search_address
        self._channel: grpc.aio.Channel | None = None
        self._stub: search_pb2_grpc.SearchStub | None = None
        self._health: health_pb2_grpc.HealthStub | None = None

    def open(self) -> None:
        settings = self.settings
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 5_000),
        ]
        credentials = channel_credentials(settings)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(self.address, options=options)
        else:
            if settings.search_tls_server_name:
                options.append(("grpc.ssl_target_name_override", settings.search_tls_server_name))
            self._channel = grpc.aio.secure_channel(self.address, credentials, options=options)
        self._stub = search_pb2_grpc.SearchStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=1.0)
            self._channel = None

    @property
    def stub(self) -> search_pb2_grpc.SearchStub:
        if self._stub is None:
            raise ApiError.from_code(grpc.StatusCode.UNAVAILABLE, "the gateway is starting")
        return self._stub

    async def call(self, method: str, request: Any, metadata: Metadata, timeout_s: float) -> Any:
        """One unary call to Search; ApiError (with Search's code and message) on failure."""
        try:
            return await getattr(self.stub, method)(
                request, timeout=timeout_s, metadata=tuple(metadata)
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, self.address) from None

    async def find_duplicates(
        self, request: search_pb2.FindDuplicatesRequest, metadata: Metadata
    ) -> AsyncIterator[search_pb2.FindDuplicatesResponse]:
        """The FindDuplicates stream; ApiError on failure (also in the middle of it)."""
        call = self.stub.FindDuplicates(
            request, timeout=self.settings.duplicates_timeout_s, metadata=tuple(metadata)
        )
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, self.address) from None
        finally:
            call.cancel()  # a no-op once finished; stops the scan when the client left

    async def health(self, timeout_s: float = 3.0) -> str:
        """Search's grpc.health.v1 status: SERVING, NOT_SERVING, or UNREACHABLE."""
        if self._health is None:
            return "UNREACHABLE"
        try:
            reply = await self._health.Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as error:
            _log.info("search health check failed", extra={"code": error.code().name})
            return "UNREACHABLE"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
