"""Wiring of one Embedder process: gRPC server, model, batcher, metrics, lifecycle.

`EmbedderServer` is the factory tests use (port 0, in-process); `serve` is what
`python -m imgsearch_embedder` runs. Order of start-up, so that probes always
get an answer: gRPC server and health (NOT_SERVING) first, then the model is
loaded and warmed in a worker thread, then SERVING. From then on a watchdog
keeps health honest: NOT_SERVING while images wait with no forward pass
finishing for `stall_timeout_s` (a hung model), SERVING again once passes
complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry

from imgsearch.common.grpc_runtime import (
    HealthState,
    ObservabilityInterceptor,
    ServiceRegistration,
    create_grpc_server,
    drain_and_stop,
    serve_until_terminated,
)
from imgsearch.common.imaging import PixelBudget
from imgsearch.common.logs import configure_logging
from imgsearch.common.metrics import MetricsServer, RpcMetrics, start_metrics_server
from imgsearch.common.resources import limit_allocator_retention, rss_bytes, usable_cpu_count
from imgsearch.common.server_security import server_security
from imgsearch.common.settings import ConfigurationError
from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc
from imgsearch_embedder.admission import Admission
from imgsearch_embedder.batcher import BatcherMetrics, DynamicBatcher
from imgsearch_embedder.model import EmbeddingModel, ModelLoadError, default_max_batch_size
from imgsearch_embedder.preprocess import Preprocessor, configure_pillow
from imgsearch_embedder.service import EmbedderService, ModelRuntime
from imgsearch_embedder.settings import EmbedderSettings

_log = logging.getLogger(__name__)

SERVICE_NAME = embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name
# Room for the protobuf framing around the images themselves.
_MESSAGE_OVERHEAD_BYTES = 1024 * 1024


class EmbedderServer:
    """One Embedder: build with settings, then `start()`, `load_model()`, `stop()`."""

    def __init__(self, settings: EmbedderSettings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.health = HealthState([SERVICE_NAME])
        # TLS and auth settings are checked first: a bad one stops the process at once.
        self.security = server_security(
            settings, [SERVICE_NAME], self.registry, "EMBEDDER_", self.health
        )
        self._batcher_metrics = BatcherMetrics(self.registry)
        workers = settings.decode_workers or usable_cpu_count()
        self._decode_executor = ThreadPoolExecutor(workers, thread_name_prefix="decode")
        # One thread owns the model: forward passes on a device run one at a time.
        self._model_executor = ThreadPoolExecutor(1, thread_name_prefix="model")
        self._preprocessor = Preprocessor(
            input_size=settings.input_size,
            resize_size=settings.resize_size,
            max_image_pixels=settings.max_image_pixels,
            max_aspect_ratio=settings.max_aspect_ratio,
            budget=PixelBudget(settings.max_decoding_pixels),
            crop=settings.crop,
            trim_borders=settings.trim_borders,
        )
        self.servicer = EmbedderService(settings, self._preprocessor, self._decode_executor)
        self.server, self.port = create_grpc_server(
            f"{settings.host}:{settings.port}",
            [
                ServiceRegistration(
                    embedder_pb2_grpc.add_EmbedderServicer_to_server, self.servicer, SERVICE_NAME
                )
            ],
            self.health,
            interceptors=[
                ObservabilityInterceptor(RpcMetrics(self.registry)),
                *self.security.interceptors,
            ],
            max_receive_message_bytes=settings.max_request_bytes + _MESSAGE_OVERHEAD_BYTES,
            credentials=self.security.credentials,
            max_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        self.model: EmbeddingModel | None = None
        self.batcher: DynamicBatcher | None = None
        self.metrics_server: MetricsServer | None = None
        self._watchdog: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start answering gRPC (health NOT_SERVING) and serving /metrics."""
        configure_pillow(self.settings.max_image_pixels)
        await self.health.set_serving(False)
        await self.server.start()
        await self.security.start()
        if self.settings.metrics_port is not None:
            self.metrics_server = start_metrics_server(
                self.registry, self.settings.metrics_host, self.settings.metrics_port
            )

    async def load_model(self) -> None:
        """Load and warm the model off the event loop, then report SERVING."""
        loop = asyncio.get_running_loop()
        model = await loop.run_in_executor(self._model_executor, EmbeddingModel, self.settings)
        max_batch_size = self.settings.max_batch_size or default_max_batch_size(model.device)
        await loop.run_in_executor(self._model_executor, model.warm_up, max_batch_size)
        self.model = model
        self.batcher = DynamicBatcher(
            model.embed_batch,
            max_batch_size=max_batch_size,
            max_delay_s=self.settings.max_delay_ms / 1000.0,
            queue_size=self.settings.queue_size,
            model_executor=self._model_executor,
            metrics=self._batcher_metrics,
        )
        self.batcher.start()
        self.servicer.attach(
            ModelRuntime(
                model=model,
                batcher=self.batcher,
                admission=Admission(
                    limit=self.settings.decode_ahead_batches * max_batch_size,
                    max_waiting=self.settings.queue_size,
                    max_pending_bytes=self.settings.max_pending_bytes,
                ),
                max_batch_size=max_batch_size,
            )
        )
        await self.health.set_serving(True)
        self._watchdog = asyncio.create_task(self._watch_progress(), name="embedder-watchdog")
        _log.info(
            "embedder serving",
            extra={
                "port": self.port,
                "model": model.name,
                "fingerprint": model.fingerprint,
                "rss_mb": rss_bytes() // 2**20,
                "memory_bound_above_rss_mb": self.settings.memory_bound_above_base() // 2**20,
            },
        )

    async def _watch_progress(self) -> None:
        """NOT_SERVING while the batcher is stalled; SERVING again once it progresses."""
        bound = self.settings.stall_timeout_s
        interval = min(1.0, bound / 4)
        assert self.batcher is not None
        while True:
            await asyncio.sleep(interval)
            stalled_for = self.batcher.stalled_for()
            self._batcher_metrics.stalled.set(stalled_for)
            if stalled_for > bound and self.health.serving:
                _log.error(
                    "no forward pass finished for %.1f s with images waiting: NOT_SERVING",
                    stalled_for,
                )
                await self.health.set_serving(False)
            elif stalled_for <= bound and not self.health.serving:
                _log.info("forward passes finish again: SERVING")
                await self.health.set_serving(True)

    async def stop(self, drain_delay_s: float | None = None, grace_s: float | None = None) -> None:
        """NOT_SERVING, drain, let in-flight calls finish, then release everything."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await drain_and_stop(
            self.server,
            self.health,
            self.settings.drain_delay_s if drain_delay_s is None else drain_delay_s,
            self.settings.shutdown_grace_s if grace_s is None else grace_s,
        )
        await self.security.stop()
        if self.batcher is not None:
            await self.batcher.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
        self._decode_executor.shutdown(wait=True, cancel_futures=True)
        self._model_executor.shutdown(wait=True, cancel_futures=True)


async def serve(settings: EmbedderSettings) -> int:
    """Run one Embedder until SIGTERM or SIGINT; returns the exit status.

    Weights that cannot be loaded end the process with status 1 and a log line
    saying how to provide them; unusable TLS or auth settings with status 2.
    """
    try:
        server = EmbedderServer(settings)
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
        "embedder",
        f"{settings.host}:{server.port}",
        server.load_model(),
        server.stop,
        startup_errors=(ModelLoadError,),
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point: settings from the environment (EMBEDDER_*) and command-line flags."""
    settings = EmbedderSettings(
        _cli_parse_args=argv if argv is not None else True,
        _cli_prog_name="python -m imgsearch_embedder",
        _cli_kebab_case=True,
    )
    configure_logging(settings.log_level, settings.log_json)
    limit_allocator_retention()  # before any thread or large buffer exists
    raise SystemExit(asyncio.run(serve(settings)))
