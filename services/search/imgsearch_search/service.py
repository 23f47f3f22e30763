"""The Search gRPC servicer: Insert (Embed+Insert), Search, Get, Delete, Stats, List and more.

List and FindDuplicates are implemented in their own modules (`browse`,
`duplicates`); thumbnails are made at Insert by `thumbnails`.

Handlers validate at the boundary and raise `imgsearch.common.errors` types;
the server interceptor turns those into statuses. Dependencies (Embedder,
Milvus, Redis) are reached through `EmbedderClient`, `MilvusStore` and
`QueryCache`, which already speak that error taxonomy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np

from imgsearch.common.errors import (
    FailedPreconditionError,
    ImgsearchError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from imgsearch.common.query_views import VIEW_KINDS, WHOLE_IMAGE, merge_view_hits
from imgsearch.v1 import embedder_pb2, search_pb2, search_pb2_grpc
from imgsearch_search.browse import Browser
from imgsearch_search.cache import QueryCache
from imgsearch_search.duplicates import DuplicateFinder
from imgsearch_search.embedder_client import Deadline, EmbedderClient
from imgsearch_search.items import stored_item
from imgsearch_search.metrics import QueryMetrics
from imgsearch_search.settings import SearchSettings
from imgsearch_search.store import MilvusStore, ScoredRow
from imgsearch_search.thumbnails import ThumbnailMaker, to_stored
from imgsearch_search.validation import (
    LabelFilter,
    check_id,
    check_ids,
    check_labels,
    check_uri,
    content_id,
    parse_filter,
)

_log = logging.getLogger(__name__)

# Milvus refuses searches for more hits than this.
MILVUS_MAX_TOP_K = 16384
# A write that failed with these was refused before anything was written.
_REFUSED = (InvalidArgumentError, ResourceExhaustedError, FailedPreconditionError)
T = TypeVar("T")


@dataclass(frozen=True)
class _Query:
    """A validated SearchRequest."""

    kind: str  # image, id or vector
    top_k: int
    label_filter: LabelFilter | None
    min_score: float | None
    cache_key: str
    image: bytes = b""
    item_id: str = ""
    vector: np.ndarray | None = None


def _unit(vector: np.ndarray) -> np.ndarray:
    """Unit-norm float32 copy (computed in float64, so x and 2x give the same bits)."""
    wide = vector.astype(np.float64)
    return (wide / np.linalg.norm(wide)).astype(np.float32)


def _attach_thumbnails(
    rows: list[dict[str, Any]],
    made: dict[int, bytes | ImgsearchError],
    ids: list[str],
    enabled: bool,
) -> dict[str, str]:
    """Put each row's thumbnail text in it; returns a warning per id stored without one.

    An item whose thumbnail cannot be made is still stored (the Embedder
    accepted its image, so search works): its thumbnail is empty, and its
    ItemResult says why, so nothing is lost silently.
    """
    if not enabled:
        return {}
    by_id = {ids[index]: result for index, result in made.items()}
    warnings: dict[str, str] = {}
    for row in rows:
        result = by_id.get(row["id"], b"")
        if isinstance(result, ImgsearchError):
            warnings[row["id"]] = f"stored without a thumbnail: {result.message}"
            _log.warning("no thumbnail", extra={"id": row["id"][:80], "reason": result.message})
            result = b""
        row["thumbnail"] = to_stored(result)
    return warnings


def _check_items(
    items: Sequence[search_pb2.Item], images: Sequence[bytes]
) -> tuple[list[str], dict[int, ImgsearchError]]:
    """Each item's id (its content hash when empty) and the items that fail validation."""
    ids: list[str] = []
    failures: dict[int, ImgsearchError] = {}
    first_index: dict[str, int] = {}
    for index, (item, image) in enumerate(zip(items, images, strict=True)):
        item_id = item.id or (content_id(image) if image else "")
        ids.append(item_id)
        where = f"items[{index}]"
        try:
            if item.id:
                check_id(item.id, f"{where}.id")
            if not image:
                raise InvalidArgumentError(f"{where}.image is empty")
            check_uri(item.uri, f"{where}.uri")
            check_labels(item.labels, f"{where}.labels")
            if item_id in first_index:
                raise InvalidArgumentError(
                    f"{where}.id {item_id[:80]!r} repeats items[{first_index[item_id]}]"
                    " in the same request"
                )
        except InvalidArgumentError as error:
            failures[index] = error
            continue
        first_index[item_id] = index
    return ids, failures


def _insert_response(
    ids: list[str], failures: dict[int, ImgsearchError], inserted: int, warnings: dict[str, str]
) -> search_pb2.InsertResponse:
    """One ItemResult per item, in request order: its error, or 0 and any warning."""
    results = []
    for index, item_id in enumerate(ids):
        failure = failures.get(index)
        if failure is None:
            results.append(
                search_pb2.ItemResult(id=item_id, code=0, message=warnings.get(item_id, ""))
            )
        else:
            code = failure.code.value[0]
            results.append(search_pb2.ItemResult(id=item_id, code=code, message=failure.message))
    return search_pb2.InsertResponse(results=results, inserted=inserted)


def _forget_write(writes: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def forget(task: asyncio.Future[Any]) -> None:
        writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.debug("a write finished with an error", extra={"error": repr(task.exception())})

    return forget


def _hit(row: ScoredRow, score: float, view: str) -> search_pb2.Hit:
    # Cosine similarity of unit vectors can come back a hair outside [-1, 1]
    # (and a view's score less the margin can go below -1).
    return search_pb2.Hit(
        id=row.id,
        score=min(1.0, max(-1.0, score)),
        uri=row.uri,
        labels=row.labels,
        matched_view=view,
    )


def _query_vectors(embedding: embedder_pb2.Embedding) -> list[tuple[str, np.ndarray]]:
    """An image query's vectors: the whole image's first, then each view's, with its kind."""
    vectors = [(WHOLE_IMAGE, np.asarray(embedding.vector, dtype=np.float32))]
    vectors += [(view.kind, np.asarray(view.vector, dtype=np.float32)) for view in embedding.views]
    return vectors


class SearchService(search_pb2_grpc.SearchServicer):
    """Implements imgsearch.v1.Search over an Embedder, a Milvus collection and Redis."""

    def __init__(
        self,
        settings: SearchSettings,
        embedder: EmbedderClient,
        store: MilvusStore,
        cache: QueryCache,
        metrics: QueryMetrics,
        thumbnails: ThumbnailMaker,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._embedder = embedder
        self._store = store
        self._cache = cache
        self._thumbnails = thumbnails
        self._browser = Browser(store)
        self._duplicates = DuplicateFinder(settings, store)
        self._insert_bytes = 0  # bytes of the Insert requests being processed
        self._writes: set[asyncio.Future[Any]] = set()  # writes in progress (see _write)
        self.ready = False  # set by the server once the collection and Embedder are known

    def _require_ready(self) -> None:
        if not self.ready:
            raise UnavailableError(
                "the Search service is starting: waiting for the Embedder and Milvus"
            )

    def _deadline(self, context: grpc.aio.ServicerContext, default_s: float) -> Deadline:
        return Deadline.for_call(context, default_s)

    # --- Insert ------------------------------------------------------------------------------

    async def Insert(
        self, request: search_pb2.InsertRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.InsertResponse:
        self._require_ready()
        items = request.items
        limit = self._settings.max_insert_items
        if not items:
            raise InvalidArgumentError("items is empty: give at least one item")
        if len(items) > limit:
            raise InvalidArgumentError(
                f"items has {len(items)} items, over the limit of {limit} per request"
            )
        deadline = self._deadline(
            context, self._settings.embedder_timeout_s + self._settings.milvus_timeout_s
        )
        info = self._store.info
        assert info is not None
        with self._insert_budget(request.ByteSize()):
            # Each read of a bytes field copies it: read every image once.
            images = [item.image for item in items]
            ids, failures = _check_items(items, images)
            valid = [index for index in range(len(items)) if index not in failures]
            # Thumbnails are made on worker threads while the Embedder works.
            thumbnailing = asyncio.ensure_future(
                self._thumbnails.make_each([images[i] for i in valid] if info.thumbnails else [])
            )
            try:
                digests = {index: hashlib.sha256(images[index]).hexdigest() for index in valid}
                vectors = await self._embed_items(images, digests, deadline, failures)
                made = dict(zip(valid, await thumbnailing, strict=False))
            finally:
                thumbnailing.cancel()  # a no-op once done; an Embedder failure leaves it unwanted
            del images  # embedded and thumbnailed: only vectors and thumbnails are needed now
            rows = self._rows(items, ids, digests, vectors)
            warnings = _attach_thumbnails(rows, made, ids, info.thumbnails)
            if rows:
                timeout = deadline.timeout(self._settings.milvus_timeout_s)
                await self._write(timeout, self._store.upsert(rows, timeout))
        return _insert_response(ids, failures, len(rows), warnings)

    @contextlib.contextmanager
    def _insert_budget(self, size: int) -> Iterator[None]:
        """Admit an Insert of `size` bytes (SEARCH_INSERT_BYTES_IN_FLIGHT), or refuse it."""
        limit = self._settings.insert_bytes_in_flight
        if self._insert_bytes and self._insert_bytes + size > limit:
            raise ResourceExhaustedError(
                f"Search is already processing {self._insert_bytes} bytes of Insert requests; this"
                f" request's {size} bytes would go over its limit"
                f" (SEARCH_INSERT_BYTES_IN_FLIGHT={limit}): retry with backoff"
            )
        self._insert_bytes += size
        try:
            yield
        finally:
            self._insert_bytes -= size

    async def _embed_items(
        self,
        images: Sequence[bytes],
        digests: dict[int, str],
        deadline: Deadline,
        failures: dict[int, ImgsearchError],
    ) -> dict[int, np.ndarray]:
        """Vectors of the valid items (cache first, then the Embedder); failures by index.

        Items with the same image bytes (the same digest) are embedded once.
        """
        info = self._store.info
        assert info is not None
        valid = list(digests)
        vectors: dict[int, np.ndarray] = {}
        known = await self._cache.get_embeddings([digests[i] for i in valid], info.dimension)
        for index, vector in zip(valid, known, strict=True):
            if vector is not None:
                vectors[index] = vector
        first: dict[str, int] = {}  # digest -> the first item to embed with it
        for index in valid:
            if index not in vectors:
                first.setdefault(digests[index], index)
        todo = list(first.values())
        if not todo:
            return vectors
        embedded, fingerprints = await self._embedder.embed_each(
            [images[i] for i in todo], deadline, self._settings.embed_concurrency
        )
        if fingerprints - {info.fingerprint}:
            raise FailedPreconditionError(
                f"the Embedder now serves model fingerprint {sorted(fingerprints)} but"
                f" collection {info.name!r} holds {info.model!r} (fingerprint"
                f" {info.fingerprint}); nothing was stored"
            )
        by_digest = {digests[i]: result for i, result in zip(todo, embedded, strict=True)}
        for index in valid:
            result = by_digest.get(digests[index])
            if isinstance(result, ImgsearchError):
                failures[index] = type(result)(f"items[{index}].image: {result.message}")
            elif result is not None and index not in vectors:
                vectors[index] = result
        await self._cache.put_embeddings({digests[i]: vectors[i] for i in todo if i in vectors})
        return vectors

    def _rows(
        self,
        items: Sequence[search_pb2.Item],
        ids: list[str],
        digests: dict[int, str],
        vectors: dict[int, np.ndarray],
    ) -> list[dict[str, Any]]:
        info = self._store.info
        assert info is not None
        return [
            {
                "id": ids[index],
                "vector": vectors[index].tolist(),
                "uri": items[index].uri,
                "labels": dict(items[index].labels),
                "content_sha256": digests[index],
                "model": info.model,
            }
            for index in digests
            if index in vectors
        ]

    # --- writes ------------------------------------------------------------------------------

    async def _write(self, window_s: float, write: Awaitable[T]) -> T:
        """Run a Milvus write so that the cache hears of it whatever happens to the caller.

        The write and its generation marks (`QueryCache.begin_write`/`end_write`)
        run in a task the caller's cancellation or deadline cannot stop: a write
        Milvus applied is never left behind cached results, and a write whose
        outcome is unknown (Milvus failed or timed out) is treated as possibly applied.
        """
        task = asyncio.ensure_future(self._bracketed(window_s, write))
        self._writes.add(task)
        task.add_done_callback(_forget_write(self._writes))
        return await asyncio.shield(task)

    async def _bracketed(self, window_s: float, write: Awaitable[T]) -> T:
        await self._cache.begin_write(window_s)
        known = False
        try:
            result = await write
            known = True
            return result
        except _REFUSED:
            known = True  # refused before anything was written
            raise
        finally:
            await self._cache.end_write(applied=known)

    async def wait_for_writes(self, timeout_s: float) -> None:
        """Let writes whose callers are gone finish (and mark the cache), up to `timeout_s`."""
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=timeout_s)

    # --- Search ------------------------------------------------------------------------------

    def _parse_query(self, request: search_pb2.SearchRequest) -> _Query:
        settings = self._settings
        info = self._store.info
        assert info is not None
        top_k = request.top_k or settings.default_top_k
        if top_k > settings.max_top_k:
            raise InvalidArgumentError(
                f"top_k is {request.top_k}, over the limit of {settings.max_top_k}"
            )
        label_filter = parse_filter(request.filter)
        min_score: float | None = None
        if request.HasField("min_score"):
            min_score = request.min_score
            if not (math.isfinite(min_score) and -1.0 <= min_score <= 1.0):
                raise InvalidArgumentError(
                    f"min_score is {min_score:g}, outside [-1, 1]: scores are cosine similarities"
                )
        identity: dict[str, Any] = {
            "top_k": top_k,
            "filter": label_filter.canonical if label_filter else "",
            "min_score": None if min_score is None else float(np.float32(min_score)),
        }
        kind = request.WhichOneof("query")
        image, item_id, vector = b"", "", None
        if kind == "image":
            image = request.image
            if not image:
                raise InvalidArgumentError("image is empty")
            identity["image"] = hashlib.sha256(image).hexdigest()
            # Views change an image query's hits (and only an image query's); which
            # views depends on the Embedder's detectors.
            identity["query_views"] = settings.query_views and self._embedder.views_identity
            identity["view_margin"] = settings.view_margin
        elif kind == "id":
            item_id = request.id
            check_id(item_id)
            identity["id"] = item_id
        elif kind == "vector":
            values = np.asarray(request.vector.values, dtype=np.float32)
            if values.shape[0] != info.dimension:
                raise InvalidArgumentError(
                    f"vector has {values.shape[0]} values; the collection holds"
                    f" {info.dimension}-d vectors of model {info.model!r}"
                )
            if not np.all(np.isfinite(values)):
                raise InvalidArgumentError("vector contains NaN or infinite values")
            if not np.any(values):
                raise InvalidArgumentError("vector is all zeros; it has no direction to search")
            vector = _unit(values)
            identity["vector"] = hashlib.sha256(vector.tobytes()).hexdigest()
        else:
            raise InvalidArgumentError("query is missing: set one of image, id or vector")
        cache_key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return _Query(
            kind=kind,
            top_k=top_k,
            label_filter=label_filter,
            min_score=min_score,
            cache_key=cache_key,
            image=image,
            item_id=item_id,
            vector=vector,
        )

    async def _embed_query(self, image: bytes, deadline: Deadline) -> list[tuple[str, np.ndarray]]:
        """The query image's vectors, (view kind, vector), the whole image's first.

        With SEARCH_QUERY_VIEWS the Embedder is asked for views too
        (EmbedRequest.query_views), and the cache holds them apart from
        whole-image entries (`QueryCache.get_query_embedding`); without it, only
        the whole-image vector is asked for and cached.
        """
        info = self._store.info
        assert info is not None
        digest = hashlib.sha256(image).hexdigest()
        views = self._settings.query_views
        if views:
            detectors = self._embedder.views_identity
            known = await self._cache.get_query_embedding(digest, info.dimension, detectors)
            if known is not None:
                return _query_vectors(known)
        else:
            cached = (await self._cache.get_embeddings([digest], info.dimension))[0]
            if cached is not None:
                return [(WHOLE_IMAGE, cached)]
        limits = self._embedder.info
        if limits is not None and len(image) > limits.max_request_bytes:
            raise InvalidArgumentError(
                f"image is {len(image)} bytes, over the Embedder's limit of"
                f" {limits.max_request_bytes} bytes"
            )
        try:
            embedded = await self._embedder.embed_query(image, deadline, views=views)
        except InvalidArgumentError as error:
            raise InvalidArgumentError(f"image: {error.message}") from None
        if embedded.fingerprint != info.fingerprint:
            raise FailedPreconditionError(
                f"the Embedder now serves model fingerprint {embedded.fingerprint} but"
                f" collection {info.name!r} holds {info.model!r} (fingerprint {info.fingerprint})"
            )
        vectors = _query_vectors(embedded.embedding)
        if views:
            await self._cache.put_query_embedding(digest, embedded.embedding, embedded.query_views)
        else:
            await self._cache.put_embeddings({digest: vectors[0][1]})
        return vectors

    def _merged_hits(
        self,
        query: _Query,
        kinds: Sequence[str],
        lists: Sequence[list[ScoredRow]],
        first: search_pb2.Hit | None,
    ) -> list[search_pb2.Hit]:
        """The hits of every query vector merged per item (`merge_view_hits`), best first.

        An id query's own item is left out of Milvus's lists and put first
        (`first`). min_score is compared with each hit's score as the caller
        receives it (float32, clamped to [-1, 1]); the hits being sorted,
        filtering them after taking top_k keeps the same hits as filtering first.
        """
        rows: dict[str, ScoredRow] = {}
        for found in lists:
            for row in found:
                rows.setdefault(row.id, row)
        own = query.item_id if query.kind == "id" else None
        pairs = [
            (kind, [(row.id, row.score) for row in found if row.id != own])
            for kind, found in zip(kinds, lists, strict=True)
        ]
        wanted = query.top_k - (1 if first is not None else 0)
        merged = (
            merge_view_hits(pairs, margin=self._settings.view_margin, top_k=wanted)
            if wanted > 0
            else []
        )
        hits = [_hit(rows[hit.key], hit.score, hit.view) for hit in merged]
        if first is not None:
            hits.insert(0, first)
        if query.min_score is not None:
            hits = [hit for hit in hits if hit.score >= query.min_score]
        return hits

    async def Search(
        self, request: search_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.SearchResponse:
        self._require_ready()
        started = time.perf_counter()
        query = self._parse_query(request)
        deadline = self._deadline(
            context, self._settings.embedder_timeout_s + self._settings.milvus_timeout_s
        )
        generation, cached = await self._cache.get_result(query.cache_key)
        if cached is not None:
            response = search_pb2.SearchResponse.FromString(cached)
            response.cached = True
            self._metrics.latency.labels(query.kind, "hit").observe(time.perf_counter() - started)
            return response

        first: search_pb2.Hit | None = None
        if query.kind == "image":
            vectors = await self._embed_query(query.image, deadline)
        elif query.kind == "id":
            found = await self._store.get([query.item_id], True, deadline.timeout())
            row = found.get(query.item_id)
            if row is None or row.vector is None:
                raise NotFoundError(f"id {query.item_id[:80]!r} is not in the collection")
            vectors = [(WHOLE_IMAGE, _unit(np.asarray(row.vector, dtype=np.float32)))]
            # The item itself is the best match by definition: first, unless
            # the filter leaves it out like any other item.
            if query.label_filter is None or query.label_filter.matches(row.labels):
                first = search_pb2.Hit(id=row.id, score=1.0, uri=row.uri, labels=row.labels)
        else:
            assert query.vector is not None
            vectors = [(WHOLE_IMAGE, query.vector)]

        # One extra hit in id queries: the item itself comes back from Milvus too.
        limit = min(query.top_k + (1 if query.kind == "id" else 0), MILVUS_MAX_TOP_K)
        expression = query.label_filter.milvus_expression() if query.label_filter else ""
        # One Milvus call for the whole image and its views, each with the same filter and limit.
        lists = await self._store.search_many(
            [vector.tolist() for _, vector in vectors], limit, expression, deadline.timeout()
        )
        hits = self._merged_hits(query, [kind for kind, _ in vectors], lists, first)
        if query.kind == "image" and hits:
            view = hits[0].matched_view
            # The label's values stay known ones whatever kinds an Embedder makes up.
            label = "whole" if not view else view if view in VIEW_KINDS else "other"
            self._metrics.top_hit_views.labels(label).inc()
        response = search_pb2.SearchResponse(hits=hits)
        await self._cache.put_result(generation, query.cache_key, response.SerializeToString())
        self._metrics.latency.labels(query.kind, "miss").observe(time.perf_counter() - started)
        return response

    # --- Get, Delete, Stats ------------------------------------------------------------------

    async def Get(
        self, request: search_pb2.GetRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.GetResponse:
        self._require_ready()
        ids = check_ids(request.ids)
        deadline = self._deadline(context, self._settings.milvus_timeout_s)
        found = await self._store.get(
            ids, request.include_vectors, deadline.timeout(), request.include_thumbnails
        )
        response = search_pb2.GetResponse()
        for item_id in ids:
            row = found.get(item_id)
            if row is None:
                response.missing_ids.append(item_id)
                continue
            response.items.append(stored_item(row))
        return response

    async def Delete(
        self, request: search_pb2.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.DeleteResponse:
        self._require_ready()
        ids = check_ids(request.ids)
        deadline = self._deadline(context, self._settings.milvus_timeout_s)
        timeout = deadline.timeout()
        deleted = await self._write(timeout, self._store.delete(ids, timeout))
        return search_pb2.DeleteResponse(deleted=deleted)

    async def Stats(
        self, request: search_pb2.StatsRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.StatsResponse:
        self._require_ready()
        info = self._store.info
        assert info is not None
        deadline = self._deadline(context, self._settings.milvus_timeout_s)
        count = await self._store.count(deadline.timeout())
        return search_pb2.StatsResponse(
            item_count=count,
            dimension=info.dimension,
            model=info.model,
            index_type=info.index_type,
            metric_type=info.metric_type,
            cache_hits=self._cache.hits,
            cache_misses=self._cache.misses,
            collection=info.name,
            cache_available=self._cache.available,
        )

    # --- List, FindDuplicates (imgsearch_search.browse, imgsearch_search.duplicates) -----------

    async def List(
        self, request: search_pb2.ListRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.ListResponse:
        self._require_ready()
        deadline = self._deadline(context, self._settings.milvus_timeout_s)
        return await self._browser.list(request, deadline)

    async def FindDuplicates(
        self, request: search_pb2.FindDuplicatesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[search_pb2.FindDuplicatesResponse]:
        self._require_ready()
        async for message in self._duplicates.find(request):
            yield message
