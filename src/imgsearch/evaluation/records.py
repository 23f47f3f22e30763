"""The evaluation's data: the sets, vectors of them, and what was measured (`Report`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imgsearch.evaluation import datasets


@dataclass(frozen=True)
class Query:
    """One edited copy of a gallery picture."""

    kind: str
    answer: int  # index into the indexed set (gallery pictures come first)
    image: bytes


@dataclass
class EvalData:
    """Everything indexed and queried in one evaluation."""

    indexed: list[datasets.Picture]
    gallery_size: int
    queries: list[Query]
    fashion_gallery: np.ndarray | None
    fashion_gallery_labels: np.ndarray | None
    fashion_queries: np.ndarray | None
    fashion_query_labels: np.ndarray | None
    backdrops: list[Any]
    composition: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class QueryViews:
    """The views the Embedder found in the queries (EmbedRequest.query_views), flattened.

    Row i of `vectors` is a view of query `query[i]`, of kind `kinds[i]`
    ("inset", "straightened", "uncaptioned"); a query's views keep the Embedder's order.
    """

    vectors: np.ndarray  # (V, D), unit-norm rows
    query: np.ndarray  # (V,) int: index of the query each view belongs to
    kinds: list[str]

    @classmethod
    def empty(cls, dimension: int) -> QueryViews:
        return cls(np.zeros((0, dimension), np.float32), np.zeros(0, np.int64), [])


@dataclass
class Vectors:
    """One descriptor's vectors of every set (rows unit-norm)."""

    indexed: np.ndarray
    queries: np.ndarray
    fashion_gallery: np.ndarray | None = None
    fashion_queries: np.ndarray | None = None
    # Views of the queries (None: not asked for, as for the previous default descriptor).
    query_views: QueryViews | None = None


@dataclass
class Report:
    """Everything `imgsearch eval` measured; `report.py` renders it."""

    config: dict[str, Any]
    sets: dict[str, Any]
    model: dict[str, Any]
    baseline_model: dict[str, Any] | None
    kinds: list[dict[str, str]]
    # {descriptor label: {"end_to_end"|"exact": {kind: {metric: value}}}}
    retrieval: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)
    fashion: dict[str, dict[str, float]] = field(default_factory=dict)
    dimension_curve: list[dict[str, float]] = field(default_factory=list)
    speed: dict[str, Any] = field(default_factory=dict)
    consistency: dict[str, float] = field(default_factory=dict)
    misses: list[dict[str, Any]] = field(default_factory=list)
    # Query views per edit kind: {kind: {"found", "found_<view>" for each of VIEW_KINDS,
    # "answer_<view>_end_to_end", "answer_<view>_exact": share of the kind's queries}}.
    views: dict[str, dict[str, float]] = field(default_factory=dict)
    # The closest (gallery, other indexed picture) pairs by the default descriptor: an audit
    # that no indexed picture is a copy of a gallery picture.
    closest_pairs: list[dict[str, Any]] = field(default_factory=list)
    # FindDuplicates' threshold on the eval's sets (`scoring.duplicate_thresholds`).
    duplicate_thresholds: list[dict[str, float]] = field(default_factory=list)
    elapsed_s: float = 0.0
