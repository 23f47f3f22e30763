"""Settings every imgsearch server has: where it listens, TLS and auth, draining, logs.

Each service's settings class derives from `ServerSettings`, adds its own fields
and its environment prefix (`EMBEDDER_`, `SEARCH_`), and overrides the default
ports.

Secure by default: TLS (`tls_mode=tls`) and authentication (`auth_mode=enforce`)
are on unless a deployment asks for `tls_mode=plaintext` / `auth_mode=none`,
and every secret (keys, token hashes) is read from a file, never a setting's
value. See docs/security.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings


class ConfigurationError(ValueError):
    """Settings that cannot work together or name unusable files; the process must not start.

    The message says which settings to change; it never holds a secret.
    """


class ServerSettings(BaseSettings):
    """Network, lifecycle and logging settings shared by the gRPC services."""

    host: str = Field("0.0.0.0", description="Interface the gRPC server binds.")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free port.")
    metrics_host: str = Field("0.0.0.0", description="Interface of the Prometheus endpoint.")
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Prometheus /metrics port; 0 picks a free port; unset disables it.",
    )
    tls_mode: Literal["tls", "mtls", "plaintext"] = Field(
        "tls",
        description=(
            "`tls` (server certificate), `mtls` (also require a client certificate signed by"
            " tls_client_ca_file) or `plaintext` (no TLS: only on a trusted network)."
        ),
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM server certificate (chain); re-read when it changes on disk."
    )
    tls_key_file: Path | None = Field(
        None, description="PEM private key of tls_cert_file; re-read when it changes on disk."
    )
    tls_client_ca_file: Path | None = Field(
        None, description="PEM CA bundle that signs accepted client certificates (tls_mode=mtls)."
    )
    auth_mode: Literal["enforce", "none"] = Field(
        "enforce",
        description=(
            "`enforce`: every call but health needs a principal of auth_file with the method's"
            " scope; `none`: no authentication (only on a trusted network)."
        ),
    )
    auth_file: Path | None = Field(
        None,
        description=(
            "Principals file: `NAME SCOPES sha256:TOKEN_HASH` or `NAME SCOPES x509:CERT_NAME`"
            " per line (docs/security.md); re-read when it changes."
        ),
    )
    health_probe_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description=(
            "Extra plaintext port serving only grpc.health.v1, for probes that cannot speak TLS"
            " (the kubelet's gRPC probes); unset: none."
        ),
    )
    drain_delay_s: float = Field(
        0.0,
        ge=0,
        description="After SIGTERM, seconds to stay up NOT_SERVING so load balancers notice.",
    )
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="Seconds in-flight RPCs get to finish during shutdown."
    )
    max_concurrent_rpcs: int = Field(
        128,
        ge=1,
        description=(
            "Service calls in progress at once; beyond it RESOURCE_EXHAUSTED (health checks"
            " exempt). Each holds its request message, so this bounds memory."
        ),
    )
    log_level: str = Field("INFO", description="Python log level.")
    log_json: bool = Field(True, description="Log JSON lines (false: plain text).")
