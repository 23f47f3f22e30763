"""Scores over vectors: recall and mAP per edit kind, Fashion-MNIST class retrieval, the
dimension curve, and the audit of the closest indexed pairs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from imgsearch.common.query_views import (
    DEFAULT_VIEW_MARGIN,
    VIEW_KINDS,
    WHOLE_IMAGE,
    merge_view_hits,
)
from imgsearch.evaluation import edits
from imgsearch.evaluation.config import RECALL_KS, SEARCH_TOP_K
from imgsearch.evaluation.metrics import (
    class_retrieval,
    exact_top_k,
    mean_reciprocal_rank,
    rank_of,
    recall_at_k,
)
from imgsearch.evaluation.records import EvalData, Query, QueryViews, Vectors

Projection = tuple[np.ndarray, np.ndarray]  # (mean (D,), matrix (D, d))


def scores(ranks: Sequence[int | None]) -> dict[str, float]:
    """recall@k, mAP and the query count of a list of ranks."""
    result = {f"recall@{k}": recall_at_k(ranks, k) for k in RECALL_KS}
    result["map"] = mean_reciprocal_rank(ranks)
    result["queries"] = float(len(ranks))
    return result


def per_kind(ranks: Sequence[int | None], queries: Sequence[Query]) -> dict[str, dict[str, float]]:
    """Scores per edit kind, the means of the easy and hard kinds, and over every query."""
    by_kind: dict[str, list[int | None]] = {}
    for rank, query in zip(ranks, queries, strict=True):
        by_kind.setdefault(query.kind, []).append(rank)
    table = {kind: scores(values) for kind, values in by_kind.items()}
    for group, kinds in (("easy", edits.EASY), ("hard", edits.HARD)):
        names = [k.name for k in kinds if k.name in by_kind]
        if names:
            table[group] = {
                metric: float(np.mean([table[name][metric] for name in names]))
                for metric in table[names[0]]
            }
    table["all"] = scores(list(ranks))
    return table


def exact_ranks(
    indexed: np.ndarray, queries: np.ndarray, answers: Sequence[int]
) -> list[int | None]:
    """Rank of each query's answer by brute-force cosine search (None past SEARCH_TOP_K)."""
    top = exact_top_k(queries, indexed, SEARCH_TOP_K)
    return [rank_of(row, answer) for row, answer in zip(top, answers, strict=True)]


def _scored(query: np.ndarray, top: np.ndarray, indexed: np.ndarray) -> list[tuple[int, float]]:
    """(gallery index, cosine) of one query vector's exact top hits, best first."""
    return list(zip(top.tolist(), (indexed[top] @ query).tolist(), strict=True))


def exact_search(
    vectors: Vectors, answers: Sequence[int], margin: float = DEFAULT_VIEW_MARGIN
) -> tuple[list[int | None], list[str | None]]:
    """Rank of each query's answer by exact search, and the view that found it.

    Without views (`vectors.query_views` None or empty), brute-force cosine
    search of the whole-image vectors. With views, each query's whole-image
    vector and its views are searched apart and merged by the rule Search
    serves (`imgsearch.common.query_views.merge_view_hits`, the same
    `margin` as SEARCH_VIEW_MARGIN's default). The view is "" for the whole
    image, the view's kind, or None when the answer is not in the top
    SEARCH_TOP_K.
    """
    views = vectors.query_views
    if views is None or not views.kinds:
        ranks = exact_ranks(vectors.indexed, vectors.queries, answers)
        return ranks, [None if rank is None else WHOLE_IMAGE for rank in ranks]
    top = exact_top_k(vectors.queries, vectors.indexed, SEARCH_TOP_K)
    view_top = exact_top_k(views.vectors, vectors.indexed, SEARCH_TOP_K)
    rows_of: dict[int, list[int]] = {}
    for row, query in enumerate(views.query.tolist()):
        rows_of.setdefault(query, []).append(row)
    ranks: list[int | None] = []
    matched: list[str | None] = []
    for index, answer in enumerate(answers):
        lists = [(WHOLE_IMAGE, _scored(vectors.queries[index], top[index], vectors.indexed))]
        lists += [
            (views.kinds[row], _scored(views.vectors[row], view_top[row], vectors.indexed))
            for row in rows_of.get(index, [])
        ]
        merged = merge_view_hits(lists, margin=margin, top_k=SEARCH_TOP_K)
        rank = rank_of([hit.key for hit in merged], answer)
        ranks.append(rank)
        matched.append(None if rank is None else merged[rank - 1].view)
    return ranks, matched


def exact_table(vectors: Vectors, data: EvalData) -> dict[str, dict[str, float]]:
    """Scores per edit kind of exact search (with the queries' views when there are some)."""
    answers = [q.answer for q in data.queries]
    return per_kind(exact_search(vectors, answers)[0], data.queries)


def views_table(
    queries: Sequence[Query],
    found: QueryViews | None,
    end_to_end: Sequence[str | None],
    exact: Sequence[str | None],
) -> dict[str, dict[str, float]]:
    """Per edit kind (and "all"): the share of queries in which the Embedder found a view
    (of each kind), and the share whose answer was found by each view, end to end
    (Hit.matched_view) and by exact search."""
    kinds_of: dict[int, set[str]] = {}
    if found is not None:
        for query, kind in zip(found.query.tolist(), found.kinds, strict=True):
            kinds_of.setdefault(query, set()).add(kind)
    groups: dict[str, list[int]] = {}
    for index, query in enumerate(queries):
        groups.setdefault(query.kind, []).append(index)
    groups["all"] = list(range(len(queries)))
    table: dict[str, dict[str, float]] = {}
    for name, members in groups.items():

        def share(test: Any, members: list[int] = members) -> float:
            return sum(1 for i in members if test(i)) / len(members)

        row = {"found": share(lambda i: bool(kinds_of.get(i)))}
        for view in VIEW_KINDS:
            row[f"found_{view}"] = share(lambda i, v=view: v in kinds_of.get(i, ()))
            row[f"answer_{view}_end_to_end"] = share(lambda i, v=view: end_to_end[i] == v)
            row[f"answer_{view}_exact"] = share(lambda i, v=view: exact[i] == v)
        table[name] = row
    return table


def project(vectors: np.ndarray, mean: np.ndarray, matrix: np.ndarray, dim: int) -> np.ndarray:
    """The shipped projection applied offline: L2((x - mean) @ matrix[:, :dim])."""
    projected = (vectors - mean) @ matrix[:, :dim]
    return projected / np.maximum(np.linalg.norm(projected, axis=1, keepdims=True), 1e-12)


def fashion_scores(vectors: Vectors, data: EvalData) -> dict[str, float]:
    """mAP@100 and precision@10 of Fashion-MNIST class retrieval (exact search)."""
    if vectors.fashion_gallery is None or vectors.fashion_queries is None:
        raise ValueError("no Fashion-MNIST vectors")
    if data.fashion_gallery_labels is None or data.fashion_query_labels is None:
        raise ValueError("no Fashion-MNIST labels")
    hits = exact_top_k(vectors.fashion_queries, vectors.fashion_gallery, 100)
    return class_retrieval(hits, data.fashion_query_labels, data.fashion_gallery_labels, 100, 10)


def raw_pixel_vectors(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(np.float32)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


def raw_pixel_scores(data: EvalData) -> dict[str, float]:
    """The raw-pixel baseline of Fashion-MNIST class retrieval."""
    assert data.fashion_gallery is not None
    assert data.fashion_queries is not None
    pixels = Vectors(
        np.zeros((0, 1)),
        np.zeros((0, 1)),
        raw_pixel_vectors(data.fashion_gallery),
        raw_pixel_vectors(data.fashion_queries),
    )
    return fashion_scores(pixels, data)


def projected(raw: Vectors, projection: Projection | None, dim: int) -> Vectors:
    """`raw` through the projection's first `dim` columns (unchanged without one)."""
    if projection is None or dim == raw.indexed.shape[1]:
        return raw
    mean, matrix = projection
    views = raw.query_views
    return Vectors(
        *(
            project(v, mean, matrix, dim) if v is not None else None
            for v in (raw.indexed, raw.queries, raw.fashion_gallery, raw.fashion_queries)
        ),
        query_views=None
        if views is None
        else _views_through(views, lambda v: project(v, mean, matrix, dim)),
    )


def _views_through(views: QueryViews, change: Any) -> QueryViews:
    """The same views with `change` applied to their vectors (a projection, a truncation)."""
    if not views.kinds:
        return views
    return QueryViews(change(views.vectors), views.query, views.kinds)


def truncated(served: Vectors, dim: int) -> Vectors:
    """The first `dim` components of every vector, re-normalised."""

    def cut(v: np.ndarray | None) -> np.ndarray | None:
        if v is None:
            return None
        head = v[:, :dim]
        return head / np.maximum(np.linalg.norm(head, axis=1, keepdims=True), 1e-12)

    views = served.query_views
    return Vectors(
        *(cut(v) for v in (served.indexed, served.queries, served.fashion_gallery,
                           served.fashion_queries)),
        query_views=None if views is None else _views_through(views, cut),
    )  # fmt: skip


def curve_point(vectors: Vectors, data: EvalData, dim: int, projected_: bool) -> dict[str, float]:
    """One point of the recall-against-dimension curve (exact search)."""
    table = exact_table(vectors, data)
    point = {
        "dimension": float(dim),
        "projected": float(projected_),
        "easy_recall@1": table.get("easy", {}).get("recall@1", float("nan")),
        "hard_recall@1": table.get("hard", {}).get("recall@1", float("nan")),
        "all_recall@1": table["all"]["recall@1"],
    }
    if vectors.fashion_gallery is not None:
        point["fashion_map@100"] = fashion_scores(vectors, data)["map@100"]
    return point


def dimension_curve(
    data: EvalData, raw: Vectors, projection: Projection | None
) -> list[dict[str, float]]:
    """Exact search without the projection and with it truncated to each dimension."""
    trunk_dim = raw.indexed.shape[1]
    dims = [trunk_dim]
    if projection is not None:
        dims += [d for d in (1024, 512, 256, 128, 64) if d <= projection[1].shape[1]]
    return [
        curve_point(projected(raw, projection, dim), data, dim, dim != trunk_dim) for dim in dims
    ]


def truncation_curve(
    model: dict[str, Any], data: EvalData, served: Vectors
) -> list[dict[str, float]]:
    """Exact search at the served dimension and, for a whitened descriptor, at its halvings.

    The projection's components are ordered, so the first d components of a
    served vector, re-normalised, are exactly the d-dimensional descriptor.
    """
    served_dim = served.indexed.shape[1]
    whitened = bool(json.loads(model["descriptor"]).get("projection_sha256"))
    dims = [served_dim]
    while whitened and dims[-1] // 2 >= 64:
        dims.append(dims[-1] // 2)
    return [curve_point(truncated(served, dim), data, dim, whitened) for dim in dims]


def closest_pairs(vectors: Vectors, data: EvalData, count: int = 20) -> list[dict[str, Any]]:
    """The `count` most similar (gallery picture, other indexed picture) pairs.

    An audit of the sets: a pair that is one picture (a copy, a crop) would
    give a query two right answers. docs/evaluation.md lists them.
    """
    gallery = vectors.indexed[: data.gallery_size]
    similarity = gallery @ vectors.indexed.T
    np.fill_diagonal(similarity[:, : data.gallery_size], -2.0)
    similarity[:, : data.gallery_size] = np.where(
        np.tri(data.gallery_size, dtype=bool).T, -2.0, similarity[:, : data.gallery_size]
    )  # each gallery pair once
    flat = np.argsort(-similarity, axis=None)[:count]
    rows, columns = np.unravel_index(flat, similarity.shape)
    return [
        {
            "gallery": data.indexed[int(r)].name,
            "other": data.indexed[int(c)].name,
            "role": "gallery" if c < data.gallery_size else "distractor",
            "cosine": float(similarity[r, c]),
        }
        for r, c in zip(rows, columns, strict=True)
    ]


DUPLICATE_THRESHOLDS = (0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.95, 0.97)


def duplicate_thresholds(
    vectors: Vectors, data: EvalData, thresholds: Sequence[float] = DUPLICATE_THRESHOLDS
) -> list[dict[str, float]]:
    """What FindDuplicates would link at each threshold, on the eval's own sets.

    For each threshold t: the share of each edit kind's copies whose whole-image
    cosine to its original is >= t (a copy FindDuplicates would group with its
    original), and the number of pairs of indexed pictures cut from *different*
    source pictures (gallery and distractors, every pair once; the sets hold no
    copies across sources, see `near_duplicates`) at >= t: links that would be
    false. Tiles of one wallpaper are not counted against each other (two tiles of
    one sky can be copies in all but name). Rows: {"threshold", "<kind>" for each
    kind, "easy"/"hard" (mean over the group's kinds), "false_pairs",
    "pictures_in_false_pairs", "pairs_compared" (the pairs of different sources: the
    false pairs' denominator, the same in every row)} (shares in [0, 1], counts as
    floats).
    """
    indexed = vectors.indexed.astype(np.float32)
    answers = np.array([q.answer for q in data.queries], dtype=np.int64)
    copy_scores = np.einsum("ij,ij->i", vectors.queries, indexed[answers])
    kinds = np.array([q.kind for q in data.queries])
    _, source = np.unique([p.source for p in data.indexed], return_inverse=True)
    same_source = source[:, None] == source[None, :]
    # Pairs within one source (and each picture with itself) never link.
    similarity = np.where(same_source, -2.0, indexed @ indexed.T)
    pairs = np.triu_indices(len(indexed), k=1)
    upper = similarity[pairs]
    pairs_compared = float(np.count_nonzero(~same_source[pairs]))
    rows = []
    for threshold in thresholds:
        row: dict[str, float] = {"threshold": float(threshold)}
        for kind in dict.fromkeys(kinds.tolist()):
            row[kind] = float(np.mean(copy_scores[kinds == kind] >= threshold))
        for group, members in (("easy", edits.EASY), ("hard", edits.HARD)):
            names = [k.name for k in members if k.name in row]
            if names:
                row[group] = float(np.mean([row[name] for name in names]))
        linked = similarity >= threshold
        row["false_pairs"] = float(np.count_nonzero(upper >= threshold))
        row["pictures_in_false_pairs"] = float(np.count_nonzero(linked.any(axis=1)))
        row["pairs_compared"] = pairs_compared
        rows.append(row)
    return rows
