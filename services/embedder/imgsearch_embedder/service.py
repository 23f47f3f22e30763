"""The `imgsearch.v1.Embedder` gRPC servicer: request checks, decoding, batching."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import grpc
import numpy as np

from imgsearch.common.errors import InvalidArgumentError, RequestTooLargeError, UnavailableError
from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc
from imgsearch_embedder.admission import Admission
from imgsearch_embedder.batcher import DynamicBatcher
from imgsearch_embedder.model import EmbeddingModel
from imgsearch_embedder.preprocess import Preprocessor
from imgsearch_embedder.settings import EmbedderSettings
from imgsearch_embedder.views import MAX_VIEWS_PER_IMAGE, detectors_identity


@dataclass(frozen=True)
class ModelRuntime:
    """What serving needs once the model is loaded and warmed."""

    model: EmbeddingModel
    batcher: DynamicBatcher
    admission: Admission
    max_batch_size: int  # as configured, or the device's default


class EmbedderService(embedder_pb2_grpc.EmbedderServicer):
    """Validates each request, decodes its images in the decode pool, and batches them.

    The gRPC server (and its health service) starts before the model is loaded,
    so probes can answer NOT_SERVING; until `attach` is called, calls get
    UNAVAILABLE.
    """

    def __init__(
        self, settings: EmbedderSettings, preprocessor: Preprocessor, decode_executor: Executor
    ) -> None:
        self._settings = settings
        self._preprocessor = preprocessor
        self._decode_executor = decode_executor
        self._runtime: ModelRuntime | None = None
        # GetModelResponse.query_views: empty when this Embedder never looks for views.
        self._views_identity = detectors_identity() if settings.query_views else ""

    def attach(self, runtime: ModelRuntime) -> None:
        self._runtime = runtime

    def _ready(self) -> ModelRuntime:
        if self._runtime is None:
            raise UnavailableError("embedder is still loading its model; retry shortly")
        return self._runtime

    def _check_progress(self, runtime: ModelRuntime) -> None:
        """UNAVAILABLE at once while the model is stuck, rather than a wait to the deadline."""
        stalled_for = runtime.batcher.stalled_for()
        if stalled_for > self._settings.stall_timeout_s:
            raise UnavailableError(
                f"embedder is not making progress (no forward pass finished for"
                f" {stalled_for:.0f} s); retry on another replica"
            )

    def _check_limits(self, request: embedder_pb2.EmbedRequest) -> int:
        """The request's encoded bytes, once its image count and bytes are within limits."""
        count = len(request.images)
        if count == 0:
            raise InvalidArgumentError("images: the request has no images")
        limit = self._settings.max_images_per_request
        if count > limit:
            raise RequestTooLargeError(
                f"images: {count} images exceed the limit of {limit} per request; split the request"
            )
        total = sum(len(image) for image in request.images)
        if total > self._settings.max_request_bytes:
            raise RequestTooLargeError(
                f"images: {total} bytes exceed the limit of {self._settings.max_request_bytes}"
                " bytes per request; split the request"
            )
        return total

    async def Embed(
        self, request: embedder_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> embedder_pb2.EmbedResponse:
        runtime = self._ready()
        nbytes = self._check_limits(request)
        self._check_progress(runtime)
        loop = asyncio.get_running_loop()
        remaining = context.time_remaining()
        deadline = None if remaining is None else loop.time() + remaining
        # Decode only once the model is about to need the images (see admission.py).
        with_views = request.query_views and self._settings.query_views
        # Admission counts model inputs: with views, up to 1 + MAX_VIEWS_PER_IMAGE an image.
        inputs = len(request.images) * (1 + MAX_VIEWS_PER_IMAGE if with_views else 1)
        async with runtime.admission.admit(inputs, deadline, nbytes):
            if with_views:
                embeddings = await self._embed_with_views(runtime, request.images, deadline)
            else:
                decoded = await asyncio.gather(
                    *(
                        loop.run_in_executor(self._decode_executor, self._preprocessor, image, i)
                        for i, image in enumerate(request.images)
                    )
                )
                vectors = await runtime.batcher.submit(decoded, deadline)
                embeddings = [embedder_pb2.Embedding(vector=row.tolist()) for row in vectors]
        return embedder_pb2.EmbedResponse(
            embeddings=embeddings,
            model=runtime.model.name,
            fingerprint=runtime.model.fingerprint,
            query_views=self._views_identity if with_views else "",
        )

    async def _embed_with_views(
        self, runtime: ModelRuntime, images: Sequence[bytes], deadline: float | None
    ) -> list[embedder_pb2.Embedding]:
        """Each image's embedding with its views'.

        Each whole image is queued for the model as soon as its input is made, while its
        decode thread goes on looking for views (`Preprocessor.with_views`), so the
        detectors' work overlaps the whole image's forward pass; the views found then go
        through the batcher together.
        """
        loop = asyncio.get_running_loop()
        wholes: dict[int, asyncio.Task[np.ndarray]] = {}
        open_ = True

        def start(index: int, array: np.ndarray) -> None:  # on the event loop
            if open_:  # not once the call has failed or ended
                wholes[index] = loop.create_task(runtime.batcher.submit([array], deadline))

        def ready(index: int, array: np.ndarray) -> None:  # on a decode thread
            loop.call_soon_threadsafe(start, index, array)

        try:
            decoded = await asyncio.gather(
                *(
                    loop.run_in_executor(
                        self._decode_executor,
                        self._preprocessor.with_views,
                        image,
                        index,
                        functools.partial(ready, index),
                    )
                    for index, image in enumerate(images)
                )
            )
            # Each `start` was scheduled before its decode job returned: all have run.
            found = [views for _, views in decoded]
            inputs = [array for views in found for _, array in views]
            rows = iter(await runtime.batcher.submit(inputs, deadline) if inputs else ())
            embeddings = []
            for index, views in enumerate(found):
                whole = await wholes[index]
                embedding = embedder_pb2.Embedding(vector=whole[0].tolist())
                for view, _array in views:
                    embedding.views.add(
                        kind=view.kind,
                        vector=next(rows).tolist(),
                        box=view.box,
                        angle_degrees=view.angle_degrees,
                        score=view.score,
                    )
                embeddings.append(embedding)
            return embeddings
        finally:
            open_ = False
            for task in wholes.values():
                task.cancel()
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: the call's own error was raised instead

    async def GetModel(
        self, request: embedder_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> embedder_pb2.GetModelResponse:
        runtime = self._ready()
        model = runtime.model
        spec = model.spec
        return embedder_pb2.GetModelResponse(
            model=model.name,
            dimension=model.dimension,
            input_size=spec.input_size,
            device=str(model.device),
            dtype=model.dtype_name,
            max_batch_size=runtime.max_batch_size,
            max_images_per_request=self._settings.max_images_per_request,
            max_request_bytes=self._settings.max_request_bytes,
            max_image_pixels=self._settings.max_image_pixels,
            pooling=model.pooling,
            fingerprint=model.fingerprint,
            descriptor=json.dumps(model.descriptor, sort_keys=True),
            query_views=self._views_identity,
        )
