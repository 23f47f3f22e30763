"""The HTTP/JSON API against the real stack: every route, its errors and its limits."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from imgsearch.client import Client
from tests.fixtures.photos import corrupt, jpeg, load_photo
from tests.web.conftest import SUITE_FILTER, WebUnderTest

pytestmark = pytest.mark.slow


def _error(reply: httpx.Response, status: int, code: str, *fragments: str) -> str:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"code", "message"}, body
    assert body["code"] == code, body
    for fragment in fragments:
        assert fragment in body["message"], body
    return str(body["message"])


def test_health_stats_and_the_page(web: WebUnderTest) -> None:
    assert web.http.get("/v1/health").json() == {"status": "SERVING", "search": "SERVING"}
    assert web.http.get("/readyz").status_code == 200
    assert web.http.get("/healthz").json() == {"status": "ok"}
    stats = web.http.get("/v1/stats").json()
    assert stats["item_count"] >= len(web.ids)
    assert web.http.get("/v1/limits").json() == {"max_upload_bytes": 16 * 1024 * 1024}
    assert stats["dimension"] > 0
    page = web.http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # Offline: the page and its files reference nothing on another origin.
    for path in ("/", "/static/app.js", "/static/app.css"):
        text = web.http.get(path).text
        assert "http://" not in text, path
        assert "https://" not in text, path
        assert not re.search(r"""(src|href)=["']//|url\(\s*["']?//|@import""", text), path


def test_search_by_image_raw_and_multipart_by_id_and_by_vector(web: WebUnderTest) -> None:
    photo = (web.photo_dir / "coins.jpg").read_bytes()
    params = {"top_k": 3, "filter": SUITE_FILTER}
    raw = web.http.post(
        "/v1/search/image", params=params, content=photo, headers={"content-type": "image/jpeg"}
    ).json()
    form = web.http.post(
        "/v1/search/image", params=params, files={"image": ("q.jpg", photo, "image/jpeg")}
    ).json()
    assert [h["id"] for h in raw["hits"]] == [h["id"] for h in form["hits"]]
    assert raw["hits"][0]["id"] == "web/coins"
    assert raw["hits"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert raw["hits"][0]["thumbnail_url"] == "v1/thumbnails/web%2Fcoins"
    # The photo itself: found by the whole image, not by a view of it.
    assert raw["hits"][0]["matched_view"] == ""
    assert len(raw["hits"]) == 3

    by_id = web.http.post("/v1/search", json={"id": "web/moon", "top_k": 2, "filter": SUITE_FILTER})
    assert by_id.json()["hits"][0]["id"] == "web/moon"

    with Client(web.search) as client:
        vector = client.get(["web/clock"], include_vectors=True).items[0].vector
    by_vector = web.http.post(
        "/v1/search", json={"vector": vector, "top_k": 1, "filter": SUITE_FILTER}
    ).json()
    assert by_vector["hits"][0]["id"] == "web/clock"
    high = web.http.post(
        "/v1/search", json={"id": "web/clock", "min_score": 0.999, "filter": SUITE_FILTER}
    ).json()
    assert [h["id"] for h in high["hits"]] == ["web/clock"]


def test_items_get_list_delete_and_thumbnails(web: WebUnderTest) -> None:
    item = web.http.get("/v1/items/web/horse").json()
    assert item["id"] == "web/horse"
    assert item["labels"] == {"suite": "web"}
    assert item["uri"] == "horse.jpg"
    assert len(item["content_sha256"]) == 64

    thumb = web.http.get("/v1/thumbnails/web%2Fhorse")
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/webp"
    assert thumb.content[:4] == b"RIFF"
    assert "private" in thumb.headers["cache-control"]
    etag = thumb.headers["etag"]
    again = web.http.get("/v1/thumbnails/web/horse", headers={"if-none-match": etag})
    assert again.status_code == 304
    assert again.headers["etag"] == etag
    assert not again.content

    seen: list[str] = []
    token = ""
    while True:
        params = {
            "filter": SUITE_FILTER,
            "page_size": 4,
            **({"page_token": token} if token else {}),
        }
        page = web.http.get("/v1/items", params=params).json()
        assert len(page["items"]) <= 4
        seen.extend(i["id"] for i in page["items"])
        token = page["next_page_token"]
        if not token:
            break
    assert seen == sorted(seen)
    assert set(web.ids.values()) <= set(seen)

    photo = jpeg(load_photo("astronaut"))
    created = web.http.post(
        "/v1/items", files={"image": ("a.jpg", photo, "image/jpeg")}, data={"id": "web/tmp"}
    )
    assert created.status_code == 201
    assert created.json() == {"id": "web/tmp", "message": ""}
    assert web.http.delete("/v1/items/web/tmp").json() == {"deleted": 1}
    assert web.http.delete("/v1/items/web/tmp").json() == {"deleted": 0}
    _error(web.http.get("/v1/items/web/tmp"), 404, "NOT_FOUND", "web/tmp")
    _error(web.http.get("/v1/thumbnails/web/tmp"), 404, "NOT_FOUND")


def test_errors_map_to_http_statuses_with_a_json_body(web: WebUnderTest) -> None:
    broken = corrupt((web.photo_dir / "horse.jpg").read_bytes())
    _error(
        web.http.post("/v1/search/image", content=broken, headers={"content-type": "image/jpeg"}),
        400,
        "INVALID_ARGUMENT",
        "image",
    )
    _error(
        web.http.post("/v1/search/image", content=b"", headers={"content-type": "image/png"}),
        400,
        "INVALID_ARGUMENT",
        "empty",
    )
    _error(
        web.http.post("/v1/search/image", content=b"x", headers={"content-type": "text/plain"}),
        415,
        "INVALID_ARGUMENT",
        "multipart/form-data",
    )
    _error(web.http.post("/v1/search", json={"id": "web/nope"}), 404, "NOT_FOUND", "web/nope")
    _error(web.http.post("/v1/search", json={}), 400, "INVALID_ARGUMENT", "exactly one")
    _error(
        web.http.post("/v1/search", json={"id": "web/moon", "filter": "a ~ b"}),
        400,
        "INVALID_ARGUMENT",
        "filter",
    )
    _error(
        web.http.post("/v1/search", json={"id": "web/moon", "top_k": 100_000}),
        400,
        "INVALID_ARGUMENT",
        "top_k",
    )
    _error(web.http.get("/v1/items", params={"page_token": "zz"}), 400, "INVALID_ARGUMENT", "token")
    _error(
        web.http.get("/v1/items", params={"page_size": -1}), 400, "INVALID_ARGUMENT", "page_size"
    )
    _error(
        web.http.post("/v1/items", files={"image": ("x", b"not an image", "image/jpeg")}),
        400,
        "INVALID_ARGUMENT",
        "image",
    )
    _error(
        web.http.post(
            "/v1/items",
            files={"image": ("x", b"x", "image/jpeg")},
            data={"labels": "[1, 2]"},
        ),
        400,
        "INVALID_ARGUMENT",
        "labels",
    )
    _error(web.http.get("/v1/nothing"), 404, "NOT_FOUND", "nothing at /v1/nothing", "openapi")
    _error(
        web.http.post("/v1/search", content=b"{oops", headers={"content-type": "application/json"}),
        400,
        "INVALID_ARGUMENT",
        "request body is not valid JSON (at character 1",
    )
    not_allowed = web.http.put("/v1/items")
    _error(not_allowed, 405, "UNIMPLEMENTED", "PUT is not allowed on /v1/items; use GET, POST")
    assert not_allowed.headers["allow"] == "GET, POST"
    _error(
        web.http.get("/v1/stats", headers={"authorization": "Bearer caf\u00e9".encode()}),
        401,
        "UNAUTHENTICATED",
        "ASCII",
    )


class _Zeros:
    """A file of unknown length (so the multipart body goes out chunked)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, size: int = -1) -> bytes:
        count = self.left if size < 0 else min(size, self.left)
        self.left -= count
        return b"\0" * count


def test_uploads_over_the_limit_are_refused_before_or_while_they_arrive(web: WebUnderTest) -> None:
    limit = 16 * 1024 * 1024
    # Declared too large: refused without reading the body.
    _error(
        web.http.post(
            "/v1/search/image",
            content=b"\0" * (limit + 1),
            headers={"content-type": "image/jpeg"},
        ),
        413,
        "RESOURCE_EXHAUSTED",
        f"over the gateway's limit of {limit} bytes (16 MiB, WEB_MAX_UPLOAD_BYTES)",
    )

    def chunks():  # no Content-Length: counted as it streams in
        for _ in range(20):
            yield b"\0" * (1024 * 1024)

    _error(
        web.http.post("/v1/search/image", content=chunks(), headers={"content-type": "image/jpeg"}),
        413,
        "RESOURCE_EXHAUSTED",
        "(16 MiB, WEB_MAX_UPLOAD_BYTES)",
    )
    _error(
        web.http.post("/v1/items", files={"image": ("big.jpg", _Zeros(limit + 1), "image/jpeg")}),
        413,
        "RESOURCE_EXHAUSTED",
    )
    # The gateway is still fine afterwards.
    assert web.http.get("/v1/health").status_code == 200


def test_duplicates_stream_progress_then_groups_then_a_summary(web: WebUnderTest) -> None:
    with web.http.stream(
        "POST", "/v1/duplicates", json={"threshold": 0.9, "filter": SUITE_FILTER}
    ) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("application/x-ndjson")
        events = [json.loads(line) for line in reply.iter_lines() if line]
    kinds = [next(iter(event)) for event in events]
    assert kinds[0] == "progress"
    assert kinds[-1] == "summary"
    assert kinds == sorted(kinds, key=["progress", "group", "summary"].index)
    groups = [[m["id"] for m in event["group"]["items"]] for event in events if "group" in event]
    assert ["web/horse", "web/horse-small"] in groups
    assert events[-1]["summary"]["items_scanned"] == len(web.ids) + 1
    _error(
        web.http.post("/v1/duplicates", json={"threshold": 2}), 400, "INVALID_ARGUMENT", "threshold"
    )
    _error(
        web.http.post("/v1/duplicates", json={"max_neighbors": 5000}),
        400,
        "INVALID_ARGUMENT",
        "max_neighbors",
    )


def test_openapi_document_is_typed_and_maps_errors(web: WebUnderTest) -> None:
    document = web.http.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    assert {
        "/v1/search/image",
        "/v1/search",
        "/v1/items",
        "/v1/items/{item_id}",
        "/v1/thumbnails/{item_id}",
        "/v1/duplicates",
        "/v1/stats",
        "/v1/health",
        "/v1/limits",
    } <= set(paths)
    for path, operations in paths.items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (path, method)
            assert {"400", "401", "404", "503"} <= set(responses), (path, method)
            assert responses["400"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }
    schemas = document["components"]["schemas"]
    assert {"SearchResult", "Item", "ItemPage", "DuplicatesEvent", "ErrorBody"} <= set(schemas)
    matched_view = schemas["Hit"]["properties"]["matched_view"]
    assert matched_view["type"] == "string"
    assert "inset" in matched_view["description"]
    body = paths["/v1/search/image"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/jpeg", "application/octet-stream"} <= set(body)
