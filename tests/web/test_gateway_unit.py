"""The gateway in-process: credentials pass through to Search, and every gRPC status Search can
return becomes its HTTP status with the JSON error body.

Search here is a recording stand-in served by a real grpc.aio server on
loopback: the real Search cannot be made to return UNAUTHENTICATED or
PERMISSION_DENIED (its token checks are the security issue's work) nor be
asked what metadata it received. Everything else is real: the FastAPI app,
its gRPC channel and the wire in between.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import httpx
import pytest

from imgsearch.v1 import search_pb2, search_pb2_grpc
from imgsearch_web.app import create_app
from imgsearch_web.errors import HTTP_STATUS_FOR_CODE
from imgsearch_web.settings import WebSettings


class RecordingSearch(search_pb2_grpc.SearchServicer):
    """Answers Stats with the status it is told to, and remembers each call's metadata."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []
        self.status = grpc.StatusCode.OK

    async def Stats(self, request, context):
        self.metadata.append({key: str(value) for key, value in context.invocation_metadata()})
        if self.status != grpc.StatusCode.OK:
            await context.abort(self.status, f"search says {self.status.name}")
        return search_pb2.StatsResponse(item_count=7, dimension=4, model="m")


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[httpx.AsyncClient, RecordingSearch]]:
    search = RecordingSearch()
    server = grpc.aio.server()
    search_pb2_grpc.add_SearchServicer_to_server(search, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    app = create_app(WebSettings(search_address=f"127.0.0.1:{port}", search_timeout_s=5))
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http,
        ):
            yield http, search
    finally:
        await server.stop(0)


async def test_the_callers_token_reaches_search_and_nothing_else_does(gateway) -> None:
    http, search = gateway
    reply = await http.get("/v1/stats", headers={"Authorization": "Bearer s3cret-token"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["item_count"] == 7
    assert search.metadata[-1]["authorization"] == "Bearer s3cret-token"
    await http.get("/v1/stats")
    assert "authorization" not in search.metadata[-1]
    assert "cookie" not in search.metadata[-1]


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    ],
)
async def test_search_statuses_become_http_statuses(gateway, code, status) -> None:
    http, search = gateway
    search.status = code
    reply = await http.get("/v1/stats")
    assert reply.status_code == status
    assert reply.json()["code"] == code.name
    assert f"search says {code.name}" in reply.json()["message"]


async def test_an_unreachable_search_is_503_and_not_ready() -> None:
    app = create_app(WebSettings(search_address="127.0.0.1:1", search_timeout_s=2))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http,
    ):
        reply = await http.get("/v1/stats")
        assert reply.status_code == 503
        assert reply.json()["code"] == "UNAVAILABLE"
        assert "127.0.0.1:1" in reply.json()["message"]
        health = await http.get("/v1/health")
        assert health.status_code == 503
        assert health.json() == {"status": "NOT_SERVING", "search": "UNREACHABLE"}
        assert (await http.get("/readyz")).status_code == 503
        assert (await http.get("/healthz")).status_code == 200


def test_the_status_table_is_grpc_gateways() -> None:
    # runtime/errors.go, HTTPStatusFromCode.
    assert {code.name: status for code, status in HTTP_STATUS_FOR_CODE.items()} == {
        "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
        "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
        "PERMISSION_DENIED": 403, "UNAUTHENTICATED": 401, "RESOURCE_EXHAUSTED": 429,
        "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400,
        "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500,
    }  # fmt: skip


def test_sigterm_drains_readiness_then_exits_cleanly() -> None:
    """The process as deployed: /readyz turns 503 during the drain delay, then exit status 0."""
    import os
    import signal
    import sys
    import time

    from tests.fixtures.processes import ChildProcess

    env = {"WEB_LOG_LEVEL": "WARNING", "WEB_METRICS_PORT": "0", "WEB_DRAIN_DELAY_S": "3"}
    child = ChildProcess(
        "web",
        [sys.executable, "-m", "imgsearch_web", "--host", "127.0.0.1", "--port", "0",
         "--search-address", "127.0.0.1:1"],
        env={**os.environ, **env},
    )  # fmt: skip
    try:
        url = child.wait_for_line(r"web listening on (http://\S+)", timeout=60)[1]
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        child.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        draining = httpx.get(f"{url}/readyz", timeout=10)
        assert draining.status_code == 503
        assert draining.json() == {"search": "DRAINING"}
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200  # still up
        assert child.proc.wait(30) == 0
    finally:
        child.stop()


async def test_a_duplicate_scan_beyond_searchs_limit_is_429_naming_the_limit() -> None:
    """Search's own stream limit (the runtime's, with a held stand-in scan) through the gateway.

    The scan holding the one place is a direct gRPC call: httpx's in-process
    transport returns a response only once its body is complete.
    """
    from tests.common.test_stream_limits import _open_scan, held_search

    async with held_search(stream_limit=1) as (servicer, port, channel):
        held = await _open_scan(search_pb2_grpc.SearchStub(channel))
        app = create_app(WebSettings(search_address=f"127.0.0.1:{port}", search_timeout_s=5))
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://gw") as http,
        ):
            refused = await http.post("/v1/duplicates", json={"threshold": 0.9})
            assert refused.status_code == 429
            assert refused.json() == {
                "code": "RESOURCE_EXHAUSTED",
                "message": "server busy: 1 long-running streams in progress"
                " (limit 1, SEARCH_MAX_CONCURRENT_STREAMS); retry later",
            }
            servicer.release.set()
            held.cancel()


def test_the_page_offers_the_servers_default_duplicate_threshold() -> None:
    """The page's threshold field starts at the value Search uses for 0 (one constant)."""
    import re
    from importlib import resources

    from imgsearch.common.duplicates import DEFAULT_DUPLICATE_THRESHOLD
    from imgsearch_search.duplicates import DEFAULT_THRESHOLD

    page = (resources.files("imgsearch_web") / "static" / "index.html").read_text()
    field = re.search(r'<input id="dup-threshold"[^>]*value="([0-9.]+)"', page)
    assert field is not None
    assert float(field.group(1)) == DEFAULT_DUPLICATE_THRESHOLD == DEFAULT_THRESHOLD
