"""Typed Python client of the imgsearch Search service.

    from imgsearch.client import Client, ItemInput

    with Client("127.0.0.1:50052") as client:
        client.insert([ItemInput.from_path("photos/cat.jpg", labels={"kind": "cat"})])
        for hit in client.search("query.jpg", k=5).hits:
            print(hit.score, hit.id, hit.uri)

A secured service (TLS, tokens: docs/security.md) needs the CA and a token:

    Client("search.example.com:50052", tls_ca="ca.pem", token_file="search.token")

or IMGSEARCH_TLS_CA and IMGSEARCH_TOKEN in the environment (see
`imgsearch.client_security` for every option).

Every call has a deadline (`timeout`, seconds); failures raise `ClientError`
subclasses from the project's error taxonomy (`imgsearch.common.errors`), so
callers catch `InvalidArgumentError`, `NotFoundError`, `UnavailableError`...
and read `.message` rather than parse gRPC status strings.

Retries: every Search RPC is idempotent (Insert upserts by id, Delete of a
deleted id is not an error), so gRPC itself retries a call that fails with a
status the taxonomy marks retriable (`ImgsearchError.retriable`: UNAVAILABLE,
RESOURCE_EXHAUSTED): up to `RETRY_MAX_ATTEMPTS` attempts with exponential
backoff, all within the call's one deadline, and never once the server has
started answering. gRPC can only resend what it kept: it keeps 256 KiB of a
call by default, so larger Inserts and image Searches were never retried;
the channel keeps up to the largest request the client sends
(`max_message_bytes`), which is checked before sending.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imgsearch.client_security import auth_error, client_security, transport_hint
from imgsearch.common import errors
from imgsearch.filenames import file_uri
from imgsearch.v1 import search_pb2, search_pb2_grpc

ADDRESS_ENV = "IMGSEARCH_ADDRESS"
DEFAULT_ADDRESS = "127.0.0.1:50052"
# Insert carries whole images; the Search service accepts 64 MiB by default.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Deadlines (seconds) of each call, and of Insert, which embeds every image of
# its request. The Search service honours a caller's deadline, longer or shorter
# than its own default (embedder + Milvus timeouts, used when none is set).
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_INSERT_TIMEOUT_S = 120.0

RETRY_MAX_ATTEMPTS = 3  # first try included; gRPC caps this at 5
RETRY_INITIAL_BACKOFF_S = 0.2
RETRY_MAX_BACKOFF_S = 2.0
RETRY_BACKOFF_MULTIPLIER = 2


def retryable_codes() -> list[str]:
    """Status codes gRPC retries: those of the taxonomy's errors marked `retriable`.

    A code shared with an error that is not retriable (RESOURCE_EXHAUSTED: a
    full queue, but also a request over a size limit) is still listed: the
    server sends such errors with a negative retry pushback
    (`imgsearch.common.errors.retry_metadata`), which stops gRPC's retries, so
    a request that can never succeed is not sent again.
    """
    return sorted({cls.code.name for cls in _error_classes() if cls.retriable})


def _error_classes() -> list[type[errors.ImgsearchError]]:
    found: list[type[errors.ImgsearchError]] = []
    pending = list(errors.ImgsearchError.__subclasses__())
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def service_config() -> str:
    """The gRPC service config of the client's channel: the retry policy of every Search RPC."""
    policy = {
        "maxAttempts": RETRY_MAX_ATTEMPTS,
        "initialBackoff": f"{RETRY_INITIAL_BACKOFF_S}s",
        "maxBackoff": f"{RETRY_MAX_BACKOFF_S}s",
        "backoffMultiplier": RETRY_BACKOFF_MULTIPLIER,
        "retryableStatusCodes": retryable_codes(),
    }
    return json.dumps(
        {"methodConfig": [{"name": [{"service": "imgsearch.v1.Search"}], "retryPolicy": policy}]}
    )


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """Options of the client's channel: message limits and retries that cover every request.

    `grpc.per_rpc_retry_buffer_size` is how much of a call gRPC keeps to
    resend it; a call that sent more is committed and never retried. It is
    set to the largest request (plus framing), so the retry policy holds for
    every call. (gRPC core has no channel-wide cap; `grpc.retry_buffer_size`
    exists only in grpc-js.)
    """
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.service_config", service_config()),
        ("grpc.enable_retries", 1),
        ("grpc.per_rpc_retry_buffer_size", max_message_bytes + _RETRY_BUFFER_SLACK),
    ]


# Headroom over a message's own size in the retry buffer (gRPC framing, metadata).
_RETRY_BUFFER_SLACK = 64 * 1024

_ERROR_FOR_CODE: dict[grpc.StatusCode, type[errors.ImgsearchError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: errors.InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: errors.NotFoundError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPreconditionError,
    grpc.StatusCode.UNAVAILABLE: errors.UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceededError,
    grpc.StatusCode.CANCELLED: errors.CancelledError,
}


class ClientError(errors.ImgsearchError):
    """A call failed with a status the taxonomy has no class for (INTERNAL, UNKNOWN...)."""


def error_from_rpc(exc: grpc.RpcError, address: str, tls: bool = False) -> errors.ImgsearchError:
    """The taxonomy error for a failed call, with a message a person can act on."""
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    details: str = exc.details() or code.name  # type: ignore[attr-defined]
    auth = auth_error(code, details)
    if auth is not None:
        return auth
    if code == grpc.StatusCode.UNAVAILABLE:
        hint = transport_hint(code, details, tls)
        message = f"Search service at {address} is unavailable: {details}{hint}"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"Search service at {address} did not answer in time: {details}"
    else:
        message = details
    error_type = _ERROR_FOR_CODE.get(code)
    if error_type is None:
        error = ClientError(f"{code.name}: {message}")
        error.code = code
        return error
    return error_type(message)


def content_id(image: bytes) -> str:
    """The default id of an image: lowercase hex SHA-256 of its bytes (as the server does)."""
    return hashlib.sha256(image).hexdigest()


ImageInput = bytes | str | os.PathLike[str]


def read_image(image: ImageInput) -> bytes:
    """Bytes as they are; a path is read (raises OSError when unreadable)."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    return Path(image).read_bytes()


@dataclass(frozen=True)
class ItemInput:
    """One image to insert. An empty `id` means the content hash."""

    image: bytes
    id: str = ""
    uri: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_path(
        cls, path: str | os.PathLike[str], *, id: str = "", labels: Mapping[str, str] | None = None
    ) -> ItemInput:
        """Read an image file; its `file:` URI becomes the uri (see `imgsearch.filenames`)."""
        data = Path(path).read_bytes()
        return cls(image=data, id=id, uri=file_uri(path), labels=labels or {})

    def to_proto(self) -> search_pb2.Item:
        return search_pb2.Item(id=self.id, image=self.image, uri=self.uri, labels=dict(self.labels))


@dataclass(frozen=True)
class ItemOutcome:
    """What happened to one inserted item."""

    id: str
    code: grpc.StatusCode
    message: str

    @property
    def ok(self) -> bool:
        return self.code == grpc.StatusCode.OK


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: str
    score: float
    uri: str
    labels: dict[str, str]
    # Which view of an image query found it: "" for the whole image, "inset" (the
    # picture pasted into the query), "straightened" (the query turned upright) or
    # "uncaptioned" (the query with outlined captions painted over).
    matched_view: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "score": self.score,
            "uri": self.uri,
            "labels": self.labels,
            "matched_view": self.matched_view,
        }


@dataclass(frozen=True)
class SearchResult:
    """Hits, best first, and whether Redis served them."""

    hits: list[Hit]
    cached: bool


@dataclass(frozen=True)
class StoredItem:
    """An item as stored in the collection."""

    id: str
    uri: str
    labels: dict[str, str]
    content_sha256: str
    model: str
    vector: list[float] | None = None
    # The stored thumbnail (WebP or JPEG) when asked for; b"" otherwise or when it has none.
    thumbnail: bytes = b""
    thumbnail_mime_type: str = ""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "uri": self.uri,
            "labels": self.labels,
            "content_sha256": self.content_sha256,
            "model": self.model,
        }
        if self.vector is not None:
            data["vector"] = self.vector
        return data

    @classmethod
    def from_proto(cls, item: search_pb2.StoredItem, with_vector: bool = False) -> StoredItem:
        return cls(
            id=item.id,
            uri=item.uri,
            labels=dict(item.labels),
            content_sha256=item.content_sha256,
            model=item.model,
            vector=list(item.vector) if with_vector else None,
            thumbnail=item.thumbnail,
            thumbnail_mime_type=item.thumbnail_mime_type,
        )


@dataclass(frozen=True)
class ItemPage:
    """One page of `Client.list_items`: items in ascending id order."""

    items: list[StoredItem]
    next_page_token: str  # empty on the last page


@dataclass(frozen=True)
class DuplicateMember:
    """One item of a group of near-duplicates."""

    id: str
    uri: str
    labels: dict[str, str]
    best_score: float  # highest similarity to another member
    best_match_id: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class DuplicateGroup:
    """Items linked by similarities at or above the threshold; members in id order."""

    items: list[DuplicateMember]
    min_score: float  # lowest similarity among the links found between members

    def to_dict(self) -> dict[str, Any]:
        return {"min_score": self.min_score, "items": [m.to_dict() for m in self.items]}


@dataclass(frozen=True)
class Duplicates:
    """What `Client.find_duplicates` found: groups (largest first) and the scan's figures."""

    groups: list[DuplicateGroup]
    items_scanned: int
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "items_scanned": self.items_scanned,
            "elapsed_s": self.elapsed_s,
            "groups": [group.to_dict() for group in self.groups],
        }


@dataclass(frozen=True)
class GetResult:
    """Items found, in request order, and the ids that are not stored."""

    items: list[StoredItem]
    missing_ids: list[str]


@dataclass(frozen=True)
class Stats:
    """The collection, its model and the cache."""

    item_count: int
    dimension: int
    model: str
    index_type: str
    metric_type: str
    collection: str
    cache_hits: int
    cache_misses: int
    cache_available: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_STATUS_BY_VALUE = {status.value[0]: status for status in grpc.StatusCode}


def _group(group: search_pb2.DuplicateGroup) -> DuplicateGroup:
    return DuplicateGroup(
        items=[
            DuplicateMember(
                id=member.id,
                uri=member.uri,
                labels=dict(member.labels),
                best_score=member.best_score,
                best_match_id=member.best_match_id,
            )
            for member in group.items
        ],
        min_score=group.min_score,
    )


_GET_BATCH = 1000  # the server's limit on ids per Get or Delete


class Client:
    """Blocking client of the Search service; close it, or use it as a context manager.

    `address` defaults to $IMGSEARCH_ADDRESS, then 127.0.0.1:50052. `timeout`
    is the deadline of each call in seconds; `insert_timeout` that of each
    Insert request, which embeds every image of the request (120 s: 64 photos
    on a loaded CPU). A deadline covers every retry of its call, and the
    service works to the caller's deadline. `max_message_bytes` bounds every
    request and reply (the service's default limit is 64 MiB); larger requests
    raise InvalidArgumentError before anything is sent; `duplicates_timeout`
    bounds a whole duplicate scan. `token`/`token_file`
    and the `tls*` arguments (each with an environment default, see
    `imgsearch.client_security`) authenticate and encrypt the calls; they
    raise `ConfigurationError` when a file cannot be used.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        insert_timeout: float = DEFAULT_INSERT_TIMEOUT_S,
        duplicates_timeout: float = 1800.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        metadata: Sequence[tuple[str, str]] = (),
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        tls: bool | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        tls_server_name: str | None = None,
    ) -> None:
        self.address = address or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS
        self.timeout = timeout
        self.insert_timeout = insert_timeout
        self.max_message_bytes = max_message_bytes
        self.duplicates_timeout = duplicates_timeout
        security = client_security(
            self.address,
            token=token,
            token_file=token_file,
            tls=tls,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_server_name=tls_server_name,
        )
        self.tls = security.tls
        self._metadata = (*security.metadata, *metadata)
        options = [*channel_options(max_message_bytes), *security.options]
        if security.credentials is None:
            self._channel = grpc.insecure_channel(self.address, options=options)
        else:
            self._channel = grpc.secure_channel(self.address, security.credentials, options=options)
        self._stub = search_pb2_grpc.SearchStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        size = request.ByteSize()
        if size > self.max_message_bytes:
            # Refused here: gRPC would fail it locally with RESOURCE_EXHAUSTED,
            # a code the retry policy would resend for nothing.
            raise errors.InvalidArgumentError(
                f"request is {size} bytes, over the limit of {self.max_message_bytes}"
                " (max_message_bytes)"
            )
        try:
            return method(
                request,
                timeout=self.timeout if timeout is None else timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address, self.tls) from None

    # --- the Search API

    def insert(
        self,
        items: Iterable[ItemInput],
        *,
        batch_size: int = 64,
        batch_bytes: int = 16 * 1024 * 1024,
        timeout: float | None = None,
    ) -> list[ItemOutcome]:
        """Embed and store items; one outcome per item, in order.

        Items are sent in requests of at most `batch_size` items and about
        `batch_bytes` bytes of images (the server accepts 256 items and 64 MiB
        by default). A bad image fails only its own item (see
        `ItemOutcome.ok`); errors of a whole request (a dependency down)
        raise, after earlier requests were stored: inserting is an upsert by
        id, so calling again with the same items is safe.
        """
        outcomes: list[ItemOutcome] = []
        batch: list[ItemInput] = []
        size = 0
        for item in items:
            if batch and (len(batch) >= batch_size or size + len(item.image) > batch_bytes):
                outcomes.extend(self._insert_batch(batch, timeout))
                batch, size = [], 0
            batch.append(item)
            size += len(item.image)
        if batch:
            outcomes.extend(self._insert_batch(batch, timeout))
        return outcomes

    def _insert_batch(self, batch: list[ItemInput], timeout: float | None) -> list[ItemOutcome]:
        request = search_pb2.InsertRequest(items=[item.to_proto() for item in batch])
        reply = self._call(
            self._stub.Insert, request, self.insert_timeout if timeout is None else timeout
        )
        return [
            ItemOutcome(
                id=result.id,
                code=_STATUS_BY_VALUE.get(result.code, grpc.StatusCode.UNKNOWN),
                message=result.message,
            )
            for result in reply.results
        ]

    def search(
        self,
        image: ImageInput | None = None,
        *,
        id: str | None = None,
        vector: Sequence[float] | None = None,
        k: int = 10,
        filter: str = "",
        min_score: float | None = None,
        timeout: float | None = None,
    ) -> SearchResult:
        """The stored items most similar to a query, best first.

        The query is exactly one of: `image` (bytes, or a path to read), `id`
        of a stored item ("more like this"), or a raw `vector` from the same
        model. `filter` is a label expression such as
        `category == "shoe" and color in ["red", "blue"]`.
        """
        given = [image is not None, id is not None, vector is not None]
        if sum(given) != 1:
            raise errors.InvalidArgumentError("give exactly one of image, id or vector")
        request = search_pb2.SearchRequest(top_k=k, filter=filter)
        if image is not None:
            request.image = read_image(image)
        elif id is not None:
            request.id = id
        else:
            assert vector is not None
            request.vector.values.extend(float(value) for value in vector)
        if min_score is not None:
            request.min_score = min_score
        reply = self._call(self._stub.Search, request, timeout)
        return SearchResult(
            hits=[
                Hit(
                    id=hit.id,
                    score=hit.score,
                    uri=hit.uri,
                    labels=dict(hit.labels),
                    matched_view=hit.matched_view,
                )
                for hit in reply.hits
            ],
            cached=reply.cached,
        )

    def get(
        self,
        ids: Sequence[str],
        *,
        include_vectors: bool = False,
        include_thumbnails: bool = False,
        timeout: float | None = None,
    ) -> GetResult:
        """Stored items by id (any number of ids; sent 1000 per call)."""
        items: list[StoredItem] = []
        missing: list[str] = []
        for start in range(0, len(ids), _GET_BATCH):
            request = search_pb2.GetRequest(
                ids=list(ids[start : start + _GET_BATCH]),
                include_vectors=include_vectors,
                include_thumbnails=include_thumbnails,
            )
            reply = self._call(self._stub.Get, request, timeout)
            items.extend(StoredItem.from_proto(item, include_vectors) for item in reply.items)
            missing.extend(reply.missing_ids)
        return GetResult(items=items, missing_ids=missing)

    def list_items(
        self,
        *,
        filter: str = "",
        page_size: int = 50,
        page_token: str = "",
        include_thumbnails: bool = False,
        timeout: float | None = None,
    ) -> ItemPage:
        """One page of stored items in ascending id order (at most 1000 per page).

        Pass `next_page_token` back as `page_token` for the next page; it is
        empty on the last page. Items stored for the whole listing come
        exactly once; none comes twice, whatever is written meanwhile.
        """
        request = search_pb2.ListRequest(
            filter=filter,
            page_size=page_size,
            page_token=page_token,
            include_thumbnails=include_thumbnails,
        )
        reply = self._call(self._stub.List, request, timeout)
        return ItemPage(
            items=[StoredItem.from_proto(item) for item in reply.items],
            next_page_token=reply.next_page_token,
        )

    def iter_items(
        self, *, filter: str = "", page_size: int = 500, timeout: float | None = None
    ) -> Iterator[StoredItem]:
        """Every stored item (matching `filter`), in ascending id order, page by page."""
        token = ""
        while True:
            page = self.list_items(
                filter=filter, page_size=page_size, page_token=token, timeout=timeout
            )
            yield from page.items
            token = page.next_page_token
            if not token:
                return

    def thumbnails(
        self, ids: Sequence[str], *, timeout: float | None = None
    ) -> dict[str, tuple[bytes, str]]:
        """Stored thumbnails by id: (encoded image, media type); ids without one are absent."""
        found = self.get(ids, include_thumbnails=True, timeout=timeout)
        return {
            item.id: (item.thumbnail, item.thumbnail_mime_type)
            for item in found.items
            if item.thumbnail
        }

    def find_duplicates(
        self,
        *,
        threshold: float = 0.0,
        filter: str = "",
        max_neighbors: int = 0,
        progress: Callable[[int, int], None] | None = None,
        timeout: float | None = None,
    ) -> Duplicates:
        """Groups of near-duplicate items (cosine similarity >= threshold; 0: the server's default,
        `imgsearch.common.duplicates.DEFAULT_DUPLICATE_THRESHOLD`).

        `progress(items_done, items_total)` is called as the scan advances.
        `timeout` bounds the whole scan (default `duplicates_timeout`).
        """
        request = search_pb2.FindDuplicatesRequest(
            threshold=threshold, filter=filter, max_neighbors=max_neighbors
        )
        groups: list[DuplicateGroup] = []
        summary = search_pb2.DuplicatesSummary()
        try:
            for message in self._stub.FindDuplicates(
                request,
                timeout=self.duplicates_timeout if timeout is None else timeout,
                metadata=self._metadata,
            ):
                kind = message.WhichOneof("event")
                if kind == "progress" and progress is not None:
                    progress(message.progress.items_done, message.progress.items_total)
                elif kind == "group":
                    groups.append(_group(message.group))
                elif kind == "summary":
                    summary = message.summary
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address) from None
        return Duplicates(
            groups=groups, items_scanned=summary.items_scanned, elapsed_s=summary.elapsed_s
        )

    def delete(self, ids: Sequence[str], *, timeout: float | None = None) -> int:
        """Delete items by id; returns how many were stored. Unknown ids are not an error."""
        deleted = 0
        for start in range(0, len(ids), _GET_BATCH):
            request = search_pb2.DeleteRequest(ids=list(ids[start : start + _GET_BATCH]))
            deleted += self._call(self._stub.Delete, request, timeout).deleted
        return deleted

    def stats(self, *, timeout: float | None = None) -> Stats:
        """Size of the collection, its model and index, and cache counters."""
        reply = self._call(self._stub.Stats, search_pb2.StatsRequest(), timeout)
        return Stats(
            item_count=reply.item_count,
            dimension=reply.dimension,
            model=reply.model,
            index_type=reply.index_type,
            metric_type=reply.metric_type,
            collection=reply.collection,
            cache_hits=reply.cache_hits,
            cache_misses=reply.cache_misses,
            cache_available=reply.cache_available,
        )

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The grpc.health.v1 status of the server ("" for overall): SERVING, NOT_SERVING..."""
        request = health_pb2.HealthCheckRequest(service=service)
        reply = self._call(self._health.Check, request, timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
