"""The evaluation's metrics on small cases whose answers were worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from imgsearch.evaluation.metrics import (
    average_precision_at_k,
    class_retrieval,
    exact_top_k,
    mean_reciprocal_rank,
    rank_of,
    recall_at_k,
)


def test_recall_and_reciprocal_rank_of_single_answer_queries() -> None:
    # Four queries: answer first, third, absent, second.
    ranks = [1, 3, None, 2]
    assert recall_at_k(ranks, 1) == 0.25
    assert recall_at_k(ranks, 2) == 0.5
    assert recall_at_k(ranks, 3) == 0.75
    assert recall_at_k(ranks, 100) == 0.75
    # (1 + 1/3 + 0 + 1/2) / 4 = 11/24
    assert mean_reciprocal_rank(ranks) == pytest.approx(11 / 24)
    assert math.isnan(recall_at_k([], 1))


def test_rank_of_finds_the_answer_or_none() -> None:
    assert rank_of(["b", "a", "c"], "a") == 2
    assert rank_of(np.array([4, 7, 9]), 9) == 3
    assert rank_of(["b"], "a") is None


def test_average_precision_by_hand() -> None:
    # Relevant at ranks 1, 3 and 4 of 5, with 4 relevant items in the gallery.
    hits = np.array([True, False, True, True, False])
    precision_sum = 1 / 1 + 2 / 3 + 3 / 4
    assert average_precision_at_k(hits, 4, 5) == pytest.approx(precision_sum / 3)
    assert average_precision_at_k(hits, 4, 5, strict=True) == pytest.approx(precision_sum / 4)
    # Only the first two ranks count at k=2: precision 1 at rank 1, one relevant hit.
    assert average_precision_at_k(hits, 4, 2) == pytest.approx(1.0)
    assert average_precision_at_k(hits, 4, 2, strict=True) == pytest.approx(0.5)
    assert average_precision_at_k(np.zeros(5, bool), 4, 5) == 0.0


def test_exact_top_k_orders_by_cosine_similarity_and_breaks_ties_by_index() -> None:
    gallery = np.array([[1, 0], [0, 1], [0.6, 0.8], [0.6, 0.8], [-1, 0]], dtype=np.float32)
    queries = np.array([[0, 1], [1, 0]], dtype=np.float32)
    top = exact_top_k(queries, gallery, 3)
    # Query (0, 1): 1.0 for #1, 0.8 for #2 and #3 (tie: lower index first).
    assert top[0].tolist() == [1, 2, 3]
    # Query (1, 0): 1.0 for #0, then 0.6 for #2 and #3.
    assert top[1].tolist() == [0, 2, 3]
    assert exact_top_k(queries, gallery, 10).shape == (2, 5)


def test_class_retrieval_by_hand() -> None:
    gallery_labels = np.array([0, 0, 1, 1, 1])
    query_labels = np.array([0, 1])
    hits = np.array([[0, 2, 1], [2, 3, 0]])  # gallery indexes, best first
    scores = class_retrieval(hits, query_labels, gallery_labels, k_map=3, k_p=2)
    # Query 0 (class 0): relevant at ranks 1 and 3 -> AP (1 + 2/3) / 2; strict / min(2, 3) too.
    # Query 1 (class 1): relevant at ranks 1 and 2 -> AP 1; strict (1 + 1) / min(3, 3) = 2/3.
    assert scores["map@3"] == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert scores["map@3_strict"] == pytest.approx(((1 + 2 / 3) / 2 + 2 / 3) / 2)
    # precision@2: query 0 has 1 of 2, query 1 has 2 of 2.
    assert scores["precision@2"] == pytest.approx(0.75)
