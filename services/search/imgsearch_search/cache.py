"""The Redis cache: search results, and image-hash-to-embedding entries.

Results are never served stale after a write through this service. Each
collection has a generation (`generations.py`: one Redis key, changed only by
atomic scripts), and every result key contains the generation token it was
computed under, so a write makes all older results unreachable at once (they
expire by TTL). Each write to Milvus is bracketed by two marks:

- `begin_write(window_s)` before it: a new token, under which nobody stores
  results until the write has had time to finish (`window_s`), so even if this
  process dies mid-write, no result computed before the write landed outlives it;
- `end_write(applied)` after it, *whatever happened to the caller* (the service
  shields it from cancellation): a new token again. When the write is known to
  have been applied, only this process (which reads its own writes) may store
  results for `SETTLE_S`, while other replicas' Milvus reads may still lag it;
  when its outcome is unknown (Milvus failed or timed out: it may still apply
  it), nobody stores results for `UNCERTAIN_S`.

If a mark fails (Redis down), this process stops reading results and retries
the mark in the background until Redis answers; meanwhile other replicas may
serve results at most `cache_ttl_s` old, which is the documented bound.

The generation key may be evicted (`allkeys-lru`) or lost with a Redis
restart: a missing generation is a fresh one, never an old one (see
`generations.py`), so eviction can cost cache hits but never correctness.

Embeddings depend only on the image bytes and the model, so they are keyed by
the image's hash and the model's fingerprint (shared by every collection of
that descriptor; a new weights file, input size or projection gets new keys,
never an old vector) and never invalidated: a
repeated image query, or re-inserting known images (to change their labels,
say), skips the Embedder.

An image query that asks for views (SEARCH_QUERY_VIEWS) needs more than the
whole-image vector: the views the Embedder found in it. Those are cached
apart, under `imgsearch:query-views:<fingerprint>:<detectors>:<image sha256>`
(`<detectors>`: GetModelResponse.query_views, a digest of the detectors' code,
or `none` from an Embedder that does not look), as the
Embedder's `Embedding` message (whole-image vector and views; an empty list
of views is an answer too: most photos have none). A whole-image entry never
answers a query that wants views (it cannot say whether the image has any),
and a views entry is only read by such queries; the views call also writes
the whole-image entry (the same vector), so Insert and view-less queries of
that image skip the Embedder too. Views come from the Embedder's detectors,
which the descriptor fingerprint does not cover, hence their own identity in
the key: an Embedder with other detectors (or with views turned off) gets
other keys at once, from its GetModel reply or its first reply with views.

Redis is an optimisation, never a dependency: every call has a short timeout,
no retries, and after a failure the cache is skipped for `redis_retry_after_s`
(a circuit breaker), so a dead Redis costs one timeout per interval, not one
per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import redis.asyncio as redis
from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry, Counter
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from imgsearch.common.errors import ImgsearchError
from imgsearch.v1 import embedder_pb2
from imgsearch_search.embedder_client import checked_query_embedding
from imgsearch_search.generations import MARK, READ, Generation, new_token
from imgsearch_search.outbound import redis_connection_options
from imgsearch_search.settings import SearchSettings

_log = logging.getLogger(__name__)

# Longer than Milvus needs to make a write visible to every replica's reads
# (a time tick, ~200 ms, on the Milvus 2.3 server; longer under load).
SETTLE_S = 2.0
# After a write whose outcome is unknown (Milvus failed or timed out): how long
# nobody stores results, so a write Milvus applies late is not cached around.
UNCERTAIN_S = 30.0


class CacheMetrics:
    """Cache hits, misses and errors, by kind (result, embedding or query_views)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lookups = Counter(
            "search_cache_lookups",
            "Cache lookups by kind (result, embedding, query_views) and outcome"
            " (hit, miss, error, skipped).",
            ["kind", "outcome"],
            registry=registry,
        )


def _parse_embedding(value: bytes, dimension: int) -> embedder_pb2.Embedding | None:
    """A cached Embedding as `checked_query_embedding` leaves it; None when it does not parse,
    a vector is not `dimension` long or the whole-image vector has no direction."""
    try:
        embedding = embedder_pb2.Embedding.FromString(bytes(value))
        return checked_query_embedding(embedding, dimension)
    except (DecodeError, ImgsearchError):
        return None


def _stricter(one: tuple[str, float], other: tuple[str, float]) -> tuple[str, float]:
    """One generation mark that restricts at least as much as both (owner, window_s)."""
    owner = one[0] if one[0] == other[0] else ""
    return owner, max(one[1], other[1])


class QueryCache:
    """Search results (one collection) and image embeddings (one model) in Redis."""

    def __init__(
        self, settings: SearchSettings, namespace: str, fingerprint: str, metrics: CacheMetrics
    ) -> None:
        """`namespace` names the Milvus, database, collection and fingerprint of the results;
        `fingerprint` is the Embedder's descriptor fingerprint (embedding keys)."""
        self._enabled = settings.cache_enabled
        self._result_ttl_s = settings.cache_ttl_s
        self._embedding_ttl_s = settings.embedding_cache_ttl_s
        self._retry_after_s = settings.redis_retry_after_s
        self._metrics = metrics
        # Namespace: which Milvus, database, collection and descriptor the entries describe.
        digest = hashlib.sha256(namespace.encode()).hexdigest()[:16]
        self._generation_key = f"imgsearch:{digest}:generation"
        self._result_prefix = f"imgsearch:{digest}:result:"
        # Embeddings depend on the image and the descriptor only: shared by collections.
        self._embedding_prefix = f"imgsearch:embedding:{fingerprint}:"
        # A query image's whole-image vector and views (an Embedding message).
        self._views_prefix = f"imgsearch:query-views:{fingerprint}:"
        self._client: redis.Redis | None = None
        if self._enabled:
            # TLS (rediss://) and the password file: imgsearch_search.outbound.
            url, security_options = redis_connection_options(settings)
            self._client = redis.Redis.from_url(
                url,
                **security_options,
                socket_timeout=settings.redis_timeout_s,
                socket_connect_timeout=settings.redis_timeout_s,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=30,
            )
        self._down_until = 0.0
        # The generation mark still to be written after a failure: (owner, window_s).
        self._pending_mark: tuple[str, float] | None = None
        self._retrier: asyncio.Task[None] | None = None
        # Who we are in generation marks: one id per process and collection.
        self._instance = uuid.uuid4().hex
        self.available = self._enabled
        self.hits = 0
        self.misses = 0

    async def close(self) -> None:
        if self._retrier is not None:
            self._retrier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrier
        if self._client is not None:
            await self._client.aclose()

    # --- circuit breaker ---------------------------------------------------------------------

    def _usable(self) -> bool:
        return self._client is not None and time.monotonic() >= self._down_until

    def _failed(self, operation: str, error: Exception) -> None:
        if self.available:
            _log.warning(
                "redis cache unavailable; skipping it",
                extra={"operation": operation, "error": repr(error)},
            )
        self.available = False
        self._down_until = time.monotonic() + self._retry_after_s

    def _succeeded(self) -> None:
        if not self.available:
            _log.info("redis cache available again")
        self.available = True

    async def _command(self, operation: str, *args: Any) -> tuple[bool, Any]:
        """Run one Redis command; (False, None) when Redis is skipped or failed."""
        if not self._usable():
            return False, None
        assert self._client is not None
        try:
            value = await self._client.execute_command(*args)
        except (RedisError, OSError) as error:
            self._failed(operation, error)
            return False, None
        self._succeeded()
        return True, value

    # --- generations -------------------------------------------------------------------------

    async def _mark(self, owner: str, window_s: float) -> bool:
        """Write a new generation token with its restriction (one atomic script)."""
        assert self._client is not None
        # Even with the breaker open, try: a missed mark must not wait.
        self._down_until = 0.0
        ok, _ = await self._command(
            "mark generation",
            "EVAL", MARK, 1, self._generation_key, new_token(), owner, int(window_s * 1000),
            self._instance,
        )  # fmt: skip
        return ok

    async def begin_write(self, window_s: float) -> None:
        """Before a write that may take `window_s`: retire every result; nobody stores any."""
        if self._client is None:
            return
        if not await self._mark(f"~{self._instance}", window_s + SETTLE_S):
            self._remember((self._instance, SETTLE_S))

    async def end_write(self, applied: bool) -> None:
        """After a write (`applied`: Milvus said it succeeded; else its outcome is unknown)."""
        if self._client is None:
            return
        mark = (self._instance, SETTLE_S) if applied else ("", UNCERTAIN_S)
        if self._pending_mark is not None:
            mark = _stricter(self._pending_mark, mark)
        if await self._mark(*mark):
            self._pending_mark = None
        else:
            self._remember(mark)

    async def invalidate(self) -> None:
        """Retire every cached result now (as a write of this process, applied at once)."""
        await self.begin_write(0.0)
        await self.end_write(applied=True)

    def _remember(self, mark: tuple[str, float]) -> None:
        """Keep a failed mark to retry; until it succeeds this process reads no results."""
        pending = self._pending_mark
        self._pending_mark = mark if pending is None else _stricter(pending, mark)
        if self._retrier is None or self._retrier.done():
            self._retrier = asyncio.create_task(self._retry_marks())

    async def _retry_marks(self) -> None:
        while self._pending_mark is not None:
            await asyncio.sleep(self._retry_after_s)
            pending = self._pending_mark
            if pending is not None and await self._mark(*pending):
                if self._pending_mark == pending:
                    self._pending_mark = None
                _log.info("generation mark written after a Redis outage")

    async def _generation(self) -> Generation | None:
        if self._pending_mark is not None:
            return None
        assert self._client is not None
        ok, reply = await self._command(
            "generation", "EVAL", READ, 1, self._generation_key, new_token(),
            int(SETTLE_S * 1000),
        )  # fmt: skip
        if not ok:
            return None
        return Generation.parse(reply[0], reply[1])

    # --- results -----------------------------------------------------------------------------

    async def get_result(self, query_key: str) -> tuple[str | None, bytes | None]:
        """(generation token to store a result under, cached payload).

        The token is None when a result computed now must not be stored.
        """
        if self._client is None:
            return None, None
        generation = await self._generation()
        if generation is None:
            self._metrics.lookups.labels("result", "skipped").inc()
            return None, None
        ok, value = await self._command(
            "get result", "GET", f"{self._result_prefix}{generation.token}:{query_key}"
        )
        if not ok:
            self._metrics.lookups.labels("result", "error").inc()
            return None, None
        token = generation.token if generation.may_store(self._instance) else None
        if value is None:
            self.misses += 1
            self._metrics.lookups.labels("result", "miss").inc()
            return token, None
        self.hits += 1
        self._metrics.lookups.labels("result", "hit").inc()
        return token, bytes(value)

    async def put_result(self, generation: str | None, query_key: str, payload: bytes) -> None:
        if generation is None:
            return
        await self._command(
            "put result",
            "SET",
            f"{self._result_prefix}{generation}:{query_key}",
            payload,
            "EX",
            self._result_ttl_s,
        )

    # --- embeddings --------------------------------------------------------------------------

    async def get_embeddings(
        self, image_sha256s: Sequence[str], dimension: int
    ) -> list[np.ndarray | None]:
        """Cached embeddings of images by content hash (None where unknown), in order."""
        if not image_sha256s:
            return []
        keys = [f"{self._embedding_prefix}{digest}" for digest in image_sha256s]
        ok, values = await self._command("get embeddings", "MGET", *keys)
        if not ok:
            self._metrics.lookups.labels("embedding", "error").inc(len(keys))
            return [None] * len(keys)
        found: list[np.ndarray | None] = []
        for value in values:
            # A wrong length means another model or a corrupt entry: ignore it.
            if value is None or len(value) != dimension * 4:
                self._metrics.lookups.labels("embedding", "miss").inc()
                found.append(None)
            else:
                self._metrics.lookups.labels("embedding", "hit").inc()
                found.append(np.frombuffer(value, dtype="<f4").copy())
        return found

    async def put_embeddings(self, vectors: Mapping[str, np.ndarray]) -> None:
        """Remember embeddings by image content hash (one round trip)."""
        if not vectors or not self._usable():
            return
        assert self._client is not None
        pipeline = self._client.pipeline(transaction=False)
        for digest, vector in vectors.items():
            pipeline.set(
                f"{self._embedding_prefix}{digest}",
                vector.astype("<f4").tobytes(),
                ex=self._embedding_ttl_s,
            )
        await self._execute(pipeline, "put embeddings")

    async def get_query_embedding(
        self, image_sha256: str, dimension: int, detectors: str
    ) -> embedder_pb2.Embedding | None:
        """The cached whole-image vector and views of a query image (None when unknown),
        as found by the query-view detectors of identity `detectors`
        (GetModelResponse.query_views).

        An entry that does not parse, or holds a vector of another length, is ignored.
        """
        ok, value = await self._command(
            "get query views", "GET", self._views_key(image_sha256, detectors)
        )
        if not ok:
            self._metrics.lookups.labels("query_views", "error").inc()
            return None
        embedding = _parse_embedding(value, dimension) if value is not None else None
        self._metrics.lookups.labels("query_views", "miss" if embedding is None else "hit").inc()
        return embedding

    def _views_key(self, image_sha256: str, detectors: str) -> str:
        return f"{self._views_prefix}{detectors or 'none'}:{image_sha256}"

    async def put_query_embedding(
        self, image_sha256: str, embedding: embedder_pb2.Embedding, detectors: str
    ) -> None:
        """Remember a query image's vector and views found by the detectors of identity
        `detectors` ("" when none looked), and its whole-image entry (one round trip)."""
        if not self._usable():
            return
        assert self._client is not None
        pipeline = self._client.pipeline(transaction=False)
        pipeline.set(
            self._views_key(image_sha256, detectors),
            embedding.SerializeToString(),
            ex=self._embedding_ttl_s,
        )
        pipeline.set(
            f"{self._embedding_prefix}{image_sha256}",
            np.asarray(embedding.vector, dtype="<f4").tobytes(),
            ex=self._embedding_ttl_s,
        )
        await self._execute(pipeline, "put query views")

    async def _execute(self, pipeline: Any, operation: str) -> None:
        """Run a pipeline of writes; a failure is `operation`'s, as for `_command`."""
        try:
            await pipeline.execute()
        except (RedisError, OSError) as error:
            self._failed(operation, error)
            return
        self._succeeded()
