"""Prometheus metrics of the Search service beyond the per-RPC ones of the runtime.

They answer "which dependency is slow or failing?" (every Milvus and Embedder
call timed by operation and outcome) and "what does the cache buy?" (Search
latency by query kind and cache outcome), in the server's own registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from imgsearch.common.metrics import LATENCY_BUCKETS


class DependencyMetrics:
    """Latency of calls to Milvus and the Embedder, by operation and outcome."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Histogram(
            "search_dependency_call_seconds",
            "Time of one call to a dependency (milvus, embedder), by operation and outcome"
            " (ok, or the error class).",
            ["dependency", "operation", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )


class QueryMetrics:
    """Search latency by query kind (image, id, vector) and cache outcome (hit, miss)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Histogram(
            "search_query_seconds",
            "Time to answer a successful Search, by query kind and cache outcome.",
            ["query", "cache"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
