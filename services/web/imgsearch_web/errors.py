"""HTTP errors of the gateway: one gRPC-to-HTTP status table, one JSON error body.

The table is grpc-gateway's (`runtime/errors.go`, `HTTPStatusFromCode`), so
clients of both gateways see the same statuses. Every error the gateway sends
has the body `{"code": "<gRPC status name>", "message": "<what went wrong>"}`:
errors from Search keep Search's code and message; the gateway's own
(validation, size limits, content types) use the code that matches them.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from imgsearch_web.middleware import BodyTooLargeError, too_large_message

_log = logging.getLogger(__name__)

HTTP_STATUS_FOR_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
_CODE_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}
# HTTP statuses of the gateway's own errors -> the gRPC code named in the body.
_CODE_FOR_HTTP_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}


class ErrorBody(BaseModel):
    """The body of every error response."""

    code: str = Field(
        description="gRPC status name, e.g. INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE."
    )
    message: str = Field(description="What went wrong, for a person to read.")


class ApiError(Exception):
    """An error response: HTTP status, gRPC code name and message."""

    def __init__(self, status: int, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    @classmethod
    def from_code(cls, code: grpc.StatusCode, message: str) -> ApiError:
        return cls(HTTP_STATUS_FOR_CODE.get(code, 500), code, message)

    @classmethod
    def from_code_value(cls, value: int, message: str) -> ApiError:
        """From a numeric gRPC code (InsertResponse item results carry those)."""
        return cls.from_code(_CODE_BY_VALUE.get(value, grpc.StatusCode.UNKNOWN), message)

    @classmethod
    def invalid(cls, message: str) -> ApiError:
        return cls(400, grpc.StatusCode.INVALID_ARGUMENT, message)

    def body(self) -> dict[str, str]:
        return {"code": self.code.name, "message": self.message}


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def from_rpc_error(error: grpc.aio.AioRpcError, address: str) -> ApiError:
    """The response for a failed call to Search: its own code and message."""
    code = error.code()
    details = error.details() or code.name
    if code == grpc.StatusCode.UNAVAILABLE:
        details = f"the Search service at {address} is unavailable: {details}"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        details = f"the Search service at {address} did not answer in time: {details}"
    return ApiError.from_code(code, details)


def _describe_validation(error: RequestValidationError) -> str:
    """One line naming each bad field, e.g. `query parameter top_k: ...`."""
    parts = []
    for problem in error.errors()[:5]:
        location = [str(part) for part in problem.get("loc", ())]
        where = {"query": "query parameter", "path": "path", "body": "body", "header": "header"}
        head = where.get(location[0], location[0]) if location else "request"
        name = ".".join(location[1:])
        message = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
        if problem.get("type") == "json_invalid":
            # loc is ("body", offset): say what it is, not "body 1: JSON decode error".
            reason = (problem.get("ctx") or {}).get("error", "")
            detail = "" if reason in ("", "JSON decode error") else f": {reason}"
            parts.append(f"request body is not valid JSON (at character {name or 0}{detail})")
            continue
        parts.append(f"{head} {name}".strip() + f": {message}")
    return "; ".join(parts) or "the request is invalid"


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route fully matches for this path (Starlette's own matching)."""
    allowed = []
    for method in ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def install_handlers(app: FastAPI) -> None:
    """Every error leaves the gateway as an ErrorBody with the matching status."""

    async def on_api_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiError)
        return error_response(error)

    async def on_validation(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return error_response(ApiError.invalid(_describe_validation(error)))

    async def on_http(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        code = _CODE_FOR_HTTP_STATUS.get(error.status_code, grpc.StatusCode.UNKNOWN)
        headers: dict[str, str] = dict(getattr(error, "headers", None) or {})
        message = str(error.detail)
        path = request.url.path
        if error.status_code == 405:
            # Starlette names only the first route's methods; list every route's of the path.
            headers["Allow"] = ", ".join(_allowed_methods(request))
            message = f"{request.method} is not allowed on {path}; use {headers['Allow']}"
        elif error.status_code == 404 and message == "Not Found":  # no route, no static file
            message = f"nothing at {path} (the HTTP API is described at /openapi.json)"
        return error_response(ApiError(error.status_code, code, message), headers)

    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        _log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(
            ApiError(
                500,
                grpc.StatusCode.INTERNAL,
                f"internal error ({type(error).__name__}); see the gateway's logs",
            )
        )

    async def on_too_large(request: Request, error: Exception) -> JSONResponse:
        limit = request.app.state.settings.max_upload_bytes
        return error_response(
            ApiError(
                413,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                too_large_message(limit),
            ),
            {"Connection": "close"},
        )

    app.add_exception_handler(BodyTooLargeError, on_too_large)
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


# Documented on every operation of the API (the OpenAPI document lists them).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Invalid request (INVALID_ARGUMENT, FAILED_PRECONDITION)"),
        (401, "No or bad token, when Search requires one (UNAUTHENTICATED)"),
        (403, "The token does not allow this (PERMISSION_DENIED)"),
        (404, "No such item (NOT_FOUND)"),
        (413, "Body over the gateway's upload limit"),
        (415, "Unsupported content type"),
        (429, "Search is overloaded (RESOURCE_EXHAUSTED)"),
        (500, "Internal error"),
        (503, "Search or one of its dependencies is unavailable"),
        (504, "Search did not answer in time"),
    )
}
