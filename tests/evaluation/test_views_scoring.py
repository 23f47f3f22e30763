"""Exact search with query views, on hand-made vectors whose answers are worked out by hand.

The evaluation's exact path must rank as Search does: the whole-image vector and each
view searched apart, merged by `merge_view_hits` with the same margin.
"""

from __future__ import annotations

import numpy as np

from imgsearch.evaluation.records import Query, QueryViews, Vectors
from imgsearch.evaluation.scoring import exact_search, truncated, views_table


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


# Three indexed pictures along the axes of 3-d space.
INDEXED = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)])


def test_a_view_finds_the_answer_the_whole_image_misses() -> None:
    # Query 0 (answer 2): the whole image points at picture 0 (cos 0.8 against 0.6);
    # its inset points at picture 2 (cos 0.99): 0.99 - 0.05 = 0.94 beats 0.8.
    # Query 1 (answer 1): found by its whole image; its straightened view is no better.
    queries = np.stack([unit(0.8, 0, 0.6), unit(0, 1, 0)])
    views = QueryViews(
        vectors=np.stack([unit(0.14, 0, 0.99), unit(0.1, 0.99, 0)]),
        query=np.array([0, 1]),
        kinds=["inset", "straightened"],
    )
    ranks, matched = exact_search(Vectors(INDEXED, queries, query_views=views), [2, 1])
    assert ranks == [1, 1]
    assert matched == ["inset", ""]
    # Without the views, the first query's answer comes second.
    whole_ranks, whole_matched = exact_search(Vectors(INDEXED, queries), [2, 1])
    assert whole_ranks == [2, 1]
    assert whole_matched == ["", ""]
    # A margin of 0.2 keeps the whole image's ranking (0.99 - 0.2 < 0.8).
    assert exact_search(Vectors(INDEXED, queries, query_views=views), [2, 1], margin=0.2)[0] == [
        2,
        1,
    ]


def test_truncation_applies_to_the_views_too() -> None:
    views = QueryViews(np.stack([unit(1, 1, 0)]), np.array([0]), ["inset"])
    cut = truncated(Vectors(INDEXED, INDEXED[:1], query_views=views), 2)
    assert cut.query_views is not None
    assert cut.query_views.vectors.shape == (1, 2)
    np.testing.assert_allclose(np.linalg.norm(cut.query_views.vectors, axis=1), 1.0, rtol=1e-6)


def test_views_table_counts_views_found_and_views_that_found_the_answer() -> None:
    queries = [Query("pasted_small", 0, b""), Query("pasted_small", 1, b""),
               Query("rotate_30", 2, b""), Query("mirror", 0, b"")]  # fmt: skip
    found = QueryViews(
        vectors=np.zeros((3, 3), np.float32),
        query=np.array([0, 1, 2]),
        kinds=["inset", "inset", "straightened"],
    )
    table = views_table(
        queries, found, ["inset", "", "straightened", ""], ["inset", None, "straightened", ""]
    )
    assert table["pasted_small"]["found"] == 1.0
    assert table["pasted_small"]["found_inset"] == 1.0
    assert table["pasted_small"]["answer_inset_end_to_end"] == 0.5
    assert table["pasted_small"]["answer_inset_exact"] == 0.5
    assert table["rotate_30"]["answer_straightened_exact"] == 1.0
    assert table["mirror"]["found"] == 0.0
    assert table["all"]["found"] == 0.75
    assert table["all"]["found_straightened"] == 0.25
