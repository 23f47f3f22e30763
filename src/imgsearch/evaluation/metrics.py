"""Retrieval metrics and exact (brute-force) search.

Definitions, as in the instance-retrieval and copy-detection literature:

- recall@k of a near-duplicate query: 1 when its original is among the first
  k hits, else 0; averaged over queries.
- average precision (AP) of a ranked list with R relevant items in the
  gallery: sum over the ranks i where a relevant item appears of precision@i,
  divided by R. With one relevant item (the original) AP = 1/rank, 0 if absent.
- AP@k (for mAP@100 of class retrieval): the same sum over the first k ranks,
  divided by the number of relevant items among those k (the usual mAP@k of
  the hashing and class-retrieval literature; 0 when none is relevant).
  `strict` divides by min(R, k) instead, so it also punishes relevant items
  missing from the top k.
- precision@k: the fraction of the first k hits that are relevant.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def exact_top_k(queries: np.ndarray, gallery: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Indexes (Q, k) of the `k` gallery rows with the largest inner product, best first.

    Rows are unit vectors, so this is exact cosine-similarity search. Ties break
    by the lower gallery index (a stable order).
    """
    k = min(k, gallery.shape[0])
    result = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], chunk):
        scores = queries[start : start + chunk] @ gallery.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((top, -top_scores), axis=1)
        result[start : start + chunk] = np.take_along_axis(top, order, axis=1)
    return result


def rank_of(hits: Sequence[str] | np.ndarray, answer: str | int) -> int | None:
    """1-based rank of `answer` among `hits`, None when absent."""
    for rank, hit in enumerate(hits, start=1):
        if hit == answer:
            return rank
    return None


def recall_at_k(ranks: Sequence[int | None], k: int) -> float:
    """Fraction of queries whose answer is within the first k hits."""
    if not ranks:
        return float("nan")
    return sum(rank is not None and rank <= k for rank in ranks) / len(ranks)


def mean_reciprocal_rank(ranks: Sequence[int | None]) -> float:
    """mAP of single-answer queries: the mean of 1/rank (0 when the answer was not returned)."""
    if not ranks:
        return float("nan")
    return sum(1.0 / rank for rank in ranks if rank is not None) / len(ranks)


def average_precision_at_k(
    relevant: np.ndarray, total_relevant: int, k: int, strict: bool = False
) -> float:
    """AP@k of one ranked list; `relevant` is a boolean array of its hits, best first."""
    hits = np.asarray(relevant[:k], dtype=bool)
    denominator = min(total_relevant, k) if strict else int(hits.sum())
    if denominator == 0:
        return 0.0
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float((precision * hits).sum() / denominator)


def class_retrieval(
    hits: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray, k_map: int, k_p: int
) -> dict[str, float]:
    """mAP@k_map and precision@k_p of class retrieval; `hits` are gallery indexes (Q, >=k)."""
    relevant = gallery_labels[hits] == query_labels[:, None]
    per_class = np.bincount(gallery_labels)
    pairs = list(zip(relevant, query_labels, strict=True))
    ap = [average_precision_at_k(row, int(per_class[label]), k_map) for row, label in pairs]
    strict = [
        average_precision_at_k(row, int(per_class[label]), k_map, strict=True)
        for row, label in pairs
    ]
    return {
        f"map@{k_map}": float(np.mean(ap)),
        f"map@{k_map}_strict": float(np.mean(strict)),
        f"precision@{k_p}": float(relevant[:, :k_p].mean()),
    }
