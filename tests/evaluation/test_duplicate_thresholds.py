"""FindDuplicates' threshold measured on hand-made vectors whose cosines are worked out by hand."""

from __future__ import annotations

import numpy as np

from imgsearch.evaluation.datasets import Picture
from imgsearch.evaluation.records import EvalData, Query, Vectors
from imgsearch.evaluation.scoring import duplicate_thresholds


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def _data(queries: list[Query], sources: list[str]) -> EvalData:
    return EvalData(
        indexed=[Picture(f"{source}#{n}", source, "eval", b"") for n, source in enumerate(sources)],
        gallery_size=2,
        queries=queries,
        fashion_gallery=None,
        fashion_gallery_labels=None,
        fashion_queries=None,
        fashion_query_labels=None,
        backdrops=[],
    )


def test_copies_linked_and_false_pairs_counted_per_threshold() -> None:
    # Pictures 0 and 1 along x and y; picture 2 at cos 0.92 to picture 0 (a false link at
    # 0.9 and below; cos(1, 2) = 0.39, never). Copies: jpeg of 0 at cos 0.96, jpeg of 1
    # at cos 0.87; mirror of 0 at cos 0.82. No cosine within 0.01 of a threshold.
    indexed = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0.92, 0.3919, 0)])
    queries = np.stack([unit(0.96, 0, 0.28), unit(0, 0.87, 0.4931), unit(0.82, 0, 0.5724)])
    data = _data(
        [Query("jpeg_q20", 0, b""), Query("jpeg_q20", 1, b""), Query("mirror", 0, b"")],
        ["a", "b", "c"],
    )
    rows = duplicate_thresholds(Vectors(indexed, queries), data, thresholds=(0.8, 0.85, 0.9, 0.95))
    by = {r["threshold"]: r for r in rows}
    assert [by[t]["jpeg_q20"] for t in (0.8, 0.85, 0.9, 0.95)] == [1.0, 1.0, 0.5, 0.5]
    assert by[0.8]["mirror"] == 1.0
    assert by[0.85]["mirror"] == 0.0
    assert by[0.85]["easy"] == 0.5  # mean of jpeg_q20 (1.0) and mirror (0.0)
    assert "hard" not in by[0.85]
    assert [by[t]["false_pairs"] for t in (0.8, 0.85, 0.9, 0.95)] == [1.0, 1.0, 1.0, 0.0]
    assert by[0.9]["pictures_in_false_pairs"] == 2.0
    assert by[0.95]["pictures_in_false_pairs"] == 0.0
    assert {r["pairs_compared"] for r in rows} == {3.0}  # (0, 1), (0, 2), (1, 2)


def test_tiles_of_one_source_picture_are_not_false_links() -> None:
    # Pictures 1 and 2 are two tiles of one wallpaper, at cos 1 to each other: not a false
    # link; picture 0 (another source) is at cos 0.92 to both: two false links at 0.9.
    indexed = np.stack([unit(1, 0, 0), unit(0.92, 0.3919, 0), unit(0.92, 0.3919, 0)])
    data = _data([Query("mirror", 0, b"")], ["photo", "wall", "wall"])
    rows = duplicate_thresholds(Vectors(indexed, indexed[:1]), data, thresholds=(0.9, 0.95))
    assert [r["false_pairs"] for r in rows] == [2.0, 0.0]
    assert [r["pictures_in_false_pairs"] for r in rows] == [3.0, 0.0]
    # (photo, wall) twice, not (wall, wall)
    assert [r["pairs_compared"] for r in rows] == [2.0, 2.0]
