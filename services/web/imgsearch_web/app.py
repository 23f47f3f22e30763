"""The gateway application: `create_app(settings)` builds it, `server` runs it.

Routes: the JSON API under `/v1` (`api`), the web page at `/` with its files
under `/static` (`pages`), liveness at `/healthz`, readiness at `/readyz`
(Search SERVING), and the OpenAPI document at `/openapi.json`, generated from
the typed models. No interactive docs page: it would load scripts from a CDN.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import CollectorRegistry

from imgsearch_web import api, pages
from imgsearch_web.errors import install_handlers
from imgsearch_web.middleware import BodyLimit, HttpMetrics, SecurityHeaders
from imgsearch_web.models import DuplicatesEvent
from imgsearch_web.search_client import SearchBackend
from imgsearch_web.settings import WebSettings

DESCRIPTION = """\
HTTP/JSON gateway of imgsearch's Search gRPC service (`imgsearch.v1.Search`).

Errors have the body `{"code": "<gRPC status name>", "message": "..."}` and
the HTTP status of grpc-gateway's table (INVALID_ARGUMENT 400, UNAUTHENTICATED
401, PERMISSION_DENIED 403, NOT_FOUND 404, RESOURCE_EXHAUSTED 429,
UNAVAILABLE 503, DEADLINE_EXCEEDED 504). When Search requires tokens, send
`Authorization: Bearer <token>`: the gateway passes it through to Search.
"""


def _version() -> str:
    try:
        return metadata.version("imgsearch")
    except metadata.PackageNotFoundError:
        return "0"


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document: validation errors are 400 (ErrorBody), never 422; bearer auth."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for path in document.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            schemas = document.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            # The NDJSON lines of /v1/duplicates: a model no route returns as JSON.
            event = DuplicatesEvent.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(event.pop("$defs", {}))
            schemas["DuplicatesEvent"] = event
            document.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            # Optional: a stack without auth needs no token.
            document["security"] = [{"bearer": []}, {}]
            app.openapi_schema = document
        return app.openapi_schema

    return build


def create_app(settings: WebSettings, registry: CollectorRegistry | None = None) -> FastAPI:
    """The gateway for `settings`; its gRPC channel opens on start-up and closes on shutdown."""
    backend = SearchBackend(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend.open()
        try:
            yield
        finally:
            await backend.close()

    app = FastAPI(
        title="imgsearch",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        root_path=settings.root_path,
    )
    app.state.backend = backend
    app.state.settings = settings
    install_handlers(app)
    app.include_router(api.router)
    app.include_router(pages.router)
    pages.mount_static(app)
    # The last added is the outermost: metrics see every response, the limit runs first.
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(HttpMetrics, registry=registry or CollectorRegistry())
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app
