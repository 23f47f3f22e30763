"""Settings every imgsearch server has: where it listens, how it drains, how it logs.

Each service's settings class derives from `ServerSettings`, adds its own fields
and its environment prefix (`EMBEDDER_`, `SEARCH_`), and overrides the default
ports.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


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
    drain_delay_s: float = Field(
        0.0,
        ge=0,
        description="After SIGTERM, seconds to stay up NOT_SERVING so load balancers notice.",
    )
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="Seconds in-flight RPCs get to finish during shutdown."
    )
    log_level: str = Field("INFO", description="Python log level.")
    log_json: bool = Field(True, description="Log JSON lines (false: plain text).")
