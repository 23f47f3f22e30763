"""Typed settings of the web gateway, read once at start-up.

Every field can be set from the environment with the `WEB_` prefix
(e.g. `WEB_SEARCH_ADDRESS=search:50052`) or from the command line
(`--search-address search:50052`); tests build `WebSettings(...)` directly.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class WebSettings(BaseSettings):
    """Configuration of one gateway process.

    Not a `ServerSettings`: the gateway serves HTTP, not gRPC, and has no
    principals of its own (callers' tokens go through to Search), so it has
    only the network, drain and log settings that apply to it.
    """

    model_config = SettingsConfigDict(env_prefix="WEB_", extra="forbid")

    # --- network and lifecycle
    host: str = Field("0.0.0.0", description="Interface the HTTP server binds.")
    port: int = Field(8080, ge=0, le=65535, description="HTTP port; 0 picks a free port.")
    tls_cert_file: Path | None = Field(
        None,
        description=(
            "PEM certificate (chain) to serve HTTPS with; unset: plain HTTP (behind a TLS"
            " Ingress, or on loopback)."
        ),
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    metrics_host: str = Field("0.0.0.0", description="Interface of the Prometheus endpoint.")
    metrics_port: int | None = Field(
        9102,
        ge=0,
        le=65535,
        description="Prometheus /metrics port; 0 picks a free port; unset disables it.",
    )
    root_path: str = Field(
        "",
        description="URL prefix the gateway is served under behind a proxy, e.g. `/imgsearch`.",
    )
    drain_delay_s: float = Field(
        0.0,
        ge=0,
        description="After SIGTERM, seconds /readyz answers 503 before the server stops accepting.",
    )
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="Seconds in-flight requests get to finish during shutdown."
    )
    log_level: str = Field("INFO", description="Python log level.")
    log_json: bool = Field(True, description="Log JSON lines (false: plain text).")

    # --- the Search service
    search_address: str = Field(
        "127.0.0.1:50052", description="host:port of the Search gRPC service."
    )
    search_tls_ca_file: Path | None = Field(
        None,
        description=(
            "PEM file of the CA that signed Search's certificate: reach Search over TLS."
            " Unset: plain gRPC (inside a cluster network policy, or on a laptop)."
        ),
    )
    search_tls_server_name: str = Field(
        "",
        description="Name to expect in Search's certificate when it differs from the address.",
    )
    search_timeout_s: float = Field(
        30.0, gt=0, le=600, description="Deadline of a Search call made for one HTTP request."
    )
    insert_timeout_s: float = Field(
        120.0, gt=0, le=3600, description="Deadline of an Insert call (it embeds the image)."
    )
    duplicates_timeout_s: float = Field(
        1800.0, gt=0, description="Deadline of a whole duplicate scan."
    )
    max_message_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024 * 1024,
        description="Largest gRPC message sent to or received from Search.",
    )

    # --- HTTP limits and caching
    max_upload_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description=(
            "Largest request body accepted (an uploaded image with its form fields); larger"
            " bodies are refused with 413 before or while they arrive, never buffered whole."
        ),
    )
    thumbnail_max_age_s: int = Field(
        60,
        ge=0,
        description="Cache-Control max-age of thumbnails (revalidated by ETag after that).",
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> WebSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file (HTTPS), or neither")
        return self
