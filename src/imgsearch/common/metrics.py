"""Prometheus metrics: one registry per server instance, served over HTTP.

A registry per instance (rather than the global default) lets tests run several
servers in one process without metric name clashes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from imgsearch.common.settings import ConfigurationError

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class RpcMetrics:
    """Request counts by method and status code, and latency by method."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "grpc_server_handled",
            "RPCs completed, by method and gRPC status code.",
            ["method", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "grpc_server_handling_seconds",
            "RPC handling time in seconds, by method.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )


@dataclass
class MetricsServer:
    """A running /metrics HTTP endpoint."""

    httpd: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.httpd.server_port)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    """Serve `registry` on http://host:port/metrics (port 0 picks a free port).

    Raises ConfigurationError, naming the address and the reason, when the
    port cannot be bound (e.g. already in use).
    """
    try:
        httpd, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        raise ConfigurationError(
            f"cannot listen on {host}:{port} (metrics): {error.strerror or error}"
        ) from None
    return MetricsServer(httpd=httpd, thread=thread)
