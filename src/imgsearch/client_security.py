"""Credentials of the Search client: TLS trust, an optional client certificate, a bearer token.

`client_security(...)` resolves what the caller passed, then the environment:

| What | Argument | Environment |
| --- | --- | --- |
| bearer token | `token`, or `token_file` | `IMGSEARCH_TOKEN`, or `IMGSEARCH_TOKEN_FILE` |
| TLS, trusting a CA bundle | `tls_ca` | `IMGSEARCH_TLS_CA` |
| TLS, trusting the system CAs | `tls=True` | `IMGSEARCH_TLS=1` |
| client certificate (mTLS) | `tls_cert`, `tls_key` | `IMGSEARCH_TLS_CERT`, `IMGSEARCH_TLS_KEY` |
| name expected in the server certificate | `tls_server_name` | `IMGSEARCH_TLS_SERVER_NAME` |

Without any TLS option the channel is plaintext (what `imgsearch up` serves
by default). A token is never sent in plaintext to another machine: that is
refused with a message saying how to turn TLS on; loopback addresses are
allowed (the bytes never leave the host).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from imgsearch.common import errors
from imgsearch.common.secret_files import read_secret
from imgsearch.common.settings import ConfigurationError
from imgsearch.common.tls import channel_credentials

TOKEN_ENV = "IMGSEARCH_TOKEN"  # noqa: S105 -- a variable name, not a secret
TOKEN_FILE_ENV = "IMGSEARCH_TOKEN_FILE"  # noqa: S105 -- a variable name
TLS_ENV = "IMGSEARCH_TLS"
TLS_CA_ENV = "IMGSEARCH_TLS_CA"
TLS_CERT_ENV = "IMGSEARCH_TLS_CERT"
TLS_KEY_ENV = "IMGSEARCH_TLS_KEY"
TLS_SERVER_NAME_ENV = "IMGSEARCH_TLS_SERVER_NAME"


@dataclass(frozen=True)
class ClientSecurity:
    """Channel credentials (None: plaintext), channel options and per-call metadata."""

    credentials: grpc.ChannelCredentials | None
    options: tuple[tuple[str, Any], ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()

    @property
    def tls(self) -> bool:
        return self.credentials is not None


def _path(value: str | os.PathLike[str] | None, env: str) -> Path | None:
    chosen = value if value is not None else os.environ.get(env) or None
    return Path(chosen) if chosen is not None else None


def is_loopback(address: str) -> bool:
    """True when a gRPC target names this machine (localhost, 127.0.0.0/8, ::1)."""
    target = address.split("///", 1)[-1].removeprefix("ipv4:").removeprefix("ipv6:")
    if target.startswith("unix:"):
        return True
    host = target.rpartition(":")[0] if ":" in target else target
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token(token: str | None, token_file: str | os.PathLike[str] | None) -> str | None:
    if token is not None and token_file is not None:
        raise ConfigurationError("give a token or a token file, not both")
    if token is None and token_file is None:
        token = os.environ.get(TOKEN_ENV) or None
        token_file = os.environ.get(TOKEN_FILE_ENV) or None
    if token_file is not None:
        token = read_secret(Path(token_file), "token file")
    if token is not None and (not token.strip() or any(c.isspace() for c in token.strip())):
        raise ConfigurationError("the token is empty or holds white space")
    return token.strip() if token is not None else None


def client_security(
    address: str,
    *,
    token: str | None = None,
    token_file: str | os.PathLike[str] | None = None,
    tls: bool | None = None,
    tls_ca: str | os.PathLike[str] | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    tls_server_name: str | None = None,
) -> ClientSecurity:
    """Resolve the client's TLS and token settings (arguments first, then the environment).

    Raises ConfigurationError (a file that cannot be read, a token bound for
    another machine in plaintext) with a message a person can act on.
    """
    bearer = _token(token, token_file)
    ca = _path(tls_ca, TLS_CA_ENV)
    cert, key = _path(tls_cert, TLS_CERT_ENV), _path(tls_key, TLS_KEY_ENV)
    if tls is None:
        tls = bool(ca or cert) or os.environ.get(TLS_ENV, "").lower() in ("1", "true", "yes")
    metadata = (("authorization", f"Bearer {bearer}"),) if bearer else ()
    if not tls:
        if bearer and not is_loopback(address):
            raise ConfigurationError(
                f"refusing to send the token unencrypted to {address}: turn TLS on with"
                f" --tls-ca CA_FILE ({TLS_CA_ENV}) or --tls ({TLS_ENV}=1)"
            )
        return ClientSecurity(credentials=None, metadata=metadata)
    credentials = channel_credentials(ca, cert, key)
    server_name = tls_server_name or os.environ.get(TLS_SERVER_NAME_ENV) or ""
    options = (("grpc.ssl_target_name_override", server_name),) if server_name else ()
    return ClientSecurity(credentials=credentials, options=options, metadata=metadata)


def transport_hint(code: grpc.StatusCode, details: str, tls: bool) -> str:
    """A hint to add to an UNAVAILABLE error: a TLS mismatch, or nothing listening ("" when
    none applies)."""
    if code != grpc.StatusCode.UNAVAILABLE:
        return ""
    lowered = details.lower()
    if "certificate_verify_failed" in lowered or "certificate verify failed" in lowered:
        return (
            " (the server's TLS certificate is not trusted: pass the CA that signed it with"
            f" --tls-ca or {TLS_CA_ENV})"
        )
    if "handshake" in lowered or "ssl" in lowered:
        return " (the TLS handshake failed: does the server use TLS, and with which CA?)"
    if not tls and "socket closed" in lowered:
        return (
            " (the server closed the connection: it may expect TLS; pass --tls-ca CA_FILE"
            f" or set {TLS_CA_ENV})"
        )
    if "connection refused" in lowered or "failed to connect to all addresses" in lowered:
        return (
            " (nothing answers at that address: start the local stack with `imgsearch up`,"
            " or give Search's address with --address or IMGSEARCH_ADDRESS)"
        )
    return ""


AUTH_HINT = (
    f"give a token with --token-file FILE or {TOKEN_ENV} (`imgsearch up --secure` prints"
    " where its tokens are)"
)


def auth_error(code: grpc.StatusCode, details: str) -> errors.ImgsearchError | None:
    """The taxonomy error for UNAUTHENTICATED / PERMISSION_DENIED, with what to do about it."""
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return errors.UnauthenticatedError(f"not authenticated: {details}; {AUTH_HINT}")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return errors.PermissionDeniedError(
            f"permission denied: {details}; use a token with that scope"
        )
    return None
