"""Prometheus metrics of the Search service beyond the per-RPC ones of the runtime.

They answer "which dependency is slow or failing?" (every Milvus and Embedder
call timed by operation and outcome) and "what does the cache buy?" (Search
latency by query kind and cache outcome) and "do query views matter?" (image
queries by the view that found their first hit), in the server's own registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

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
    """Search latency by query kind (image, id, vector) and cache outcome (hit, miss), and
    image queries by the view that found their first hit."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Histogram(
            "search_query_seconds",
            "Time to answer a successful Search, by query kind and cache outcome.",
            ["query", "cache"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.top_hit_views = Counter(
            "search_top_hit_views",
            "Image queries answered by Milvus with at least one hit, by the view of the query"
            " that found the first hit (whole, inset, straightened, uncaptioned; other for a kind"
            " this Search does not know).",
            ["view"],
            registry=registry,
        )
