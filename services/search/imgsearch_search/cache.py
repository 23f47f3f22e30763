"""The Redis cache: search results, and image-hash-to-embedding entries.

Results are never served stale after a write through this service: each
collection has a generation counter in Redis that Insert and Delete increment
after they change Milvus, and every result key contains the generation it was
computed under, so a write makes all older results unreachable at once (they
expire by TTL).

Several replicas: Session consistency guarantees a replica its own writes only,
so for `SETTLE_S` after a write another replica's Milvus reads may not show it
yet. The writer marks the new generation "unsettled" (a key that expires after
`SETTLE_S`, holding the writer's instance id); while it exists, only the writer
stores results under that generation. The others answer from Milvus uncached,
so a result that missed the write is never cached for `cache_ttl_s`.

If an increment fails (Redis down), this process stops reading results until
an increment succeeds; other replicas can then serve results at most
`cache_ttl_s` old, which is the documented bound.

Embeddings depend only on the image bytes and the model, so they are keyed by
the image's hash and the model's fingerprint (shared by every collection of
that descriptor; a new weights file, input size or projection gets new keys,
never an old vector) and never invalidated: a
repeated image query, or re-inserting known images (to change their labels,
say), skips the Embedder.

Redis is an optimisation, never a dependency: every call has a short timeout,
no retries, and after a failure the cache is skipped for `redis_retry_after_s`
(a circuit breaker), so a dead Redis costs one timeout per interval, not one
per request.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import redis.asyncio as redis
from prometheus_client import CollectorRegistry, Counter
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from imgsearch_search.outbound import redis_connection_options
from imgsearch_search.settings import SearchSettings

_log = logging.getLogger(__name__)

# Longer than Milvus needs to make a write visible to every replica's reads
# (a time tick, ~200 ms, on the Milvus 2.3 server; longer under load).
SETTLE_S = 2.0


class CacheMetrics:
    """Cache hits, misses and errors, by kind (result or embedding)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lookups = Counter(
            "search_cache_lookups",
            "Cache lookups by kind (result, embedding) and outcome (hit, miss, error, skipped).",
            ["kind", "outcome"],
            registry=registry,
        )


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
        self._unsettled_prefix = f"imgsearch:{digest}:unsettled:"
        # Embeddings depend on the image and the descriptor only: shared by collections.
        self._embedding_prefix = f"imgsearch:embedding:{fingerprint}:"
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
        self._invalidation_pending = False
        # Who we are in "unsettled" marks: one id per process and collection.
        self._instance = uuid.uuid4().hex
        self.available = self._enabled
        self.hits = 0
        self.misses = 0

    async def close(self) -> None:
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

    async def invalidate(self) -> None:
        """Make every cached result of this collection unreachable (call after a write)."""
        if self._client is None:
            return
        # Even with the breaker open, try: a missed bump must be retried.
        self._down_until = 0.0
        ok, generation = await self._command("invalidate", "INCR", self._generation_key)
        self._invalidation_pending = not ok
        if ok:
            await self._command(
                "mark unsettled",
                "SET",
                f"{self._unsettled_prefix}{generation}",
                self._instance,
                "PX",
                int(SETTLE_S * 1000),
            )

    async def _generation(self) -> str | None:
        if self._invalidation_pending:
            await self.invalidate()
            if self._invalidation_pending:
                return None
        ok, value = await self._command("generation", "GET", self._generation_key)
        if not ok:
            return None
        return value.decode() if value is not None else "0"

    # --- results -----------------------------------------------------------------------------

    async def get_result(self, query_key: str) -> tuple[str | None, bytes | None]:
        """(generation to store a result under, cached payload).

        The generation is None when a result computed now must not be stored.
        """
        if self._client is None:
            return None, None
        generation = await self._generation()
        if generation is None:
            self._metrics.lookups.labels("result", "skipped").inc()
            return None, None
        ok, values = await self._command(
            "get result",
            "MGET",
            f"{self._result_prefix}{generation}:{query_key}",
            f"{self._unsettled_prefix}{generation}",
        )
        if not ok:
            self._metrics.lookups.labels("result", "error").inc()
            return None, None
        value, unsettled_by = values
        if value is None:
            self.misses += 1
            self._metrics.lookups.labels("result", "miss").inc()
            if unsettled_by is not None and unsettled_by.decode() != self._instance:
                return None, None  # another replica just wrote: do not cache yet
            return generation, None
        self.hits += 1
        self._metrics.lookups.labels("result", "hit").inc()
        return generation, bytes(value)

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
        try:
            await pipeline.execute()
        except (RedisError, OSError) as error:
            self._failed("put embeddings", error)
            return
        self._succeeded()
