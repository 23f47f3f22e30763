"""`List`: the stored items a page at a time, in ascending id order (AIP-158).

Pagination is by key, not by offset: a page token carries the last id of the
previous page, and the next page is the items with larger ids
(`MilvusStore.page`). So every page costs the same however deep the listing
goes, and concurrent writes never shift items between pages:

- an item stored for the whole listing is returned exactly once;
- no item is returned twice (ids only grow from page to page);
- an item inserted or deleted while the listing runs is returned at most
  once: when its id is beyond the cursor at the time the page is read (and,
  under Session consistency, the write is visible to this replica).

The token is opaque to clients (URL-safe base64 of a small JSON object) and
names a digest of the filter it was made for: using it with another filter
is INVALID_ARGUMENT, as AIP-158 asks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

from imgsearch.common.errors import InvalidArgumentError
from imgsearch.v1 import search_pb2
from imgsearch_search.embedder_client import Deadline
from imgsearch_search.items import stored_item
from imgsearch_search.store import MilvusStore
from imgsearch_search.validation import LabelFilter, check_id, parse_filter

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_TOKEN_VERSION = 1
_MAX_TOKEN_CHARS = 2048


def filter_digest(label_filter: LabelFilter | None) -> str:
    """A short digest that tells filters apart (equal for equivalent filters)."""
    canonical = label_filter.canonical if label_filter else ""
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PageToken:
    """Where the next page starts: after `after`, for the filter with digest `filter`."""

    after: str
    filter: str

    def encode(self) -> str:
        payload = json.dumps({"v": _TOKEN_VERSION, "after": self.after, "f": self.filter})
        return base64.urlsafe_b64encode(payload.encode()).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, token: str) -> PageToken:
        """Parse a next_page_token; InvalidArgumentError when it is not one of ours."""
        bad = InvalidArgumentError(
            "page_token is not a token this service made (pass next_page_token unchanged)"
        )
        if len(token) > _MAX_TOKEN_CHARS:
            raise bad
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw.decode("utf-8"))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise bad from None
        if (
            not isinstance(data, dict)
            or data.get("v") != _TOKEN_VERSION
            or not isinstance(data.get("after"), str)
            or not isinstance(data.get("f"), str)
        ):
            raise bad
        check_id(data["after"], "page_token")
        return cls(after=data["after"], filter=data["f"])


def page_size(requested: int) -> int:
    """The page size to use: the default for 0, at most MAX_PAGE_SIZE (AIP-158 coerces)."""
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


class Browser:
    """Answers List from the store."""

    def __init__(self, store: MilvusStore) -> None:
        self._store = store

    async def list(
        self, request: search_pb2.ListRequest, deadline: Deadline
    ) -> search_pb2.ListResponse:
        label_filter = parse_filter(request.filter)
        digest = filter_digest(label_filter)
        after: str | None = None
        if request.page_token:
            token = PageToken.decode(request.page_token)
            if token.filter != digest:
                raise InvalidArgumentError(
                    "page_token was made for another filter; keep the filter of the first"
                    " page, or start again without a page_token"
                )
            after = token.after
        size = page_size(request.page_size)
        # One more than the page: it tells whether another page follows.
        rows = await self._store.page(
            label_filter.milvus_expression() if label_filter else "",
            after,
            size + 1,
            deadline.timeout(),
            with_thumbnails=request.include_thumbnails,
        )
        response = search_pb2.ListResponse(items=[stored_item(row) for row in rows[:size]])
        if len(rows) > size:
            response.next_page_token = PageToken(rows[size - 1].id, digest).encode()
        return response
