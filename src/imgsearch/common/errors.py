"""One error taxonomy for every imgsearch service, mapped to gRPC status codes here only.

Service code raises these; the server interceptor (`imgsearch.common.grpc_runtime`)
turns them into the matching status with the error's message. Any other exception
that escapes a handler becomes INTERNAL (logged with its traceback), never UNKNOWN.
"""

from __future__ import annotations

import grpc


class ImgsearchError(Exception):
    """Base of all errors a handler may raise on purpose.

    `code` is the gRPC status the client receives; `retriable` tells callers
    (our own clients included) whether the same request may succeed later.
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retriable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(ImgsearchError):
    """The request is malformed: bad image, bad filter, out-of-range parameter."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(ImgsearchError):
    """The request names something that does not exist (an unknown id)."""

    code = grpc.StatusCode.NOT_FOUND


class ResourceExhaustedError(ImgsearchError):
    """A limit was hit: request too large, or a queue is full (retry later)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retriable = True


class FailedPreconditionError(ImgsearchError):
    """The system is not in a state to serve the request (e.g. model mismatch)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class UnavailableError(ImgsearchError):
    """A dependency (Embedder, Milvus) cannot be reached, or the server is draining."""

    code = grpc.StatusCode.UNAVAILABLE
    retriable = True


class DeadlineExceededError(ImgsearchError):
    """The caller's deadline passed before the work could be done."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class UnauthenticatedError(ImgsearchError):
    """The call carried no credentials, or credentials the service does not know."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(ImgsearchError):
    """The caller is known but lacks the scope the call needs."""

    code = grpc.StatusCode.PERMISSION_DENIED


class CancelledError(ImgsearchError):
    """The caller cancelled the request."""

    code = grpc.StatusCode.CANCELLED


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Return the gRPC status code and message that `exc` should produce."""
    if isinstance(exc, ImgsearchError):
        return exc.code, exc.message
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see server logs"
