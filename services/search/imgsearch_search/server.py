"""Wiring of one Search process: gRPC server, Embedder client, Milvus, Redis, lifecycle.

`SearchServer` is the factory tests use (port 0, in-process); `serve` is what
`python -m imgsearch_search` runs. Start-up order, so probes always get an
answer: gRPC server and health (NOT_SERVING) first; then the Embedder is asked
for its model and the Milvus collection is created or checked against it
(retrying until `startup_timeout_s`); then SERVING. A monitor keeps probing the
Embedder and Milvus every `health_check_interval_s` and reports NOT_SERVING
while either is unreachable. Redis is an optimisation and never affects health.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import grpc
from prometheus_client import CollectorRegistry

from imgsearch.common.errors import FailedPreconditionError, ImgsearchError, UnavailableError
from imgsearch.common.grpc_runtime import (
    HealthState,
    ObservabilityInterceptor,
    ServiceRegistration,
    create_grpc_server,
    drain_and_stop,
    serve_until_terminated,
)
from imgsearch.common.logs import configure_logging
from imgsearch.common.metrics import MetricsServer, RpcMetrics, start_metrics_server
from imgsearch.common.server_security import server_security
from imgsearch.common.settings import ConfigurationError
from imgsearch.v1 import search_pb2, search_pb2_grpc
from imgsearch_search.cache import CacheMetrics, QueryCache
from imgsearch_search.embedder_client import Deadline, EmbedderClient
from imgsearch_search.metrics import DependencyMetrics, QueryMetrics
from imgsearch_search.outbound import check_outbound_settings, embedder_channel_security
from imgsearch_search.service import SearchService
from imgsearch_search.settings import SearchSettings
from imgsearch_search.store import MilvusStore
from imgsearch_search.thumbnails import ThumbnailMaker, ThumbnailSpec

_log = logging.getLogger(__name__)

SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["Search"].full_name
_STARTUP_RETRY_S = 1.0


class StartupError(RuntimeError):
    """The dependencies could not be reached or do not fit together; the process must exit."""


class SearchServer:
    """One Search server: build with settings, then `start()`, `connect()`, `stop()`."""

    def __init__(self, settings: SearchSettings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.health = HealthState([SERVICE_NAME])
        # Every TLS, auth and secret-file setting is checked here, before anything
        # starts: a misconfigured process exits at once with a message saying why.
        self.security = server_security(
            settings, [SERVICE_NAME], self.registry, "SEARCH_", self.health
        )
        check_outbound_settings(settings)
        dependency_metrics = DependencyMetrics(self.registry)
        self.embedder = EmbedderClient(
            settings.embedder_address,
            settings.embedder_retries,
            settings.max_message_bytes,
            dependency_metrics,
            embedder_channel_security(settings),
            call_timeout_s=settings.embedder_timeout_s,
        )
        self.store = MilvusStore(settings, dependency_metrics)
        self.thumbnails = ThumbnailMaker(
            ThumbnailSpec(
                max_side=settings.thumbnail_max_side,
                max_bytes=settings.thumbnail_max_bytes,
                image_format=settings.thumbnail_format,
                quality=settings.thumbnail_quality,
                max_image_pixels=settings.thumbnail_max_image_pixels,
            ),
            settings.thumbnail_workers,
            enabled=settings.thumbnails_enabled,
        )
        self._cache_metrics = CacheMetrics(self.registry)
        self._query_metrics = QueryMetrics(self.registry)
        self.cache: QueryCache | None = None  # needs the model name: made in connect()
        self.servicer: SearchService | None = None
        self._service = _DeferredService(self)
        self.server, self.port = create_grpc_server(
            f"{settings.host}:{settings.port}",
            [
                ServiceRegistration(
                    search_pb2_grpc.add_SearchServicer_to_server, self._service, SERVICE_NAME
                )
            ],
            self.health,
            interceptors=[
                ObservabilityInterceptor(RpcMetrics(self.registry)),
                *self.security.interceptors,
            ],
            max_receive_message_bytes=settings.max_message_bytes,
            credentials=self.security.credentials,
            max_concurrent_rpcs=settings.max_concurrent_rpcs,
            max_concurrent_streams=settings.max_concurrent_streams,
            limit_settings=("SEARCH_MAX_CONCURRENT_RPCS", "SEARCH_MAX_CONCURRENT_STREAMS"),
        )
        self.metrics_server: MetricsServer | None = None
        self._monitor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start answering gRPC (health NOT_SERVING, RPCs UNAVAILABLE) and /metrics."""
        await self.health.set_serving(False)
        await self.server.start()
        await self.security.start()
        if self.settings.metrics_port is not None:
            self.metrics_server = start_metrics_server(
                self.registry, self.settings.metrics_host, self.settings.metrics_port
            )

    async def _connect_once(self, deadline: Deadline) -> None:
        info = await self.embedder.get_model(Deadline(deadline.timeout(cap=10.0)))
        await self.store.connect()
        collection = await self.store.ensure_collection(
            info.model, info.fingerprint, info.dimension
        )
        namespace = "|".join(
            (
                self.settings.milvus_uri,
                self.settings.milvus_db,
                collection.name,
                collection.fingerprint,
            )
        )
        if self.cache is None:
            self.cache = QueryCache(
                self.settings, namespace, collection.fingerprint, self._cache_metrics
            )
        self.servicer = SearchService(
            self.settings,
            self.embedder,
            self.store,
            self.cache,
            self._query_metrics,
            self.thumbnails,
        )
        self.servicer.ready = True

    async def connect(self) -> None:
        """Reach the Embedder and Milvus (retrying), prepare the collection, then SERVING.

        Raises StartupError when the time runs out or the collection does not
        fit the Embedder's model (retrying cannot fix that).
        """
        deadline = Deadline(self.settings.startup_timeout_s)
        while True:
            try:
                await self._connect_once(deadline)
                break
            except FailedPreconditionError as error:
                raise StartupError(error.message) from None
            except ImgsearchError as error:
                if deadline.remaining() <= _STARTUP_RETRY_S:
                    raise StartupError(
                        f"gave up after {self.settings.startup_timeout_s:g}s: {error.message}"
                    ) from None
                _log.warning("waiting for dependencies", extra={"reason": error.message})
                await asyncio.sleep(_STARTUP_RETRY_S)
        await self.health.set_serving(True)
        self._monitor = asyncio.create_task(self._watch_dependencies())
        info = self.store.info
        assert info is not None
        _log.info(
            "search serving",
            extra={
                "port": self.port,
                "collection": info.name,
                "model": info.model,
                "fingerprint": info.fingerprint,
                "dimension": info.dimension,
                "index_type": info.index_type,
            },
        )

    async def _watch_dependencies(self) -> None:
        """Drive the health status from periodic Embedder and Milvus probes."""
        interval = self.settings.health_check_interval_s
        # A probe may take longer than a short interval on a loaded machine
        # without that meaning the dependency is down.
        probe_timeout_s = min(max(interval, 2.0), 5.0)
        while True:
            await asyncio.sleep(interval)
            started = time.monotonic()
            try:
                # Its health check, not GetModel: that is answered from memory
                # even while the model is hung.
                await self.embedder.check_health(Deadline(probe_timeout_s))
                # Then GetModel: a replaced Embedder's limits and query-view detectors
                # (cached views are keyed by them) are seen within one interval.
                await self.embedder.get_model(Deadline(probe_timeout_s))
                await self.store.ping(probe_timeout_s)
            except Exception as error:  # noqa: BLE001 -- the monitor must outlive any failure
                reason = error.message if isinstance(error, ImgsearchError) else repr(error)
                if self.health.serving:
                    _log.warning("dependency down: NOT_SERVING", extra={"reason": reason})
                    await self.health.set_serving(False)
                continue
            if not self.health.serving:
                _log.info(
                    "dependencies back: SERVING",
                    extra={"probe_ms": round((time.monotonic() - started) * 1000, 1)},
                )
                await self.health.set_serving(True)

    async def stop(self, drain_delay_s: float | None = None, grace_s: float | None = None) -> None:
        """NOT_SERVING, drain, let in-flight calls finish, then close every client."""
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        await drain_and_stop(
            self.server,
            self.health,
            self.settings.drain_delay_s if drain_delay_s is None else drain_delay_s,
            self.settings.shutdown_grace_s if grace_s is None else grace_s,
        )
        if self.servicer is not None:
            # Writes whose callers are gone still finish and mark the cache.
            await self.servicer.wait_for_writes(self.settings.milvus_timeout_s)
        await self.security.stop()
        await self.embedder.close()
        await self.store.close()
        self.thumbnails.close()
        if self.cache is not None:
            await self.cache.close()
        if self.metrics_server is not None:
            self.metrics_server.close()


class _DeferredService(search_pb2_grpc.SearchServicer):
    """Registered at construction; forwards to the real servicer once it exists.

    The gRPC server must answer (UNAVAILABLE, health NOT_SERVING) while the
    dependencies are still being reached, before the servicer can be built.
    """

    def __init__(self, owner: SearchServer) -> None:
        self._owner = owner

    def _target(self) -> SearchService:
        servicer = self._owner.servicer
        if servicer is None:
            raise UnavailableError(
                "the Search service is starting: waiting for the Embedder and Milvus"
            )
        return servicer

    async def Insert(
        self, request: search_pb2.InsertRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.InsertResponse:
        return await self._target().Insert(request, context)

    async def Search(
        self, request: search_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.SearchResponse:
        return await self._target().Search(request, context)

    async def Get(
        self, request: search_pb2.GetRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.GetResponse:
        return await self._target().Get(request, context)

    async def Delete(
        self, request: search_pb2.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.DeleteResponse:
        return await self._target().Delete(request, context)

    async def Stats(
        self, request: search_pb2.StatsRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.StatsResponse:
        return await self._target().Stats(request, context)

    async def List(
        self, request: search_pb2.ListRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.ListResponse:
        return await self._target().List(request, context)

    async def FindDuplicates(
        self, request: search_pb2.FindDuplicatesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[search_pb2.FindDuplicatesResponse]:
        async for message in self._target().FindDuplicates(request, context):
            yield message


async def serve(settings: SearchSettings) -> int:
    """Run one Search server until SIGTERM or SIGINT; returns the exit status.

    Unusable TLS, auth or secret-file settings end it with status 2.
    """
    try:
        server = SearchServer(settings)
    except ConfigurationError as error:
        _log.error("cannot start: %s", error)
        return 2
    try:
        await server.start()
    except ConfigurationError as error:  # e.g. the metrics or probe port is taken
        _log.error("cannot start: %s", error)
        await server.stop(drain_delay_s=0, grace_s=0)
        return 2
    return await serve_until_terminated(
        "search",
        f"{settings.host}:{server.port}",
        server.connect(),
        server.stop,
        startup_errors=(StartupError,),
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point: settings from the environment (SEARCH_*) and command-line flags."""
    settings = SearchSettings(
        _cli_parse_args=argv if argv is not None else True,
        _cli_prog_name="python -m imgsearch_search",
        _cli_kebab_case=True,
    )
    configure_logging(settings.log_level, settings.log_json)
    raise SystemExit(asyncio.run(serve(settings)))
