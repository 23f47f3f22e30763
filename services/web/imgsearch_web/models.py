"""The JSON shapes of the HTTP API (the OpenAPI document is generated from these).

They mirror `imgsearch.v1.search.proto`: same field names, same meanings and
limits (Search enforces the limits; the gateway only checks types).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from pydantic import BaseModel, Field, model_validator

from imgsearch.common.duplicates import DEFAULT_DUPLICATE_THRESHOLD
from imgsearch.v1 import search_pb2

MAX_FILTER_CHARS = 4096
MAX_VECTOR_VALUES = 65_536
# Numbers only have to fit the gRPC fields; Search enforces the real limits.
UINT32_MAX = 2**32 - 1
THUMBNAIL_URL = "Path of the item's thumbnail (GET it), relative to the gateway's root."


def thumbnail_url(item_id: str) -> str:
    """Path of an item's thumbnail, relative to the gateway's root."""
    return "v1/thumbnails/" + quote(item_id, safe="")


class Hit(BaseModel):
    """One search result."""

    id: str = Field(description="Id of the stored item.")
    score: float = Field(description="Cosine similarity to the query, in [-1, 1].")
    uri: str = Field(description="The item's uri, as inserted.")
    labels: dict[str, str] = Field(description="The item's labels, as inserted.")
    thumbnail_url: str = Field(description=THUMBNAIL_URL)
    matched_view: str = Field(
        "",
        description=(
            "Which view of an image query found the item at this score: empty for the"
            ' whole image, "inset" for the picture pasted into the query (as in a'
            ' screenshot), "straightened" for the query turned back upright, "uncaptioned"'
            " for the query with outlined captions painted over. Always empty for id and"
            " vector queries."
        ),
    )

    @classmethod
    def of(cls, hit: search_pb2.Hit) -> Hit:
        return cls(
            id=hit.id,
            score=hit.score,
            uri=hit.uri,
            labels=dict(hit.labels),
            thumbnail_url=thumbnail_url(hit.id),
            matched_view=hit.matched_view,
        )


class SearchResult(BaseModel):
    """Hits, best first."""

    hits: list[Hit] = Field(description="Up to top_k hits in descending score.")
    cached: bool = Field(description="Whether Search answered from its Redis cache.")

    @classmethod
    def of(cls, reply: search_pb2.SearchResponse) -> SearchResult:
        return cls(hits=[Hit.of(hit) for hit in reply.hits], cached=reply.cached)


class SearchQuery(BaseModel):
    """A search by stored id ("more like this") or by vector: exactly one of them."""

    id: str | None = Field(None, description="Id of a stored item.", max_length=4096)
    vector: list[Annotated[float, Field(strict=True)]] | None = Field(
        None,
        description="A vector from the collection's model (Stats gives the dimension).",
        max_length=MAX_VECTOR_VALUES,
    )
    top_k: int = Field(
        0,
        ge=0,
        strict=True,
        description="Hits to return; 0 means 10; at most Search's limit (SEARCH_MAX_TOP_K).",
    )
    filter: str = Field(
        "", max_length=MAX_FILTER_CHARS, description='Label filter, e.g. `kind == "cat"`.'
    )
    min_score: float | None = Field(
        None, strict=True, description="Leave out hits scoring below this."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SearchQuery:
        if (self.id is None) == (self.vector is None):
            raise ValueError("give exactly one of id or vector")
        return self


class Item(BaseModel):
    """An item as stored."""

    id: str
    uri: str
    labels: dict[str, str]
    content_sha256: str = Field(description="Lowercase hex SHA-256 of the embedded image.")
    model: str = Field(description="Model that produced the embedding.")
    thumbnail_url: str = Field(description=THUMBNAIL_URL)

    @classmethod
    def of(cls, item: search_pb2.StoredItem) -> Item:
        return cls(
            id=item.id,
            uri=item.uri,
            labels=dict(item.labels),
            content_sha256=item.content_sha256,
            model=item.model,
            thumbnail_url=thumbnail_url(item.id),
        )


class ItemPage(BaseModel):
    """One page of stored items, in ascending id order."""

    items: list[Item]
    next_page_token: str = Field(description="Token of the next page; empty on the last page.")


class InsertResult(BaseModel):
    """The item as it was stored."""

    id: str = Field(description="The item's id (the content hash when none was given).")
    message: str = Field(description="A warning about the stored item, or empty.")


class DeleteResult(BaseModel):
    """How many items were deleted."""

    deleted: int = Field(description="1 when the item was stored and is now deleted, else 0.")


class Stats(BaseModel):
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


class Health(BaseModel):
    """Whether the gateway can serve: Search must answer SERVING."""

    status: str = Field(description="SERVING or NOT_SERVING.")
    search: str = Field(description="Search's health: SERVING, NOT_SERVING or UNREACHABLE.")


class Limits(BaseModel):
    """The gateway's own limits (Search's are in the proto and in its error messages)."""

    max_upload_bytes: int = Field(
        description="Largest request body accepted, in bytes (WEB_MAX_UPLOAD_BYTES); larger: 413."
    )


class DuplicatesQuery(BaseModel):
    """What a duplicate scan compares."""

    threshold: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        strict=True,
        description=f"Cosine similarity of duplicates; 0 means {DEFAULT_DUPLICATE_THRESHOLD}.",
    )
    filter: str = Field("", max_length=MAX_FILTER_CHARS, description="Only items matching this.")
    max_neighbors: int = Field(
        0,
        ge=0,
        strict=True,
        description="Neighbours examined per item; 0 means 16; at most Search's limit (256).",
    )


class DuplicateMember(BaseModel):
    id: str
    uri: str
    labels: dict[str, str]
    best_score: float = Field(description="Highest similarity to another member.")
    best_match_id: str
    thumbnail_url: str


class DuplicateGroup(BaseModel):
    items: list[DuplicateMember]
    min_score: float = Field(description="Lowest similarity among the links of the group.")


class DuplicatesProgress(BaseModel):
    items_done: int
    items_total: int


class DuplicatesSummary(BaseModel):
    items_scanned: int
    groups: int
    items_in_groups: int
    elapsed_s: float


class DuplicatesEvent(BaseModel):
    """One line of the application/x-ndjson stream: exactly one field is set."""

    progress: DuplicatesProgress | None = None
    group: DuplicateGroup | None = None
    summary: DuplicatesSummary | None = None
    error: dict[str, str] | None = Field(
        None, description="An error after the stream began: {code, message}; the last line."
    )

    @classmethod
    def of(cls, message: search_pb2.FindDuplicatesResponse) -> DuplicatesEvent:
        kind = message.WhichOneof("event")
        if kind == "progress":
            progress = message.progress
            return cls(
                progress=DuplicatesProgress(
                    items_done=progress.items_done, items_total=progress.items_total
                )
            )
        if kind == "group":
            members = [
                DuplicateMember(
                    id=m.id,
                    uri=m.uri,
                    labels=dict(m.labels),
                    best_score=m.best_score,
                    best_match_id=m.best_match_id,
                    thumbnail_url=thumbnail_url(m.id),
                )
                for m in message.group.items
            ]
            return cls(group=DuplicateGroup(items=members, min_score=message.group.min_score))
        summary = message.summary
        return cls(
            summary=DuplicatesSummary(
                items_scanned=summary.items_scanned,
                groups=summary.groups,
                items_in_groups=summary.items_in_groups,
                elapsed_s=summary.elapsed_s,
            )
        )
