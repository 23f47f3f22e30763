"""Error messages that say the real rule: over HTTP (the gateway) and gRPC (Search itself).

Against the session's stack: real gateway, real Search over loopback gRPC.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import grpc
import pytest

from imgsearch.v1 import search_pb2, search_pb2_grpc
from tests.web.conftest import WebUnderTest
from tests.web.test_api import _error

BLANK_IDS = ["\u200b\ufeff", " ", "\u00a0\u2003", "\u200e\u2060", "\u3000"]


@pytest.fixture(scope="module")
def stub(web: WebUnderTest):
    with grpc.insecure_channel(web.search) as channel:
        yield search_pb2_grpc.SearchStub(channel)


@pytest.mark.parametrize("value", [1.5, -1.01, 1e30, -1e30])
def test_min_score_outside_the_range_is_refused(web: WebUnderTest, stub, value: float) -> None:
    stored = web.ids["coins"]
    http = web.http.post("/v1/search", json={"id": stored, "min_score": value})
    _error(http, 400, "INVALID_ARGUMENT", "min_score", "outside [-1, 1]")
    with pytest.raises(grpc.RpcError) as caught:
        stub.Search(search_pb2.SearchRequest(id=stored, min_score=value), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "outside [-1, 1]" in caught.value.details()
    # The edges are fine.
    for edge in (-1.0, 1.0):
        assert (
            web.http.post("/v1/search", json={"id": stored, "min_score": edge}).status_code == 200
        )


@pytest.mark.parametrize("blank", BLANK_IDS)
def test_blank_ids_are_refused_on_insert_get_and_delete(stub, blank: str) -> None:
    rule = "an id needs at least one visible character"
    with pytest.raises(grpc.RpcError) as caught:
        stub.Get(search_pb2.GetRequest(ids=[blank]), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rule in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        stub.Delete(search_pb2.DeleteRequest(ids=[blank]), timeout=30)
    assert rule in caught.value.details()
    reply = stub.Insert(
        search_pb2.InsertRequest(items=[search_pb2.Item(id=blank, image=b"x")]), timeout=30
    )
    assert reply.results[0].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert rule in reply.results[0].message
    # Visible characters next to invisible ones are fine (an id is otherwise free text).
    assert stub.Get(search_pb2.GetRequest(ids=["\u200bvisible"]), timeout=30).missing_ids


@pytest.mark.parametrize(("field", "route"), [("top_k", "/v1/search"), ("top_k", "query")])
def test_huge_top_k_names_the_real_limit(web: WebUnderTest, field: str, route: str) -> None:
    huge = 1_000_000_000_000
    if route == "query":
        reply = web.http.post(
            "/v1/search/image", params={"top_k": huge},
            content=(web.photo_dir / "coins.jpg").read_bytes(),
            headers={"content-type": "image/jpeg"},
        )  # fmt: skip
    else:
        reply = web.http.post(route, json={"id": web.ids["coins"], "top_k": huge})
    message = _error(reply, 400, "INVALID_ARGUMENT", f"top_k is {huge}", "limit of 1000")
    assert "4294967295" not in message


def test_huge_max_neighbors_names_the_real_limit(web: WebUnderTest) -> None:
    huge = 10**13
    reply = web.http.post("/v1/duplicates", json={"max_neighbors": huge})
    message = _error(reply, 400, "INVALID_ARGUMENT", f"max_neighbors is {huge}", "limit of 256")
    assert "4294967295" not in message


def test_huge_page_size_is_coerced_like_any_large_one(web: WebUnderTest) -> None:
    # Search serves at most 1000 per page (AIP-158 lets a server coerce page_size);
    # a value past uint32 is no longer refused by the gateway with the wire width.
    reply = web.http.get("/v1/items", params={"page_size": 10**15, "filter": 'suite == "web"'})
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(("body", "at"), [(b"{oops", 1), (b'{"id": "x",}', 11), (b"", 0)])
def test_malformed_json_body(web: WebUnderTest, body: bytes, at: int) -> None:
    reply = web.http.post("/v1/search", content=body, headers={"content-type": "application/json"})
    message = _error(reply, 400, "INVALID_ARGUMENT")
    if body:
        assert message.startswith(f"request body is not valid JSON (at character {at}")


@pytest.mark.parametrize("length", [100_000, 1_000_000])
def test_an_unparsable_request_gets_the_json_error_shape(web: WebUnderTest, length: int) -> None:
    parts = urlsplit(web.url)
    request = (
        f"GET /v1/items?filter={'a' * length} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(request.encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"content-type: application/json" in head.lower()
    assert b'"code": "INVALID_ARGUMENT"' in body
    assert b"too long" in body
