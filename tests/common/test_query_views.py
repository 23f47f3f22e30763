"""The merge rule of an image query's views (`imgsearch.common.query_views.merge_view_hits`).

Pure function over hand-made hit lists: Search and the evaluation both call it,
so these cases pin the rule for both.
"""

from __future__ import annotations

import pytest

from imgsearch.common.query_views import (
    INSET,
    STRAIGHTENED,
    WHOLE_IMAGE,
    MergedHit,
    merge_view_hits,
)


def merged(*lists, margin=0.05, top_k=10, min_score=None) -> list[tuple[str, float, str]]:
    hits = merge_view_hits(list(lists), margin=margin, top_k=top_k, min_score=min_score)
    return [(hit.key, round(hit.score, 6), hit.view) for hit in hits]


def test_whole_image_only_keeps_the_list_as_it_is():
    whole = (WHOLE_IMAGE, [("a", 0.9), ("b", 0.5), ("c", 0.1)])
    assert merged(whole) == [("a", 0.9, ""), ("b", 0.5, ""), ("c", 0.1, "")]


def test_a_view_wins_only_by_more_than_the_margin():
    whole = (WHOLE_IMAGE, [("a", 0.60), ("b", 0.50)])
    inset = (INSET, [("b", 0.70), ("a", 0.62)])
    # b: max(0.50, 0.70 - 0.05) = 0.65 by the inset; a: max(0.60, 0.57) = 0.60 whole.
    assert merged(whole, inset) == [("b", 0.65, INSET), ("a", 0.6, WHOLE_IMAGE)]
    # With a margin of 0.25 the whole image wins both.
    assert merged(whole, inset, margin=0.25) == [("a", 0.6, ""), ("b", 0.5, "")]


def test_a_tie_between_the_whole_image_and_a_view_goes_to_the_whole_image():
    whole = (WHOLE_IMAGE, [("a", 0.5)])
    inset = (INSET, [("a", 0.75)])
    assert merged(whole, inset, margin=0.25) == [("a", 0.5, WHOLE_IMAGE)]
    # Between views, the earlier list wins a tie too.
    views = merged((STRAIGHTENED, [("a", 0.7)]), (INSET, [("a", 0.7)]), margin=0.0)
    assert views == [("a", 0.7, STRAIGHTENED)]


def test_an_item_found_only_by_a_view_is_returned_with_the_margin_taken_off():
    whole = (WHOLE_IMAGE, [("a", 0.40)])
    straightened = (STRAIGHTENED, [("z", 0.95)])
    assert merged(whole, straightened) == [("z", 0.9, STRAIGHTENED), ("a", 0.4, WHOLE_IMAGE)]


def test_min_score_applies_to_the_merged_score():
    whole = (WHOLE_IMAGE, [("a", 0.50), ("b", 0.30)])
    inset = (INSET, [("b", 0.58), ("c", 0.54)])
    # b: 0.53 by the inset passes; c: 0.49 (0.54 less the margin) does not, although its
    # raw view score is above 0.5.
    assert merged(whole, inset, min_score=0.5) == [("b", 0.53, INSET), ("a", 0.5, WHOLE_IMAGE)]


def test_top_k_counts_distinct_items_across_the_lists():
    whole = (WHOLE_IMAGE, [("a", 0.9), ("b", 0.8), ("c", 0.7)])
    inset = (INSET, [("a", 0.99), ("b", 0.6), ("d", 0.84)])
    assert merged(whole, inset, top_k=3) == [
        ("a", 0.94, INSET),
        ("b", 0.8, WHOLE_IMAGE),
        ("d", 0.79, INSET),
    ]
    assert [hit[0] for hit in merged(whole, inset, top_k=1)] == ["a"]


def test_equal_scores_keep_the_order_first_seen():
    whole = (WHOLE_IMAGE, [("b", 0.5), ("a", 0.5)])
    inset = (INSET, [("c", 0.55)])
    assert [hit[0] for hit in merged(whole, inset)] == ["b", "a", "c"]


def test_keys_can_be_any_hashable_and_hits_are_dataclasses():
    hits = merge_view_hits([(WHOLE_IMAGE, [(7, 0.3)]), (INSET, [(3, 0.9)])], margin=0.05, top_k=5)
    assert hits == [MergedHit(3, pytest.approx(0.85), INSET), MergedHit(7, 0.3, WHOLE_IMAGE)]


def test_bad_margin_or_top_k_is_refused():
    with pytest.raises(ValueError, match="margin"):
        merge_view_hits([], margin=-0.1, top_k=1)
    with pytest.raises(ValueError, match="top_k"):
        merge_view_hits([], margin=0.0, top_k=0)
    assert merge_view_hits([], margin=0.0, top_k=1) == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_score_that_is_not_a_number_is_skipped_and_the_order_stays_sorted(bad: float):
    """Milvus answers NaN scores for a NaN query vector: one of them sorted among the
    others left a 0.85 hit after a 0.5 one."""
    whole = (WHOLE_IMAGE, [("a", 0.5)])
    inset = (INSET, [("c", bad), ("d", 0.9), ("a", bad)])
    assert merged(whole, inset) == [("d", 0.85, INSET), ("a", 0.5, "")]
