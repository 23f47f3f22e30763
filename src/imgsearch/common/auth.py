"""Authentication and scopes for the gRPC services: one server interceptor, one rule table.

Who may call what:

- `METHOD_SCOPES` maps every full method name (`/package.Service/Method`) to
  the scope it needs, `OPEN` (health: the kubelet's probes carry no token), or
  `REFLECTION` (the same rule as the services the server describes: a caller
  holding any scope those services accept may list them). A method missing
  from the table is refused (fail closed); `tests/security` checks that every
  RPC of every service descriptor has an entry.
- Scopes: `search` (Search, Get, Stats and other reads), `write` (Insert,
  Delete), `admin` (everything on the server that knows the principal, and
  operator RPCs), `embed` (the Embedder's RPCs: the Search service's identity).

Who the caller is comes from a principals file (`AUTH_FILE` setting), one
principal per line, `NAME SCOPES CREDENTIAL`:

    # name    scopes        credential
    ingest    write,search  sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    search    embed         x509:search.imgsearch.svc.cluster.local

`sha256:HEX` is the SHA-256 of a bearer token (`authorization: Bearer
TOKEN` metadata): the file never holds a token. `x509:NAME` accepts a client
certificate carrying NAME among its subject alternative names; it only
counts on a server that requires and verifies client certificates (mTLS).
Tokens are high-entropy random strings (`imgsearch token create`), so one
unsalted SHA-256 is enough. The file is re-read when it changes.

A missing or unknown token is UNAUTHENTICATED, a known principal without the
scope is PERMISSION_DENIED; each refusal is logged (method, peer, reason,
principal name) and counted in `grpc_server_auth_refused`, never with the
token. Looking a token up takes the same steps whether it exists or not:
its hash is compared, in constant time, with every known hash.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter

from imgsearch.common.secret_files import FileWatch, SecretFileError, read_bytes
from imgsearch.common.tls import peer_certificate_names

_log = logging.getLogger(__name__)

SEARCH = "search"
WRITE = "write"
ADMIN = "admin"
EMBED = "embed"
SCOPES = frozenset({SEARCH, WRITE, ADMIN, EMBED})


class _Rule(str):
    """A rule that is not a scope (OPEN, REFLECTION)."""


OPEN = _Rule("open")
REFLECTION = _Rule("reflection")

# The one table of who may call what. Reads of the Search service are `search`,
# changes are `write`; new RPCs must be added here (tests/security fails otherwise).
METHOD_SCOPES: dict[str, str] = {
    "/imgsearch.v1.Search/Search": SEARCH,
    "/imgsearch.v1.Search/Get": SEARCH,
    "/imgsearch.v1.Search/Stats": SEARCH,
    "/imgsearch.v1.Search/List": SEARCH,
    "/imgsearch.v1.Search/FindDuplicates": SEARCH,
    "/imgsearch.v1.Search/Insert": WRITE,
    "/imgsearch.v1.Search/Delete": WRITE,
    "/imgsearch.v1.Embedder/Embed": EMBED,
    "/imgsearch.v1.Embedder/GetModel": EMBED,
    "/grpc.health.v1.Health/Check": OPEN,
    "/grpc.health.v1.Health/Watch": OPEN,
    "/grpc.health.v1.Health/List": OPEN,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": REFLECTION,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": REFLECTION,
}

TOKEN_PREFIX = "imgs_"  # noqa: S105 -- a marker that makes leaked tokens findable, no secret
_HASH_PREFIX = "sha256:"
_X509_PREFIX = "x509:"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
# A bearer token longer than this is refused before it is hashed.
MAX_TOKEN_BYTES = 4096


def new_token() -> str:
    """A fresh bearer token: 256 random bits, URL-safe, with a recognisable prefix."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The principals-file form of a token: `sha256:` and the hex SHA-256 of its UTF-8 bytes."""
    return _HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def principal_line(name: str, scopes: Iterable[str], credential: str) -> str:
    """One line of a principals file (checked as the parser would)."""
    line = f"{name} {','.join(sorted(set(scopes)))} {credential}"
    _parse_line(line, 1, "principal")
    return line


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its name (for logs) and its scopes."""

    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes


@dataclass(frozen=True)
class Principals:
    """The parsed principals file: token digests and certificate names, with their principals."""

    token_digests: tuple[tuple[bytes, Principal], ...]
    certificate_names: dict[str, Principal]

    def by_token(self, token: str | None) -> Principal | None:
        """The principal whose token this is; the same work for a known and an unknown token."""
        candidate = hashlib.sha256((token or "").encode("utf-8", "replace")).digest()
        found: Principal | None = None
        for digest, principal in self.token_digests:
            # No early exit: every digest is compared, each in constant time.
            if hmac.compare_digest(candidate, digest) and token:
                found = principal
        return found

    def by_certificate(self, names: Sequence[str]) -> Principal | None:
        for name in names:
            principal = self.certificate_names.get(name)
            if principal is not None:
                return principal
        return None


def _parse_line(line: str, number: int, where: str) -> tuple[str, Principal]:
    fields = line.split()
    if len(fields) != 3:
        raise SecretFileError(f"{where} line {number}: expected NAME SCOPES CREDENTIAL")
    name, scope_list, credential = fields
    if not _NAME_RE.match(name):
        raise SecretFileError(f"{where} line {number}: bad principal name {name!r}")
    scopes = frozenset(scope_list.split(","))
    unknown = scopes - SCOPES
    if unknown:
        raise SecretFileError(
            f"{where} line {number}: unknown scope(s) {', '.join(sorted(unknown))}"
            f" (known: {', '.join(sorted(SCOPES))})"
        )
    if credential.startswith(_HASH_PREFIX):
        if not _HEX_RE.match(credential.removeprefix(_HASH_PREFIX)):
            # Never echo the credential: a pasted token would end up in the logs.
            raise SecretFileError(
                f"{where} line {number}: a token hash is sha256: and 64 lowercase hex digits"
                " (the file holds hashes, never tokens: see `imgsearch token create`)"
            )
    elif not credential.startswith(_X509_PREFIX) or len(credential) == len(_X509_PREFIX):
        raise SecretFileError(
            f"{where} line {number}: the credential is sha256:HEX (a token hash) or x509:NAME"
        )
    return credential, Principal(name=name, scopes=scopes)


def parse_principals(text: str, where: str = "principals file") -> Principals:
    """Parse a principals file; SecretFileError names the line (never its secret)."""
    digests: list[tuple[bytes, Principal]] = []
    names: dict[str, Principal] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        credential, principal = _parse_line(line, number, where)
        if credential.startswith(_HASH_PREFIX):
            digests.append((bytes.fromhex(credential.removeprefix(_HASH_PREFIX)), principal))
        else:
            names[credential.removeprefix(_X509_PREFIX)] = principal
    if not digests and not names:
        raise SecretFileError(f"{where} names no principal: nobody could call the service")
    return Principals(token_digests=tuple(digests), certificate_names=names)


class PrincipalStore:
    """The principals of a file, re-read when the file changes (the last good version is kept)."""

    def __init__(self, path: Path, interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self._watch = FileWatch(self.path, interval_s=interval_s)
        self._principals = self._load()

    def _load(self) -> Principals:
        text = read_bytes(self.path, "principals file").decode("utf-8", "replace")
        return parse_principals(text, str(self.path))

    def current(self) -> Principals:
        if self._watch.changed():
            try:
                self._principals = self._load()
                _log.info("reloaded the principals file", extra={"path": str(self.path)})
            except SecretFileError as error:
                _log.error("keeping the previous principals: %s", error)
        return self._principals


class AuthMetrics:
    """Calls refused by the auth interceptor, by method, status code and reason."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.refused = Counter(
            "grpc_server_auth_refused",
            "Calls refused before reaching the service, by method, code and reason.",
            ["method", "code", "reason"],
            registry=registry,
        )


def bearer_token(metadata: Iterable[tuple[str, Any]]) -> tuple[str | None, str]:
    """The bearer token of a call's metadata, and why there is none ("" when there is one)."""
    values = [value for key, value in metadata if key == "authorization"]
    if not values:
        return None, "missing_token"
    if len(values) > 1 or not isinstance(values[0], str):
        return None, "malformed_token"
    scheme, _, token = values[0].strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_BYTES:
        return None, "malformed_token"
    return token, ""


class _Refusal(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str, message: str, who: str = "") -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.who = code, reason, message, who


def _guard(
    handler: grpc.RpcMethodHandler, check: Callable[[grpc.aio.ServicerContext], Awaitable[None]]
) -> grpc.RpcMethodHandler:
    """The same handler, running `check(context)` before the behaviour."""
    options = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        inner_unary = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            return await inner_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary, **options)
    if handler.stream_unary is not None:
        inner_stream_unary = handler.stream_unary

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            return await inner_stream_unary(requests, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **options)
    inner = handler.unary_stream or handler.stream_stream

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await check(context)
        result = inner(request, context)
        if inspect.isasyncgen(result):
            async for response in result:
                yield response
        else:
            await result  # a handler that writes with context.write()

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(streaming, **options)
    return grpc.stream_stream_rpc_method_handler(streaming, **options)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call and checks its scope before the service sees it.

    `services`: full names of the services this server exposes (what reflection
    describes). `trust_client_certificates`: the server requires and verifies
    client certificates (mTLS), so `x509:` principals count.
    """

    def __init__(
        self,
        store: PrincipalStore,
        services: Sequence[str],
        metrics: AuthMetrics,
        *,
        trust_client_certificates: bool = False,
        rules: dict[str, str] | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._trust_certificates = trust_client_certificates
        self._rules = METHOD_SCOPES if rules is None else rules
        prefixes = tuple(f"/{service}/" for service in services)
        self._reflection_scopes = frozenset(
            scope
            for method, scope in self._rules.items()
            if method.startswith(prefixes) and scope in SCOPES
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        rule = self._rules.get(method)
        if handler is None or rule is OPEN:
            return handler

        async def check(context: grpc.aio.ServicerContext) -> None:
            try:
                self._authorize(method, rule, context)
            except _Refusal as refusal:
                self._refused(method, context, refusal)
                await context.abort(refusal.code, refusal.message)

        return _guard(handler, check)

    def _authenticate(self, context: grpc.aio.ServicerContext) -> Principal:
        principals = self._store.current()
        token, problem = bearer_token(context.invocation_metadata() or ())
        principal = principals.by_token(token)
        if principal is None and self._trust_certificates and problem == "missing_token":
            principal = principals.by_certificate(peer_certificate_names(context.auth_context()))
        if principal is not None:
            return principal
        if token is not None:
            raise _Refusal(grpc.StatusCode.UNAUTHENTICATED, "unknown_token", "unknown token")
        if problem == "missing_token":
            message = "this service needs credentials: send `authorization: Bearer TOKEN`"
        else:
            message = "malformed credentials: expected `authorization: Bearer TOKEN`"
        raise _Refusal(grpc.StatusCode.UNAUTHENTICATED, problem, message)

    def _authorize(self, method: str, rule: str | None, context: grpc.aio.ServicerContext) -> None:
        principal = self._authenticate(context)
        if rule is None:
            raise _Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                "no_rule",
                f"{method} has no access rule: refused",
                principal.name,
            )
        if rule is REFLECTION:
            allowed = ADMIN in principal.scopes or bool(principal.scopes & self._reflection_scopes)
            needed = " or ".join(sorted(self._reflection_scopes)) or ADMIN
        else:
            allowed, needed = principal.allows(rule), rule
        if not allowed:
            raise _Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                "missing_scope",
                f"{principal.name!r} lacks the {needed!r} scope that {method} needs",
                principal.name,
            )

    def _refused(self, method: str, context: grpc.aio.ServicerContext, refusal: _Refusal) -> None:
        self._metrics.refused.labels(method, refusal.code.name, refusal.reason).inc()
        if refusal.reason == "no_rule":
            _log.error("method without an access rule refused", extra={"method": method})
        _log.warning(
            "call refused",
            extra={
                "method": method,
                "code": refusal.code.name,
                "reason": refusal.reason,
                "principal": refusal.who,
                "peer": context.peer(),
            },
        )
