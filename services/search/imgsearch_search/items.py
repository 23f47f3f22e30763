"""Stored rows as protobuf messages."""

from __future__ import annotations

from imgsearch.v1 import search_pb2
from imgsearch_search.store import StoredRow
from imgsearch_search.thumbnails import from_stored, mime_type


def stored_item(row: StoredRow) -> search_pb2.StoredItem:
    """The StoredItem message of a stored row (thumbnail decoded when it was read)."""
    thumbnail = from_stored(row.thumbnail)
    return search_pb2.StoredItem(
        id=row.id,
        uri=row.uri,
        labels=row.labels,
        content_sha256=row.content_sha256,
        model=row.model,
        vector=row.vector or [],
        thumbnail=thumbnail,
        thumbnail_mime_type=mime_type(thumbnail),
    )
