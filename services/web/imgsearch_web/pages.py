"""The web page (`/`, files under `/static`) and the probes (`/healthz`, `/readyz`).

The page is plain HTML, CSS and JavaScript shipped in this package: nothing is
loaded from another origin, so it works offline and under a strict
Content-Security-Policy.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from imgsearch_web.search_client import SearchBackend

STATIC_DIR = Path(__file__).resolve().parent / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/healthz", include_in_schema=False)
async def liveness() -> Response:
    """The process answers HTTP (Search may be down: that is readiness, not liveness)."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz", include_in_schema=False)
async def readiness(request: Request) -> Response:
    """200 when Search is SERVING, 503 otherwise."""
    if getattr(request.app.state, "draining", False):
        return JSONResponse({"search": "DRAINING"}, status_code=503)
    backend: SearchBackend = request.app.state.backend
    status = await backend.health()
    return JSONResponse({"search": status}, status_code=200 if status == "SERVING" else 503)


def mount_static(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
