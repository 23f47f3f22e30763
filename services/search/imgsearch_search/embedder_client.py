"""The Search service's client of the Embedder: limits, deadlines, retries, per-image errors.

Embedder statuses become our error taxonomy here, by cause (`embedder_error`),
so the Search handlers never see a raw `grpc.aio.AioRpcError`:

- UNAVAILABLE, CANCELLED, ABORTED (the Embedder went away) -> UnavailableError;
- RESOURCE_EXHAUSTED (its queue is full) -> ResourceExhaustedError, or with a
  negative retry pushback (a request over its limits) -> RequestTooLargeError,
  which belongs to the images of that call;
- DEADLINE_EXCEEDED -> DeadlineExceededError;
- INVALID_ARGUMENT -> InvalidArgumentError for that image;
- INTERNAL, UNKNOWN, DATA_LOSS (the Embedder failed on what it was given) ->
  InternalError: the same request would fail again;
- UNAUTHENTICATED, PERMISSION_DENIED (our token or certificate is refused)
  -> FailedPreconditionError: an operator must fix the credentials;
- UNIMPLEMENTED and the rest (this Search and this Embedder do not fit
  together) -> FailedPreconditionError.

Only errors whose class is `retriable` are retried, `retries` times with
exponential backoff within the caller's deadline; after UNAVAILABLE the last
retry first waits for the channel to connect (at most `_READY_WAIT_S`), so a
restarted Embedder is used as soon as it listens, not after the channel's
reconnect backoff.

`embed_each` is what Insert uses: it packs images into Embed calls that fit the
Embedder's advertised limits and, when a call fails for a reason that belongs
to its images (INVALID_ARGUMENT, or the Embedder failing on them: one bad image
fails the Embedder's whole request), embeds that call's images one by one so
that only the bad ones fail.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imgsearch.common.errors import (
    RETRY_PUSHBACK_KEY,
    DeadlineExceededError,
    FailedPreconditionError,
    ImgsearchError,
    InternalError,
    InvalidArgumentError,
    RequestTooLargeError,
    ResourceExhaustedError,
    UnavailableError,
)
from imgsearch.common.grpc_runtime import REQUEST_ID_HEADER
from imgsearch.common.logs import request_id_var
from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc
from imgsearch_search.metrics import DependencyMetrics
from imgsearch_search.outbound import EmbedderChannelSecurity

_log = logging.getLogger(__name__)
# The most views of one query image searched (one more vector each in the Milvus call).
MAX_QUERY_VIEWS = 8
# The Embedder names a bad image by its index in *its* request ("images[0]: ..."),
# which means nothing to our caller; the caller prefixes its own name instead.
_EMBEDDER_INDEX_RE = re.compile(r"^images\[\d+\]:?\s*")
_EMBEDDER_SERVICE = embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name
_FIRST_BACKOFF_S = 0.1
# The last retry waits this long at most for the channel to (re)connect.
_READY_WAIT_S = 2.0
# Failures that belong to the images of a call, not to the Embedder's state.
_PER_IMAGE = (InvalidArgumentError, InternalError, RequestTooLargeError)
_GONE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED)
_FAILED = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS)


def embedder_error(
    address: str, what: str, code: grpc.StatusCode, details: str, final: bool = False
) -> ImgsearchError:
    """Our error for an Embedder call that ended with `code`, classified by cause.

    `final`: the Embedder said not to retry (a negative retry pushback), as it
    does for a request over its per-request limits.
    """
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgumentError(_EMBEDDER_INDEX_RE.sub("", details, count=1))
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceededError(f"the Embedder did not finish {what} in time")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and final:
        return RequestTooLargeError(f"the Embedder refused it as too large: {details}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhaustedError(f"the Embedder is overloaded: {details}")
    if code in _GONE:
        return UnavailableError(
            f"the Embedder at {address} is unavailable for {what}: {code.name}: {details}"
        )
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        # Our own credentials are wrong: a retry cannot fix that, an operator must.
        return FailedPreconditionError(
            f"the Embedder at {address} refused this Search service's credentials"
            f" ({code.name}: {details}); check SEARCH_EMBEDDER_TOKEN_FILE and the"
            " Embedder's principals file"
        )
    if code in _FAILED:
        return InternalError(
            f"the Embedder at {address} failed {what} ({code.name}: {details});"
            " retrying the same request cannot help"
        )
    return FailedPreconditionError(
        f"the Embedder at {address} refused {what} ({code.name}: {details}); check that"
        " this Search and that Embedder are the same version and share credentials"
    )


@dataclass(frozen=True)
class ModelInfo:
    """What GetModel said about the Embedder's model and limits."""

    model: str
    fingerprint: str  # identity of the descriptor (SHA-256 of what shapes the vectors)
    dimension: int
    max_images_per_request: int
    max_request_bytes: int


@dataclass(frozen=True)
class QueryEmbedding:
    """One query image's embedding as the Embedder returned it, with its identities."""

    embedding: embedder_pb2.Embedding  # the whole-image vector and any views, checked
    fingerprint: str  # the descriptor's (EmbedResponse.fingerprint)
    query_views: str  # the detectors' that looked for the views ("" when none looked)


class Deadline:
    """An absolute point in monotonic time by which a piece of work must be done."""

    def __init__(self, seconds: float, *, from_caller: bool = False) -> None:
        self._at = time.monotonic() + seconds
        self.from_caller = from_caller  # the caller chose it: no setting shortens a call within it

    @classmethod
    def for_call(cls, context: grpc.aio.ServicerContext | None, default_s: float) -> Deadline:
        """The caller's deadline, longer or shorter than `default_s`; `default_s` when it set none.

        An Embed call may use all of a deadline the caller chose (a large Insert on a
        slow CPU can need minutes, and the caller said it may wait); without one, each
        Embed call is capped by `EmbedderClient(call_timeout_s=)`. Milvus calls are
        capped by `SEARCH_MILVUS_TIMEOUT_S` within either.
        """
        remaining = context.time_remaining() if context is not None else None
        if remaining is None:
            return cls(default_s)
        return cls(max(remaining, 0.0), from_caller=True)

    def remaining(self) -> float:
        return self._at - time.monotonic()

    def timeout(self, cap: float | None = None) -> float:
        """Seconds left (at most `cap`); DeadlineExceededError when none are left."""
        left = self.remaining()
        if left <= 0:
            raise DeadlineExceededError("deadline exceeded before the work could be done")
        return left if cap is None else min(left, cap)


async def run_all(coroutines: Sequence[Coroutine[Any, Any, None]]) -> None:
    """Run coroutines concurrently; on failure cancel the rest and raise the first error.

    Unlike a bare TaskGroup this raises the error itself, not an ExceptionGroup,
    so the server interceptor can map it to its status.
    """
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except BaseExceptionGroup as errors:
        first: BaseException = errors
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


def _metadata() -> tuple[tuple[str, str], ...]:
    """Forward our request id so one request can be followed across services."""
    request_id = request_id_var.get()
    return ((REQUEST_ID_HEADER, request_id),) if request_id else ()


def _unit_or_none(values: Sequence[float]) -> np.ndarray | None:
    """`values` scaled to unit norm (float32, computed in float64), or None when some value
    is NaN or infinite or all are zero (no direction to search)."""
    wide = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        norm = float(np.linalg.norm(wide))
    if not np.all(np.isfinite(wide)) or not np.isfinite(norm) or norm == 0:
        return None
    return (wide / norm).astype(np.float32)


def checked_query_embedding(
    embedding: embedder_pb2.Embedding, dimension: int
) -> embedder_pb2.Embedding:
    """A query's Embedding (whole-image vector and views) fit to search with, in place.

    Search scores an item by the best of its vectors' similarities
    (`merge_view_hits`), so one vector that is not what the contract says
    would decide the ranking: with the IP metric a longer view vector
    outscores every whole-image match, and a NaN one comes back from Milvus
    as NaN scores. So every vector is scaled to unit norm; a view whose
    vector is NaN, infinite or all zeros is dropped (a view is an extra), as
    are a view without a kind and a second view of one kind (the contract
    holds at most one of each; the first is the most confident), and at most
    MAX_QUERY_VIEWS are kept (each is one more vector in the Milvus call).

    Raises UnavailableError when a vector is not `dimension` long (another
    model: another replica may fit), InternalError when the whole-image
    vector is NaN, infinite or all zeros (the Embedder failed on this image).
    """
    shapes = [len(embedding.vector), *(len(view.vector) for view in embedding.views)]
    if any(size != dimension for size in shapes):
        raise UnavailableError(
            f"the Embedder returned vectors of {shapes} values for one query, expected"
            f" {dimension}; has its model changed?"
        )
    whole = _unit_or_none(embedding.vector)
    if whole is None:
        raise InternalError(
            "the Embedder returned a query vector with NaN or infinite values, or all zeros"
        )
    embedding.vector[:] = whole.tolist()
    kept: list[embedder_pb2.View] = []
    for view in embedding.views:
        if len(kept) == MAX_QUERY_VIEWS or not view.kind or view.kind in {v.kind for v in kept}:
            continue
        vector = _unit_or_none(view.vector)
        if vector is None:
            _log.warning("the Embedder returned a %r view with NaN, infinite or zero values;"
                         " searching without it", view.kind[:40])  # fmt: skip
            continue
        copy = embedder_pb2.View()
        copy.CopyFrom(view)
        copy.vector[:] = vector.tolist()
        kept.append(copy)
    del embedding.views[:]
    embedding.views.extend(kept)
    return embedding


class EmbedderClient:
    """A grpc.aio channel to one Embedder address (a headless Service spreads over pods)."""

    def __init__(
        self,
        address: str,
        retries: int,
        max_message_bytes: int,
        metrics: DependencyMetrics,
        security: EmbedderChannelSecurity | None = None,
        *,
        call_timeout_s: float | None = None,
    ) -> None:
        self.address = address
        self._retries = retries
        self._metrics = metrics
        self._call_timeout_s = call_timeout_s  # each call's cap when the caller set no deadline
        # TLS credentials and the token (see imgsearch_search.outbound); None: plaintext.
        self._security = security or EmbedderChannelSecurity(credentials=None)
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            # Spread calls over every Embedder pod a DNS name resolves to.
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.keepalive_time_ms", 60_000),
            # Reconnect within seconds once an Embedder is back (gRPC's default
            # backoff grows to two minutes, keeping us unready that long).
            ("grpc.initial_reconnect_backoff_ms", 250),
            # At most 1 s between attempts: a restarted Embedder is found within
            # the last retry's wait for readiness (_READY_WAIT_S).
            ("grpc.max_reconnect_backoff_ms", 1_000),
            *self._security.options,
        ]
        if self._security.credentials is None:
            self._channel = grpc.aio.insecure_channel(address, options=options)
        else:
            self._channel = grpc.aio.secure_channel(
                address, self._security.credentials, options=options
            )
        self._stub = embedder_pb2_grpc.EmbedderStub(self._channel)
        self.info: ModelInfo | None = None
        # The query-view detectors' identity as last reported (GetModel, or an Embed reply
        # with views): the key under which cached views are looked up.
        self.views_identity = ""

    async def close(self) -> None:
        await self._channel.close()

    async def _wait_until_ready(self, deadline: Deadline, unavailable: ImgsearchError) -> None:
        """Wait (at most `_READY_WAIT_S`) for the channel to connect; else raise `unavailable`."""
        wait_s = min(deadline.remaining(), _READY_WAIT_S)
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout=max(wait_s, 0.0))
        except TimeoutError:
            raise unavailable from None

    def _translate(self, error: grpc.aio.AioRpcError, what: str) -> ImgsearchError:
        # A negative retry pushback (gRFC A6) says: do not retry, whatever the code.
        pushback = dict(error.trailing_metadata() or ()).get(RETRY_PUSHBACK_KEY)
        final = str(pushback or "").startswith("-")
        return embedder_error(self.address, what, error.code(), error.details() or "", final)

    async def _call(self, method: str, request: Any, deadline: Deadline, what: str) -> Any:
        """One unary call, retried (bounded, within the deadline) while the error is retriable."""
        stub_method = getattr(self._stub, method)
        backoff = _FIRST_BACKOFF_S
        previous: ImgsearchError | None = None
        for attempt in range(self._retries + 1):
            last_attempt = attempt == self._retries
            if last_attempt and isinstance(previous, UnavailableError):
                # The last retry first waits for a (re)connecting channel, so a
                # restarted Embedder is used as soon as it listens.
                await self._wait_until_ready(deadline, previous)
            started = time.perf_counter()
            outcome = "ok"
            try:
                return await stub_method(
                    request,
                    timeout=deadline.timeout(
                        None if deadline.from_caller else self._call_timeout_s
                    ),
                    metadata=(*_metadata(), *self._security.metadata()),
                )
            except grpc.aio.AioRpcError as error:
                outcome = error.code().name
                translated = self._translate(error, what)
                if not translated.retriable or last_attempt or deadline.remaining() <= backoff:
                    raise translated from None
                previous = translated
            finally:
                self._metrics.calls.labels("embedder", method, outcome).observe(
                    time.perf_counter() - started
                )
            await asyncio.sleep(backoff)
            backoff *= 2
        raise AssertionError("unreachable: the loop returns or raises")

    async def get_model(self, deadline: Deadline) -> ModelInfo:
        """Ask the Embedder for its model and limits; remembered in `self.info`."""
        reply = await self._call("GetModel", embedder_pb2.GetModelRequest(), deadline, "GetModel")
        if not reply.model or reply.dimension == 0 or not reply.fingerprint:
            raise UnavailableError(
                f"the Embedder at {self.address} reported no model (model={reply.model!r},"
                f" fingerprint={reply.fingerprint!r}, dimension={reply.dimension})"
            )
        self.info = ModelInfo(
            model=reply.model,
            fingerprint=reply.fingerprint,
            dimension=reply.dimension,
            max_images_per_request=max(1, reply.max_images_per_request),
            max_request_bytes=max(1, reply.max_request_bytes),
        )
        self.views_identity = reply.query_views
        return self.info

    async def check_health(self, deadline: Deadline) -> None:
        """Raise UnavailableError unless the Embedder's health service says SERVING.

        The Embedder's health follows its batches' progress (a hung model is
        NOT_SERVING), which GetModel, answered from memory, does not show.
        """
        stub = health_pb2_grpc.HealthStub(self._channel)
        request = health_pb2.HealthCheckRequest(service=_EMBEDDER_SERVICE)
        try:
            reply = await stub.Check(request, timeout=deadline.timeout(), metadata=_metadata())
        except grpc.aio.AioRpcError as error:
            raise UnavailableError(
                f"the Embedder at {self.address} does not answer health checks:"
                f" {error.code().name}: {error.details()}"
            ) from None
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            raise UnavailableError(f"the Embedder at {self.address} reports {status}")

    def _require_info(self) -> ModelInfo:
        if self.info is None:
            raise UnavailableError(f"the Embedder at {self.address} has not been reached yet")
        return self.info

    async def embed(self, images: Sequence[bytes], deadline: Deadline) -> tuple[np.ndarray, str]:
        """Embed `images` in one Embed call: (n x dimension float32 matrix, model fingerprint).

        Raises UnavailableError for vectors of another dimension, InternalError when a
        vector is NaN, infinite or all zeros (the Embedder failed on that image; as a
        per-image error, `embed_each` finds which one).
        """
        info = self._require_info()
        reply = await self._call(
            "Embed", embedder_pb2.EmbedRequest(images=list(images)), deadline, "Embed"
        )
        if len(reply.embeddings) != len(images):
            raise UnavailableError(
                f"the Embedder returned {len(reply.embeddings)} embeddings for {len(images)} images"
            )
        vectors = np.array([e.vector for e in reply.embeddings], dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != info.dimension:
            raise UnavailableError(
                f"the Embedder returned vectors of shape {vectors.shape}, expected"
                f" (n, {info.dimension}); has its model changed?"
            )
        if not (np.all(np.isfinite(vectors)) and np.all(np.any(vectors, axis=1))):
            raise InternalError(
                "the Embedder returned a vector with NaN or infinite values, or all zeros"
            )
        return vectors, reply.fingerprint

    async def embed_query(self, image: bytes, deadline: Deadline, *, views: bool) -> QueryEmbedding:
        """Embed one query image, with its views when `views` (EmbedRequest.query_views).

        Returns the Embedding message (its vector and, when asked for, the views
        the Embedder found: none from an Embedder that predates views, which
        then serves the whole image alone) as `checked_query_embedding` leaves
        it: every vector of the model's dimension (else UnavailableError, as in
        `embed`) and unit norm; with the model fingerprint and the identity of
        the detectors that looked (remembered in `views_identity`).
        """
        info = self._require_info()
        request = embedder_pb2.EmbedRequest(images=[image], query_views=views)
        reply = await self._call("Embed", request, deadline, "Embed")
        if len(reply.embeddings) != 1:
            raise UnavailableError(
                f"the Embedder returned {len(reply.embeddings)} embeddings for 1 image"
            )
        embedding = reply.embeddings[0]
        identity = reply.query_views if views else ""
        if views:
            self.views_identity = identity
        else:
            del embedding.views[:]
        checked = checked_query_embedding(embedding, info.dimension)
        return QueryEmbedding(checked, reply.fingerprint, identity)

    def plan_calls(self, images: Sequence[bytes]) -> tuple[list[list[int]], dict[int, str]]:
        """Group image indexes into Embed calls within the Embedder's limits.

        Returns the groups and, for images that can never fit (over the byte
        limit on their own), why.
        """
        info = self._require_info()
        groups: list[list[int]] = []
        too_big: dict[int, str] = {}
        current: list[int] = []
        current_bytes = 0
        for index, image in enumerate(images):
            size = len(image)
            if size > info.max_request_bytes:
                too_big[index] = (
                    f"image is {size} bytes, over the Embedder's limit of"
                    f" {info.max_request_bytes} bytes"
                )
                continue
            if current and (
                len(current) >= info.max_images_per_request
                or current_bytes + size > info.max_request_bytes
            ):
                groups.append(current)
                current, current_bytes = [], 0
            current.append(index)
            current_bytes += size
        if current:
            groups.append(current)
        return groups, too_big

    async def embed_each(
        self, images: Sequence[bytes], deadline: Deadline, concurrency: int
    ) -> tuple[list[np.ndarray | ImgsearchError], set[str]]:
        """Embed every image: one result per image, in order, a vector or that image's error.

        Only errors that belong to the images (INVALID_ARGUMENT, or the
        Embedder failing on them: `_PER_IMAGE`) are returned per image;
        anything else (Embedder unreachable or overloaded, deadline) is raised,
        because it says nothing about the image. Also returns the model
        fingerprints the Embedder reported, so the caller can refuse vectors of
        another descriptor.
        """
        results: list[np.ndarray | ImgsearchError | None] = [None] * len(images)
        fingerprints: set[str] = set()
        groups, too_big = self.plan_calls(images)
        for index, reason in too_big.items():
            results[index] = InvalidArgumentError(reason)
        limiter = asyncio.Semaphore(concurrency)

        async def run(group: list[int]) -> None:
            try:
                async with limiter:
                    vectors, fingerprint = await self.embed([images[i] for i in group], deadline)
            except _PER_IMAGE as error:
                if len(group) == 1:
                    results[group[0]] = error
                    return
                # One bad image fails the whole call: find which, one by one.
                await run_all([run([index]) for index in group])
                return
            fingerprints.add(fingerprint)
            for index, vector in zip(group, vectors, strict=True):
                results[index] = vector

        await run_all([run(group) for group in groups])
        done = [result for result in results if result is not None]
        assert len(done) == len(images), "every image gets a vector or an error"
        return done, fingerprints
