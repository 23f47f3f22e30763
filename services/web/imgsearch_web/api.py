"""The versioned JSON API (`/v1/...`): each route maps onto one Search RPC.

The gateway is thin: it checks transport concerns (body size, content type,
types of parameters) and forwards to Search, which owns every business rule
(limits of top_k, filters, ids). The caller's `Authorization` header goes to
Search with each call.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile

from imgsearch.v1 import search_pb2
from imgsearch_web.errors import ERROR_RESPONSES, ApiError
from imgsearch_web.models import (
    MAX_FILTER_CHARS,
    UINT32_MAX,
    DeleteResult,
    DuplicatesEvent,
    DuplicatesQuery,
    Health,
    InsertResult,
    Item,
    ItemPage,
    Limits,
    SearchQuery,
    SearchResult,
    Stats,
)
from imgsearch_web.search_client import Metadata, SearchBackend
from imgsearch_web.settings import WebSettings

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff")
_RAW_TYPES = (*IMAGE_TYPES, "application/octet-stream")
_BINARY = {"type": "string", "format": "binary"}
_IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The query image: the raw file as the body, or a multipart form"
        " with the file in the field `image`.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"image": _BINARY},
                    "required": ["image"],
                }
            },
            **{media: {"schema": _BINARY} for media in _RAW_TYPES},
        },
    }
}
_INSERT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": _BINARY,
                        "id": {"type": "string", "description": "Item id; empty: content hash."},
                        "uri": {"type": "string", "description": "Where the original lives."},
                        "labels": {
                            "type": "string",
                            "description": 'Labels as a JSON object, e.g. {"kind": "cat"}.',
                        },
                    },
                    "required": ["image"],
                }
            }
        },
    }
}
_AUTHORIZATION = "authorization"


# --- dependencies ---------------------------------------------------------------------------


def backend(request: Request) -> SearchBackend:
    return request.app.state.backend  # type: ignore[no-any-return]


def settings(request: Request) -> WebSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def call_metadata(request: Request) -> Metadata:
    """The caller's credentials, passed through to Search as gRPC metadata."""
    value = request.headers.get(_AUTHORIZATION)
    if value is None:
        return ()
    if not value.isascii() or not value.isprintable():
        raise ApiError(
            401,
            grpc.StatusCode.UNAUTHENTICATED,
            "the Authorization header must be printable ASCII (`Bearer <token>`)",
        )
    return ((_AUTHORIZATION, value),)


Backend = Annotated[SearchBackend, Depends(backend)]
Settings = Annotated[WebSettings, Depends(settings)]
CallMetadata = Annotated[Metadata, Depends(call_metadata)]
ItemId = Annotated[str, Path(description="Item id (URL-encoded; may contain `/`).")]
FilterQuery = Annotated[
    str, Query(max_length=MAX_FILTER_CHARS, description='Label filter, e.g. `kind == "cat"`.')
]


async def read_upload(request: Request) -> tuple[bytes, dict[str, str]]:
    """The uploaded image and the other form fields (none for a raw body).

    The body limit (`middleware.BodyLimit`) bounds what is read here.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=16)
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise ApiError.invalid("the multipart form has no file in the field `image`")
        data = await upload.read()
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
    elif content_type in _RAW_TYPES:
        data, fields = await request.body(), {}
    else:
        raise ApiError(
            415,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"unsupported content type {content_type or '(none)'!r}: send the image as"
            " multipart/form-data (field `image`) or as the raw body (image/* or"
            " application/octet-stream)",
        )
    if not data:
        raise ApiError.invalid("the image is empty")
    return data, fields


# --- search ---------------------------------------------------------------------------------


def saturated(count: int) -> int:
    """A count for a uint32 field; larger ones become 2**32-1, which Search refuses.

    So the refusal names Search's real limit (top_k at most SEARCH_MAX_TOP_K,
    1000 by default), not the width of the wire type.
    """
    return min(count, UINT32_MAX)


@contextlib.contextmanager
def told_as_given(field: str, given: int) -> Iterator[None]:
    """Search's refusal of a saturated count quotes the caller's value, not 2**32-1."""
    try:
        yield
    except ApiError as error:
        if given > UINT32_MAX:
            error.message = error.message.replace(f"{field} is {UINT32_MAX}", f"{field} is {given}")
        raise


@router.post(
    "/search/image",
    response_model=SearchResult,
    summary="Search by an uploaded image",
    openapi_extra=_IMAGE_BODY,
)
async def search_by_image(
    request: Request,
    search: Backend,
    config: Settings,
    metadata: CallMetadata,
    top_k: Annotated[int, Query(ge=0, description="Hits; 0 means 10.")] = 0,
    filter: FilterQuery = "",
    min_score: Annotated[float | None, Query(description="Leave out lower scores.")] = None,
) -> SearchResult:
    """The stored items most similar to the image, best first."""
    image, _ = await read_upload(request)
    query = search_pb2.SearchRequest(image=image, top_k=saturated(top_k), filter=filter)
    if min_score is not None:
        query.min_score = min_score
    with told_as_given("top_k", top_k):
        reply = await search.call("Search", query, metadata, config.search_timeout_s)
    return SearchResult.of(reply)


@router.post("/search", response_model=SearchResult, summary="Search by stored id or by vector")
async def search_by_id_or_vector(
    body: SearchQuery, search: Backend, config: Settings, metadata: CallMetadata
) -> SearchResult:
    """The stored items most similar to a stored item ("more like this") or a vector."""
    query = search_pb2.SearchRequest(top_k=saturated(body.top_k), filter=body.filter)
    if body.id is not None:
        query.id = body.id
    else:
        query.vector.values.extend(body.vector or [])
    if body.min_score is not None:
        query.min_score = body.min_score
    with told_as_given("top_k", body.top_k):
        reply = await search.call("Search", query, metadata, config.search_timeout_s)
    return SearchResult.of(reply)


# --- items ----------------------------------------------------------------------------------


@router.get("/items", response_model=ItemPage, summary="List stored items a page at a time")
async def list_items(
    search: Backend,
    config: Settings,
    metadata: CallMetadata,
    filter: FilterQuery = "",
    page_size: Annotated[
        int, Query(ge=0, description="Items per page: 0 means 50, at most 1000.")
    ] = 0,
    page_token: Annotated[
        str, Query(max_length=4096, description="next_page_token of the previous page.")
    ] = "",
) -> ItemPage:
    """Items in ascending id order; pass next_page_token back for the next page."""
    request = search_pb2.ListRequest(
        filter=filter, page_size=saturated(page_size), page_token=page_token
    )
    with told_as_given("page_size", page_size):
        reply = await search.call("List", request, metadata, config.search_timeout_s)
    return ItemPage(
        items=[Item.of(item) for item in reply.items], next_page_token=reply.next_page_token
    )


def _labels(text: str) -> dict[str, str]:
    if not text.strip():
        return {}
    try:
        labels = json.loads(text)
    except ValueError:
        labels = None
    if not isinstance(labels, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in labels.items()
    ):
        raise ApiError.invalid('labels must be a JSON object of strings, e.g. {"kind": "cat"}')
    return labels


@router.post(
    "/items",
    response_model=InsertResult,
    status_code=201,
    summary="Insert an image (multipart form)",
    openapi_extra=_INSERT_BODY,
)
async def insert_item(
    request: Request, search: Backend, config: Settings, metadata: CallMetadata
) -> InsertResult:
    """Embed and store one image; re-inserting an id replaces that item."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != (
        "multipart/form-data"
    ):
        raise ApiError(415, grpc.StatusCode.INVALID_ARGUMENT, "send a multipart/form-data form")
    image, fields = await read_upload(request)
    item = search_pb2.Item(
        id=fields.get("id", ""),
        image=image,
        uri=fields.get("uri", ""),
        labels=_labels(fields.get("labels", "")),
    )
    reply = await search.call(
        "Insert", search_pb2.InsertRequest(items=[item]), metadata, config.insert_timeout_s
    )
    result = reply.results[0]
    if result.code != 0:
        raise ApiError.from_code_value(result.code, result.message)
    return InsertResult(id=result.id, message=result.message)


async def _get_one(
    search: SearchBackend, config: WebSettings, metadata: Metadata, item_id: str, thumbnail: bool
) -> search_pb2.StoredItem:
    request = search_pb2.GetRequest(ids=[item_id], include_thumbnails=thumbnail)
    reply = await search.call("Get", request, metadata, config.search_timeout_s)
    if not reply.items:
        raise ApiError.from_code(
            grpc.StatusCode.NOT_FOUND, f"id {item_id[:80]!r} is not in the collection"
        )
    return reply.items[0]


@router.get("/items/{item_id:path}", response_model=Item, summary="Get a stored item")
async def get_item(
    item_id: ItemId, search: Backend, config: Settings, metadata: CallMetadata
) -> Item:
    return Item.of(await _get_one(search, config, metadata, item_id, thumbnail=False))


@router.delete("/items/{item_id:path}", response_model=DeleteResult, summary="Delete an item")
async def delete_item(
    item_id: ItemId, search: Backend, config: Settings, metadata: CallMetadata
) -> DeleteResult:
    """Deleting an id that is not stored is not an error (deleted: 0)."""
    request = search_pb2.DeleteRequest(ids=[item_id])
    reply = await search.call("Delete", request, metadata, config.search_timeout_s)
    return DeleteResult(deleted=reply.deleted)


@router.get(
    "/thumbnails/{item_id:path}",
    response_class=Response,
    summary="The stored thumbnail of an item",
    responses={
        200: {"content": {"image/webp": {"schema": _BINARY}, "image/jpeg": {"schema": _BINARY}}},
        304: {"description": "Not modified (If-None-Match matched the ETag)"},
    },
)
async def get_thumbnail(
    item_id: ItemId,
    request: Request,
    search: Backend,
    config: Settings,
    metadata: CallMetadata,
) -> Response:
    """The thumbnail Search made at Insert, with an ETag and Cache-Control."""
    item = await _get_one(search, config, metadata, item_id, thumbnail=True)
    if not item.thumbnail:
        raise ApiError.from_code(
            grpc.StatusCode.NOT_FOUND,
            f"item {item_id[:80]!r} has no thumbnail (none could be made of its image, or"
            " thumbnails were off, SEARCH_THUMBNAILS_ENABLED=false, when it was stored)",
        )
    etag = '"' + hashlib.sha256(item.thumbnail).hexdigest()[:32] + '"'
    headers = {
        "ETag": etag,
        # private: the picture may be behind the caller's token.
        "Cache-Control": f"private, max-age={config.thumbnail_max_age_s}",
        "Vary": "Authorization",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(item.thumbnail, media_type=item.thumbnail_mime_type, headers=headers)


# --- duplicates, stats, health -------------------------------------------------------------


@router.post(
    "/duplicates",
    response_class=StreamingResponse,
    summary="Find groups of near-duplicate items (streamed)",
    responses={
        200: {
            "description": "One JSON object per line: progress lines, then one line per"
            " group (largest first), then a summary; an error after the stream began comes"
            " as a last line with `error`.",
            "content": {
                "application/x-ndjson": {"schema": {"$ref": "#/components/schemas/DuplicatesEvent"}}
            },
        }
    },
)
async def find_duplicates(
    body: DuplicatesQuery, search: Backend, metadata: CallMetadata
) -> StreamingResponse:
    request = search_pb2.FindDuplicatesRequest(
        threshold=body.threshold, filter=body.filter, max_neighbors=saturated(body.max_neighbors)
    )
    stream = search.find_duplicates(request, metadata)
    try:  # errors before the first message become an ordinary error response
        with told_as_given("max_neighbors", body.max_neighbors):
            first = await anext(stream)
    except StopAsyncIteration:
        first = None

    async def lines() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield _line(DuplicatesEvent.of(first))
            async for message in stream:
                yield _line(DuplicatesEvent.of(message))
        except ApiError as error:
            yield _line(DuplicatesEvent(error=error.body()))
        finally:
            await stream.aclose()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def _line(event: DuplicatesEvent) -> bytes:
    return (event.model_dump_json(exclude_none=True) + "\n").encode()


@router.get("/stats", response_model=Stats, summary="The collection, its model and the cache")
async def stats(search: Backend, config: Settings, metadata: CallMetadata) -> Stats:
    reply = await search.call("Stats", search_pb2.StatsRequest(), metadata, config.search_timeout_s)
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


@router.get(
    "/health",
    response_model=Health,
    summary="Readiness: 200 when Search is SERVING, else 503",
    responses={503: {"model": Health, "description": "Search is not SERVING"}},
)
async def health(search: Backend, response: Response) -> Health:
    status = await search.health()
    serving = status == "SERVING"
    response.status_code = 200 if serving else 503
    return Health(status="SERVING" if serving else "NOT_SERVING", search=status)


@router.get(
    "/limits",
    response_model=Limits,
    summary="The gateway's own limits (the page checks a file's size against them first)",
)
async def limits(config: Settings) -> Limits:
    return Limits(max_upload_bytes=config.max_upload_bytes)
