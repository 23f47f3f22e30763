"""The image collection in Milvus: schema, index, and the reads and writes Search needs.

pymilvus' `MilvusClient` is synchronous; every call runs on a small thread pool
so the event loop never blocks (its async client cannot create an index on
Milvus Lite, whose server lacks the AllocTimestamp RPC it waits with). The
same code runs against Milvus standalone/distributed and the Milvus Lite
server; where they differ (JSON `in`, missing JSON keys, delete counts, row
statistics) the store only uses what behaves the same on both.

Every expression sent to Milvus is built from quoted literals
(`validation.milvus_literal`); pymilvus' own get/delete by id are not used
because they paste ids between quotes unescaped.

Writes go through one asyncio lock per process: Milvus Lite does not support
concurrent writers to a collection, and it keeps Delete's "how many were
stored" count exact.

Work waiting for Milvus is bounded: at most `SEARCH_MILVUS_MAX_PENDING` reads
and writes may wait for or hold one of the `MILVUS_THREADS` threads (writes
waiting for the write lock included); beyond that a call is refused at once
with RESOURCE_EXHAUSTED instead of queueing without limit. Failed pymilvus
calls are classified by cause in `milvus_errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from imgsearch.common.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    ResourceExhaustedError,
    UnavailableError,
)
from imgsearch_search.embedder_client import Deadline
from imgsearch_search.metrics import DependencyMetrics
from imgsearch_search.milvus_errors import milvus_error
from imgsearch_search.outbound import milvus_connection_options, redact_url
from imgsearch_search.settings import SearchSettings
from imgsearch_search.validation import (
    MAX_ID_BYTES,
    MAX_URI_BYTES,
    ids_expression,
    milvus_literal,
)

_log = logging.getLogger(__name__)
T = TypeVar("T")

# Collection properties written at creation: what the vectors mean.
MODEL_PROPERTY = "imgsearch.model"
# The Embedder's descriptor fingerprint: vectors are comparable only under the same one.
FINGERPRINT_PROPERTY = "imgsearch.fingerprint"
SCHEMA_PROPERTY = "imgsearch.schema"
# 2: the `thumbnail` field (imgsearch_search.thumbnails). A schema-1 collection
# is served without thumbnails, with a warning that says how to re-index.
SCHEMA_VERSION = "2"
VECTOR_FIELD = "vector"
THUMBNAIL_FIELD = "thumbnail"
MAX_THUMBNAIL_CHARS = 65_535
# Ids read at once to find a page (Milvus refuses a query limit above 16,384).
PAGE_SAMPLE = 16_384
MAX_MODEL_BYTES = 256
STORED_FIELDS = ("id", "uri", "labels", "content_sha256", "model")
# Threads mostly wait on Milvus; enough of them that concurrent searches are
# not queued here rather than in Milvus.
MILVUS_THREADS = 16


@dataclass(frozen=True)
class CollectionInfo:
    """The collection as it exists in Milvus."""

    name: str
    model: str
    fingerprint: str
    dimension: int
    index_type: str
    metric_type: str
    # Whether the collection has the thumbnail field (schema 2 and later).
    thumbnails: bool = True


@dataclass(frozen=True)
class StoredRow:
    """One stored item (vector only when asked for)."""

    id: str
    uri: str
    labels: dict[str, str]
    content_sha256: str
    model: str
    vector: list[float] | None
    # The stored thumbnail's text (base64), when asked for; "" otherwise.
    thumbnail: str = ""


@dataclass(frozen=True)
class ScoredRow:
    """One search hit as Milvus returned it."""

    id: str
    score: float
    uri: str
    labels: dict[str, str]


def _row(entity: Mapping[str, Any], with_vector: bool) -> StoredRow:
    vector = entity.get(VECTOR_FIELD) if with_vector else None
    return StoredRow(
        id=str(entity["id"]),
        uri=str(entity.get("uri") or ""),
        labels={str(k): str(v) for k, v in (entity.get("labels") or {}).items()},
        content_sha256=str(entity.get("content_sha256") or ""),
        model=str(entity.get("model") or ""),
        vector=[float(x) for x in vector] if vector is not None else None,
        thumbnail=str(entity.get(THUMBNAIL_FIELD) or ""),
    )


def _scored_rows(hits: Sequence[Mapping[str, Any]]) -> list[ScoredRow]:
    """One query vector's Milvus hits as ScoredRows, best first."""
    rows = []
    for hit in hits:
        entity = hit.get("entity") or {}
        rows.append(
            ScoredRow(
                id=str(hit["id"]),
                score=float(hit["distance"]),
                uri=str(entity.get("uri") or ""),
                labels={str(k): str(v) for k, v in (entity.get("labels") or {}).items()},
            )
        )
    rows.sort(key=lambda row: row.score, reverse=True)
    return rows


def _and(*expressions: str) -> str:
    """Milvus expressions joined by `and` (empty ones left out)."""
    return " and ".join(f"({e})" for e in expressions if e)


def _index_settings(settings: SearchSettings) -> dict[str, str]:
    """The index build parameters the settings ask for, as Milvus describes them."""
    wanted = {"index_type": settings.index_type, "metric_type": settings.metric_type}
    if settings.index_type == "HNSW":
        wanted |= {"M": str(settings.hnsw_m), "efConstruction": str(settings.hnsw_ef_construction)}
    elif settings.index_type == "IVF_FLAT":
        wanted["nlist"] = str(settings.nlist)
    return wanted


def warn_about_drift(
    settings: SearchSettings, description: Mapping[str, Any], index: Mapping[str, Any]
) -> list[str]:
    """Log, at start-up, where an existing collection differs from the settings.

    The index and metric are fixed when the collection is created: settings that
    differ are not applied (a WARNING names stored and configured values). The
    consistency level is applied per request whatever the collection's default,
    so a difference there is only noted. Returns the warnings (for tests).
    """
    stored = {key: str(index[key]) for key in _index_settings(settings) if key in index}
    drift = {
        key: (stored[key], wanted)
        for key, wanted in _index_settings(settings).items()
        if key in stored and stored[key] != wanted
    }
    warnings = []
    if drift:
        described = ", ".join(f"{k}: stored {a}, configured {b}" for k, (a, b) in drift.items())
        warnings.append(
            f"collection {settings.collection!r} keeps the index it was created with; these"
            f" settings are NOT applied ({described}). To apply them, re-create the index or"
            " use a new SEARCH_COLLECTION and re-insert."
        )
        _log.warning(warnings[-1], extra={"collection": settings.collection})
    level = str(description.get("consistency_level_name") or "")
    if level and level != settings.consistency_level:
        _log.info(
            "collection's default consistency level differs from the setting; the setting is"
            " passed with every read",
            extra={"stored": level, "configured": settings.consistency_level},
        )
    return warnings


class MilvusStore:
    """One collection of image embeddings in one Milvus."""

    def __init__(self, settings: SearchSettings, metrics: DependencyMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._client: MilvusClient | None = None
        self._executor = ThreadPoolExecutor(max_workers=MILVUS_THREADS, thread_name_prefix="milvus")
        self._write_lock = asyncio.Lock()
        self.pending = 0  # reads and writes admitted and not finished (see _admitted)
        self.info: CollectionInfo | None = None

    @property
    def where(self) -> str:
        return f"Milvus at {redact_url(self._settings.milvus_uri)}"

    # --- plumbing ---------------------------------------------------------------------------

    async def _run(self, what: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking pymilvus call on the pool; map its failures to our errors."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await loop.run_in_executor(
                self._executor, functools.partial(function, *args, **kwargs)
            )
        except (grpc.RpcError, MilvusException) as error:
            outcome = type(error).__name__
            raise milvus_error(self.where, what, error) from None
        except BaseException as error:  # recorded, then re-raised unchanged
            outcome = type(error).__name__
            raise
        finally:
            self._metrics.calls.labels("milvus", what, outcome).observe(
                time.perf_counter() - started
            )

    @contextlib.contextmanager
    def _admitted(self) -> Iterator[None]:
        """Count one read or write against SEARCH_MILVUS_MAX_PENDING, or refuse it now."""
        limit = self._settings.milvus_max_pending
        if self.pending >= limit:
            raise ResourceExhaustedError(
                f"Search has {self.pending} calls to {self.where} waiting or running, its"
                f" limit (SEARCH_MILVUS_MAX_PENDING={limit}); retry with backoff"
            )
        self.pending += 1
        try:
            yield
        finally:
            self.pending -= 1

    def _require_client(self) -> MilvusClient:
        if self._client is None:
            raise UnavailableError(f"{self.where} has not been connected yet")
        return self._client

    def _timeout(self, timeout_s: float | None) -> float:
        cap = self._settings.milvus_timeout_s
        if timeout_s is None:
            return cap
        if timeout_s <= 0:
            raise DeadlineExceededError("deadline exceeded before Milvus could be asked")
        return min(timeout_s, cap)

    def _require_info(self) -> CollectionInfo:
        if self.info is None:
            raise UnavailableError(f"the collection in {self.where} is not ready yet")
        return self.info

    # --- lifecycle --------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection (for a local path, this starts Milvus Lite)."""
        if self._client is not None:
            return
        settings = self._settings
        # Credentials and TLS options: imgsearch_search.outbound.
        security_options = milvus_connection_options(settings)

        def open_client() -> MilvusClient:
            if "://" not in settings.milvus_uri:
                # A local path runs Milvus Lite in-process; it needs the folder to exist.
                Path(settings.milvus_uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
            return MilvusClient(
                uri=settings.milvus_uri,
                db_name=settings.milvus_db,
                timeout=settings.milvus_timeout_s,
                dedicated=True,  # our own channel, closed by our close()
                **security_options,
            )

        self._client = await self._run("connect", open_client)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(self._executor, client.close)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _index_params(self, client: MilvusClient) -> Any:
        settings = self._settings
        params: dict[str, Any] = {}
        if settings.index_type == "HNSW":
            params = {"M": settings.hnsw_m, "efConstruction": settings.hnsw_ef_construction}
        elif settings.index_type == "IVF_FLAT":
            params = {"nlist": settings.nlist}
        index = client.prepare_index_params()
        index.add_index(
            field_name=VECTOR_FIELD,
            index_type=settings.index_type,
            metric_type=settings.metric_type,
            params=params,
        )
        return index

    def _create(self, client: MilvusClient, model: str, fingerprint: str, dimension: int) -> None:
        name = self._settings.collection
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dimension)
        schema.add_field("uri", DataType.VARCHAR, max_length=MAX_URI_BYTES)
        schema.add_field("labels", DataType.JSON)
        schema.add_field("content_sha256", DataType.VARCHAR, max_length=64)
        schema.add_field("model", DataType.VARCHAR, max_length=MAX_MODEL_BYTES)
        schema.add_field(THUMBNAIL_FIELD, DataType.VARCHAR, max_length=MAX_THUMBNAIL_CHARS)
        client.create_collection(
            name,
            schema=schema,
            consistency_level=self._settings.consistency_level,
            properties={
                MODEL_PROPERTY: model,
                FINGERPRINT_PROPERTY: fingerprint,
                SCHEMA_PROPERTY: SCHEMA_VERSION,
            },
        )
        _log.info(
            "created collection",
            extra={
                "collection": name,
                "model": model,
                "fingerprint": fingerprint,
                "dimension": dimension,
            },
        )

    def _ensure(self, model: str, fingerprint: str, dimension: int) -> CollectionInfo:
        """Create the collection and its index if missing; check that it fits the model."""
        client = self._require_client()
        name = self._settings.collection
        if not client.has_collection(name):
            self._create(client, model, fingerprint, dimension)
        description = client.describe_collection(name)
        properties = description.get("properties") or {}
        stored_model = str(properties.get(MODEL_PROPERTY, ""))
        vector_fields = [f for f in description["fields"] if f["name"] == VECTOR_FIELD]
        if not vector_fields or not stored_model:
            raise FailedPreconditionError(
                f"collection {name!r} in {self.where} was not created by imgsearch (no"
                f" {VECTOR_FIELD!r} field or {MODEL_PROPERTY!r} property); pick another"
                " collection name"
            )
        stored_dimension = int(vector_fields[0]["params"]["dim"])
        stored_fingerprint = str(properties.get(FINGERPRINT_PROPERTY, ""))
        if stored_fingerprint != fingerprint or stored_dimension != dimension:
            raise FailedPreconditionError(
                self._mismatch_message(
                    (stored_model, stored_fingerprint, stored_dimension),
                    (model, fingerprint, dimension),
                )
            )
        if VECTOR_FIELD not in client.list_indexes(name, field_name=VECTOR_FIELD):
            # sync=False: Milvus Lite cannot wait for index builds the pymilvus
            # way; load_collection below waits on both back ends.
            client.create_index(name, self._index_params(client), sync=False)
        client.load_collection(name)
        index = client.describe_index(name, VECTOR_FIELD)
        warn_about_drift(self._settings, description, index)
        return CollectionInfo(
            name=name,
            model=stored_model,
            fingerprint=stored_fingerprint,
            dimension=stored_dimension,
            index_type=str(index.get("index_type", "")),
            metric_type=str(index.get("metric_type", "")),
            thumbnails=self._has_thumbnails(description),
        )

    def _has_thumbnails(self, description: Mapping[str, Any]) -> bool:
        """Whether the collection has the thumbnail field; says how to get it when not."""
        if any(field["name"] == THUMBNAIL_FIELD for field in description["fields"]):
            return True
        _log.warning(
            "collection has no thumbnails",
            extra={"collection": self._settings.collection, "reason": self.no_thumbnails_reason},
        )
        return False

    @property
    def no_thumbnails_reason(self) -> str:
        """Why a collection without thumbnails has none, and how to re-index it."""
        name = self._settings.collection
        return (
            f"collection {name!r} in {self.where} was created by an older imgsearch (schema 1,"
            " without thumbnails); search works, but results have no pictures. To get them,"
            " ingest the images again into a new collection (set SEARCH_COLLECTION to a new"
            " name, run `imgsearch ingest`, then switch to it) and drop the old one"
        )

    def _mismatch_message(self, stored: tuple[str, str, int], served: tuple[str, str, int]) -> str:
        """Why a collection cannot be used with this Embedder, and how to re-index."""
        name = self._settings.collection
        stored_model, stored_fingerprint, stored_dimension = stored
        model, fingerprint, dimension = served
        held = stored_fingerprint or "none: created before model fingerprints"
        return (
            f"collection {name!r} in {self.where} holds {stored_dimension}-d vectors of model"
            f" {stored_model!r} (fingerprint {held}) but the Embedder serves {dimension}-d"
            f" vectors of model {model!r} (fingerprint {fingerprint}); vectors of different"
            " descriptors are not comparable. Either run the Embedder that made the collection,"
            " or re-index: point Search at a new collection (SEARCH_COLLECTION, e.g."
            f" {name}_{fingerprint[:8]}) and insert the images again (`imgsearch ingest`)"
        )

    async def ensure_collection(
        self, model: str, fingerprint: str, dimension: int
    ) -> CollectionInfo:
        async with self._write_lock:
            self.info = await self._run(
                "create the collection", self._ensure, model, fingerprint, dimension
            )
        return self.info

    async def ping(self, timeout_s: float) -> None:
        """Cheap round trip that fails when Milvus or the collection is gone.

        A collection Milvus no longer has loaded (Milvus Lite after a restart
        does not load it again by itself) is loaded again here, so the service
        recovers without a restart; until it is loaded, this fails.
        """
        client = self._require_client()
        name = self._settings.collection
        loaded = await self._run(
            "a health check", client.get_load_state, name, timeout=self._timeout(timeout_s)
        )
        state = str(loaded.get("state", ""))
        if "Loaded" in state:
            return
        if "NotLoad" in state:
            _log.warning("collection not loaded: loading it again", extra={"collection": name})
            await self._run(
                "loading the collection", client.load_collection, name, timeout=max(timeout_s, 1.0)
            )
        raise UnavailableError(f"collection {name!r} in {self.where} is {state}")

    # --- data -------------------------------------------------------------------------------

    async def upsert(self, rows: Sequence[dict[str, Any]], timeout_s: float | None) -> None:
        """Insert or replace rows (all or none: one upsert call)."""
        if not rows:
            return
        client = self._require_client()
        # The wait for the write lock counts against the caller's time.
        deadline = Deadline(self._settings.milvus_timeout_s if timeout_s is None else timeout_s)
        with self._admitted():
            async with self._write_lock:
                await self._run(
                    "the upsert",
                    client.upsert,
                    self._require_info().name,
                    list(rows),
                    timeout=self._timeout(deadline.remaining()),
                )

    def _search_params(self, top_k: int) -> dict[str, Any]:
        info = self._require_info()
        settings = self._settings
        params: dict[str, Any] = {}
        if info.index_type == "HNSW":
            params = {"ef": max(settings.hnsw_ef, top_k)}
        elif info.index_type == "IVF_FLAT":
            params = {"nprobe": settings.nprobe}
        return {"metric_type": info.metric_type, "params": params}

    async def search(
        self, vector: Sequence[float], top_k: int, expression: str, timeout_s: float | None
    ) -> list[ScoredRow]:
        """The top_k stored items nearest to `vector` that match `expression`, best first."""
        return (await self.search_many([vector], top_k, expression, timeout_s))[0]

    async def search_many(
        self,
        vectors: Sequence[Sequence[float]],
        top_k: int,
        expression: str,
        timeout_s: float | None,
    ) -> list[list[ScoredRow]]:
        """For each vector, its top_k nearest stored items matching `expression`, best first.

        One Milvus search call for all of them (nq = len(vectors): an image
        query's whole-image vector and its views), each with the same filter
        and limit; one list per vector, in order.
        """
        client = self._require_client()
        info = self._require_info()
        with self._admitted():
            result = await self._run(
                "the search",
                client.search,
                info.name,
                data=[list(vector) for vector in vectors],
                anns_field=VECTOR_FIELD,
                limit=top_k,
                filter=expression,
                output_fields=["uri", "labels"],
                search_params=self._search_params(top_k),
                # Per request: the setting applies to collections created before it.
                consistency_level=self._settings.consistency_level,
                timeout=self._timeout(timeout_s),
            )
        if len(result) != len(vectors):
            raise UnavailableError(
                f"{self.where} answered {len(result)} result lists for {len(vectors)} vectors"
            )
        return [_scored_rows(hits) for hits in result]

    def _fields(self, with_vectors: bool, with_thumbnails: bool) -> list[str]:
        fields = list(STORED_FIELDS)
        if with_vectors:
            fields.append(VECTOR_FIELD)
        if with_thumbnails:
            if not self._require_info().thumbnails:
                raise FailedPreconditionError(self.no_thumbnails_reason)
            fields.append(THUMBNAIL_FIELD)
        return fields

    async def get(
        self,
        ids: Sequence[str],
        with_vectors: bool,
        timeout_s: float | None,
        with_thumbnails: bool = False,
    ) -> dict[str, StoredRow]:
        """Stored rows among `ids`, keyed by id (ids not stored are absent).

        FailedPreconditionError when thumbnails are asked for and the
        collection has none (schema 1).
        """
        client = self._require_client()
        unique = list(dict.fromkeys(ids))
        fields = self._fields(with_vectors, with_thumbnails)
        with self._admitted():
            rows = await self._run(
                "the lookup by id",
                client.query,
                self._require_info().name,
                filter=ids_expression(unique),
                output_fields=fields,
                limit=len(unique),
                consistency_level=self._settings.consistency_level,
                timeout=self._timeout(timeout_s),
            )
        return {str(row["id"]): _row(row, with_vectors) for row in rows}

    async def delete(self, ids: Sequence[str], timeout_s: float | None) -> int:
        """Delete `ids`; returns how many of them were stored.

        Its three Milvus calls share one deadline (`timeout_s`, else
        SEARCH_MILVUS_TIMEOUT_S); each is also capped by SEARCH_MILVUS_TIMEOUT_S.
        """
        deadline = Deadline(self._settings.milvus_timeout_s if timeout_s is None else timeout_s)
        unique = list(dict.fromkeys(ids))
        with self._admitted():
            async with self._write_lock:
                present_ids = await self._present(unique, deadline)
                if present_ids:
                    await self._delete_present(present_ids, deadline)
        return len(present_ids)

    async def _present(self, ids: list[str], deadline: Deadline) -> list[str]:
        rows = await self._run(
            "the lookup by id",
            self._require_client().query,
            self._require_info().name,
            filter=ids_expression(ids),
            output_fields=["id"],
            limit=len(ids),
            consistency_level=self._settings.consistency_level,
            timeout=self._timeout(deadline.remaining()),
        )
        return [str(row["id"]) for row in rows]

    async def _delete_present(self, ids: list[str], deadline: Deadline) -> None:
        client, name = self._require_client(), self._require_info().name
        await self._run(
            "the delete",
            client.delete,
            name,
            filter=ids_expression(ids),
            timeout=self._timeout(deadline.remaining()),
        )
        # Milvus 2.3 answers a delete without its timestamp, so Session reads
        # would not wait for it. One Strong read (about 0.2 s there) waits until
        # the delete is applied; later reads then see it.
        await self._run(
            "the delete barrier",
            client.query,
            name,
            filter=ids_expression(ids),
            output_fields=["id"],
            limit=len(ids),
            consistency_level="Strong",
            timeout=self._timeout(deadline.remaining()),
        )

    async def count(self, timeout_s: float | None) -> int:
        """Number of stored items (count(*), Strong: exact on both back ends, unlike row stats)."""
        client = self._require_client()
        with self._admitted():
            rows = await self._run(
                "the count",
                client.query,
                self._require_info().name,
                filter="",
                output_fields=["count(*)"],
                # Milvus 2.3 leaves deletes out of count(*) under Session consistency.
                consistency_level="Strong",
                timeout=self._timeout(timeout_s),
            )
        return int(rows[0]["count(*)"]) if rows else 0

    async def page(
        self,
        expression: str,
        after: str | None,
        limit: int,
        timeout_s: float | None,
        *,
        with_vectors: bool = False,
        with_thumbnails: bool = False,
    ) -> list[StoredRow]:
        """Up to `limit` rows matching `expression` with ids above `after`, in ascending id order.

        Keyset pagination on the primary key: the ids of the page are found
        first (`_smallest_ids`), then their rows are read by id.
        """
        self._fields(with_vectors, with_thumbnails)  # refuses thumbnails of schema 1 first
        ids = await self._smallest_ids(expression, after, limit, timeout_s)
        if not ids:
            return []
        rows = await self.get(ids, with_vectors, timeout_s, with_thumbnails=with_thumbnails)
        return sorted(rows.values(), key=lambda row: row.id)

    async def _ids(self, expression: str, limit: int | None, timeout_s: float | None) -> list[str]:
        client = self._require_client()
        extra: dict[str, Any] = {"limit": limit} if limit is not None else {}
        with self._admitted():
            rows = await self._run(
                "the id query",
                client.query,
                self._require_info().name,
                filter=expression,
                output_fields=["id"],
                consistency_level=self._settings.consistency_level,
                timeout=self._timeout(timeout_s),
                **extra,
            )
        return sorted(str(row["id"]) for row in rows)

    async def _smallest_ids(
        self, expression: str, after: str | None, limit: int, timeout_s: float | None
    ) -> list[str]:
        """The `limit` smallest ids above `after` that match `expression`, sorted.

        Milvus has no ORDER BY, and a query with a limit does not return the
        smallest primary keys on every back end (Milvus 2.3 takes each sealed
        segment's first rows in storage order; its iterator mode, which
        merges by primary key, may stop short of the limit), so nothing here
        relies on the order of results: a sample of up to PAGE_SAMPLE matching
        ids is read; when it holds fewer, it holds every match, and its
        smallest ids are the answer. Otherwise its limit-th smallest id bounds
        the answer from above, and a second query reads every match up to that
        bound (about limit x matches / PAGE_SAMPLE ids when ids are spread like
        content hashes; at worst every match), whose smallest ids are exact.
        """
        after_expression = f"id > {milvus_literal(after)}" if after is not None else ""
        matching = _and(after_expression, expression)
        sample_size = max(PAGE_SAMPLE, limit + 1)
        sample = await self._ids(matching, sample_size, timeout_s)
        if len(sample) < sample_size:
            return sample[:limit]
        bound = sample[limit - 1]
        exact = await self._ids(_and(matching, f"id <= {milvus_literal(bound)}"), None, timeout_s)
        return exact[:limit]

    async def count_matching(self, expression: str, timeout_s: float | None) -> int:
        """Number of stored items matching `expression` (all of them when it is empty)."""
        if not expression:
            return await self.count(timeout_s)
        client = self._require_client()
        with self._admitted():
            rows = await self._run(
                "the count",
                client.query,
                self._require_info().name,
                filter=expression,
                output_fields=["count(*)"],
                consistency_level="Strong",
                timeout=self._timeout(timeout_s),
            )
        return int(rows[0]["count(*)"]) if rows else 0

    async def neighbours(
        self,
        vectors: Sequence[Sequence[float]],
        top_k: int,
        expression: str,
        timeout_s: float | None,
    ) -> list[list[tuple[str, float]]]:
        """For each query vector, its top_k nearest stored items as (id, score), best first.

        One Milvus call for all the vectors (nq = len(vectors)). A batch job's
        call: `timeout_s` may exceed `milvus_timeout_s`.
        """
        if not vectors:
            return []
        client = self._require_client()
        with self._admitted():
            result = await self._run(
                "the neighbour search",
                client.search,
                self._require_info().name,
                data=[list(vector) for vector in vectors],
                anns_field=VECTOR_FIELD,
                limit=top_k,
                filter=expression,
                output_fields=[],
                search_params=self._search_params(top_k),
                consistency_level=self._settings.consistency_level,
                timeout=timeout_s if timeout_s is not None else self._timeout(None),
            )
        return [[(str(hit["id"]), float(hit["distance"])) for hit in hits] for hits in result]
