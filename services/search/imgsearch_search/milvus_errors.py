"""How a failed pymilvus call becomes our error taxonomy: by cause, never by message text.

pymilvus fails in four ways, all classified here (`milvus_error`):

- `grpc.RpcError`: the transport status itself (DEADLINE_EXCEEDED and the
  other codes pymilvus does not retry);
- `MilvusException` whose `code` is a `grpc.StatusCode`: pymilvus' own retries
  of that transport status ran out (UNAVAILABLE while Milvus is down);
- `MilvusException` built from a server `Status`: `code` is Milvus' error code
  (pkg/util/merr in the Milvus sources, Milvus >= 2.3), `compatible_code` the
  legacy `common.ErrorCode`, and newer servers add `is_input_error` and
  `retriable`;
- pymilvus' client-side checks (`ParamError`, `DataNotMatchException`...):
  the request was refused before it was sent.

The classes, in order of precedence (cause -> our error; retriable or not):

- the request is invalid (input error, parameter or schema mismatch)
  -> InvalidArgumentError; no;
- Milvus sheds load (rate or request limit) or is out of memory or disk quota
  -> ResourceExhaustedError; yes;
- Milvus cannot serve now: down, starting, loading or recovering the
  collection, a node or channel moving, or its status says `retriable`
  -> UnavailableError; yes;
- Milvus' own timeout -> DeadlineExceededError; no;
- the collection or database is gone, credentials refused, an operation this
  Milvus lacks -> FailedPreconditionError; no;
- anything else (Milvus' internal errors, e.g. a plan its query node cannot
  run) -> InternalError; no.

Milvus Lite reports invalid arguments with code 6, and Milvus 2.3 reports
some with the catch-all 65535; requests Search sends are validated first, so
those end up as InternalError (a Search bug, not the caller's).
"""

from __future__ import annotations

from typing import Any

import grpc
from pymilvus.exceptions import (
    DataNotMatchException,
    DataTypeNotMatchException,
    MilvusException,
    ParamError,
    PrimaryKeyException,
)
from pymilvus.grpc_gen import common_pb2

from imgsearch.common.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    ImgsearchError,
    InternalError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
)

_CLIENT_SIDE_INPUT = (ParamError, DataNotMatchException, DataTypeNotMatchException,
                      PrimaryKeyException)  # fmt: skip
# Milvus error codes (merr) by class. 6 is Milvus Lite's IllegalArgument.
_INPUT_CODES = frozenset({6, 1100, 1101, 1102, 1701, 1801, 1802, 1804})
_BUSY_CODES = frozenset({3, 4, 7, 8, 9, 12, 1807})
_TRANSIENT_CODES = frozenset({2, 101, 103, 106, 201, 202, 305, 1002, 10000})
_TRANSIENT_RANGES = (range(400, 700), range(900, 1000))  # replicas, channels, segments, nodes
_TIMEOUT_CODES = frozenset({10001})
_GONE_CODES = frozenset({100, 200, 800, 1700})
_REFUSED_CODES = frozenset({10, 1400, 1401, 1800, 2001, 3000})
# Legacy common.ErrorCode values (set by servers that predate merr, and by Milvus Lite).
_LEGACY = common_pb2.ErrorCode
_LEGACY_INPUT = frozenset(
    _LEGACY.Value(name)
    for name in ("IllegalArgument", "IllegalDimension", "IllegalTOPK", "IllegalRowRecord",
                 "IllegalVectorID", "IllegalMetricType")
)  # fmt: skip
_LEGACY_BUSY = frozenset(
    _LEGACY.Value(name)
    for name in ("RateLimit", "ForceDeny", "MemoryQuotaExhausted", "DiskQuotaExhausted",
                 "InsufficientMemoryToLoad")
)  # fmt: skip
_LEGACY_TRANSIENT = frozenset(
    _LEGACY.Value(name)
    for name in ("ConnectFailed", "NotShardLeader", "NoReplicaAvailable", "NotReadyServe",
                 "NotReadyCoordActivating", "TimeTickLongDelay")
)  # fmt: skip
_LEGACY_GONE = frozenset(
    _LEGACY.Value(name) for name in ("CollectionNotExists", "CollectionNameNotFound")
)
_LEGACY_REFUSED = frozenset({_LEGACY.Value("PermissionDenied")})

_GRPC_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                   grpc.StatusCode.ABORTED)  # fmt: skip
_GRPC_REFUSED = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAUTHENTICATED,
                 grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)  # fmt: skip


def _from_grpc(where: str, what: str, code: Any, details: str) -> ImgsearchError:
    name = getattr(code, "name", str(code))
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceededError(f"{where} did not finish {what} in time")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhaustedError(f"{where} is overloaded ({what}): {details}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgumentError(f"{where} refused {what} as invalid: {details}")
    if code in _GRPC_TRANSIENT:
        return UnavailableError(f"{where} failed {what}: {name}: {details}")
    if code in _GRPC_REFUSED:
        return FailedPreconditionError(f"{where} refused {what} ({name}): {details}")
    return InternalError(f"{where} failed {what} ({name}): {details}")


def _class_of(error: MilvusException) -> str:
    """input, busy, transient, timeout, gone, refused or internal."""
    code, legacy = error.code, error.compatible_code
    if error.is_input_error or isinstance(error, _CLIENT_SIDE_INPUT):
        return "input"
    if code in _INPUT_CODES or (code in (0, 1) and legacy in _LEGACY_INPUT):
        return "input"
    if code in _BUSY_CODES or legacy in _LEGACY_BUSY:
        return "busy"
    if error.retriable or code in _TRANSIENT_CODES or legacy in _LEGACY_TRANSIENT:
        return "transient"
    if any(code in codes for codes in _TRANSIENT_RANGES):
        return "transient"
    if code in _TIMEOUT_CODES:
        return "timeout"
    if code in _GONE_CODES or legacy in _LEGACY_GONE:
        return "gone"
    if code in _REFUSED_CODES or legacy in _LEGACY_REFUSED:
        return "refused"
    return "internal"


def milvus_error(where: str, what: str, error: BaseException) -> ImgsearchError:
    """Our error for a failed pymilvus call doing `what` (e.g. "the upsert") at `where`."""
    if isinstance(error, grpc.RpcError):
        code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = error.details() if isinstance(error, grpc.Call) else str(error)
        return _from_grpc(where, what, code, details or "")
    if not isinstance(error, MilvusException):
        return InternalError(f"{where} failed {what}: {type(error).__name__}: {error}")
    if isinstance(error.code, grpc.StatusCode):
        return _from_grpc(where, what, error.code, error.message)
    reason = f"{error.message} (Milvus code {error.code})"
    kind = _class_of(error)
    if kind == "input":
        return InvalidArgumentError(f"{where} refused {what} as invalid: {reason}")
    if kind == "busy":
        return ResourceExhaustedError(f"{where} is overloaded ({what}): {reason}")
    if kind == "transient":
        return UnavailableError(f"{where} failed {what}: {reason}")
    if kind == "timeout":
        return DeadlineExceededError(f"{where} did not finish {what} in time: {reason}")
    if kind == "gone":
        return FailedPreconditionError(
            f"{where} no longer has what {what} needs: {reason}; restart Search to"
            " create the collection again"
        )
    if kind == "refused":
        return FailedPreconditionError(f"{where} refused {what}: {reason}")
    return InternalError(f"{where} failed {what}: {reason}")
