"""One error taxonomy for every imgsearch service, mapped to gRPC status codes here only.

Service code raises these; the server interceptor (`imgsearch.common.grpc_runtime`)
turns them into the matching status with the error's message. Errors are classified
by cause, with two flags a caller can act on without matching strings:

- `retriable`: the same request may succeed later (queue full, dependency down);
- `input_error`: the request itself is at fault and will fail again unchanged
  (bad image, request over a limit, unknown id).

Of the exceptions no handler raises on purpose, `MemoryError` is the server
running short of memory (RESOURCE_EXHAUSTED, retriable); any other becomes
INTERNAL (logged with its traceback), never UNKNOWN. Code that reads untrusted
input (image decoding) turns the input's failures into `InvalidArgumentError`
where they happen, so they never reach this fallback.
"""

from __future__ import annotations

import grpc


class ImgsearchError(Exception):
    """Base of all errors a handler may raise on purpose.

    `code` is the gRPC status the client receives; `retriable` tells callers
    (our own clients included) whether the same request may succeed later;
    `input_error` whether the request itself is at fault.
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retriable: bool = False
    input_error: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(ImgsearchError):
    """The request is malformed: bad image, bad filter, out-of-range parameter."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    input_error = True


class NotFoundError(ImgsearchError):
    """The request names something that does not exist (an unknown id)."""

    code = grpc.StatusCode.NOT_FOUND
    input_error = True


class ResourceExhaustedError(ImgsearchError):
    """A shared resource is exhausted: a queue, the RPC slots, memory (retry later)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retriable = True


class RequestTooLargeError(ResourceExhaustedError):
    """The request is over a per-request limit (images, bytes): split it; retrying cannot help."""

    retriable = False
    input_error = True


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


class InternalError(ImgsearchError):
    """A dependency failed in a way retrying cannot fix (its own fault, or a request it
    does not support); the message names the dependency and its reason."""

    code = grpc.StatusCode.INTERNAL


class CancelledError(ImgsearchError):
    """The caller cancelled the request."""

    code = grpc.StatusCode.CANCELLED


# gRPC's retry protocol (gRFC A6): a server-sent negative pushback tells the
# client's retry policy not to retry this call, whatever its status code.
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"


def retry_metadata(exc: BaseException) -> tuple[tuple[str, str], ...]:
    """Trailing metadata that stops gRPC's automatic retries of an error that is not retriable.

    Retry policies can only name status codes, and a code such as
    RESOURCE_EXHAUSTED covers both a full queue (retriable) and a request over
    a size limit (never). The `retriable` flag decides: a failure that must not
    be retried carries `grpc-retry-pushback-ms: -1`.
    """
    if isinstance(exc, ImgsearchError) and exc.retriable:
        return ()
    return ((RETRY_PUSHBACK_KEY, "-1"),)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Return the gRPC status code and message that `exc` should produce."""
    if isinstance(exc, ImgsearchError):
        return exc.code, exc.message
    if isinstance(exc, MemoryError):
        return (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "the server ran short of memory for this request; retry later or send less at once",
        )
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see server logs"
