"""`imgsearch eval` on a scaled-down set, through a real Embedder, Search, Milvus Lite and Redis.

The photos are skimage.data's (shipped in the wheel), so this runs without the
Debian photo packages `make eval` installs. A mirrored or recompressed copy of
a photo must find its original first (answers known by construction), end to
end and by exact search alike.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from imgsearch.evaluation.report import headline, render_markdown, write_report
from imgsearch.evaluation.runner import EvalConfig, Services, evaluate
from tests.fixtures.backends import search_address

pytestmark = pytest.mark.slow

KINDS = ("mirror", "jpeg_q20", "grayscale", "thumbnail_48", "pasted_small")


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> EvalConfig:
    return EvalConfig(
        small=True,
        gallery=6,
        distractors=6,
        kinds=KINDS,
        fashion_gallery=100,
        fashion_queries=10,
        baseline=False,
        dimension_curve=False,
        speed_rounds=0,
        data_dir=tmp_path_factory.mktemp("eval"),
    )


async def test_the_scaled_down_evaluation_measures_known_answers(
    config: EvalConfig,
    milvus_lite_uri: str,
    redis_url: str,
    embedder_address: str,
    search_service_factory,
    tmp_path: Path,
) -> None:
    server = await search_service_factory(
        milvus_uri=milvus_lite_uri,
        redis_url=redis_url,
        embedder_address=embedder_address,
        cache_enabled=False,
    )
    services = Services(search=search_address(server), embedder=embedder_address)
    # The client is synchronous: run it off this event loop, which serves Search.
    report = await asyncio.to_thread(evaluate, config, services, lambda message: None)

    composition = report.sets["composition"]
    assert {k: v for k, v in report.sets.items() if k != "composition"} == {
        "gallery": 6,
        "distractors": 6,
        "queries": 6 * len(KINDS),
        "fashion_gallery": 100,
        "fashion_queries": 10,
    }
    assert composition == {"gallery": {"photo/skimage": 6}, "distractors": {"photo/skimage": 6}}
    label = next(iter(report.retrieval))
    end_to_end = report.retrieval[label]["end_to_end"]
    exact = report.retrieval[label]["exact"]
    for kind in ("mirror", "jpeg_q20", "grayscale"):
        assert end_to_end[kind]["recall@1"] == 1.0, kind
        assert exact[kind]["recall@1"] == 1.0, kind
        assert end_to_end[kind]["map"] == 1.0, kind
    for kind in KINDS:
        assert end_to_end[kind]["queries"] == 6.0
        # 12 items: the index is exact enough that both paths rank alike.
        assert abs(end_to_end[kind]["recall@1"] - exact[kind]["recall@1"]) <= 1 / 6, kind
        assert end_to_end[kind]["recall@1"] <= end_to_end[kind]["recall@5"] <= 1.0
    assert end_to_end["easy"]["recall@1"] == 1.0
    assert 0.0 <= end_to_end["hard"]["recall@1"] <= 1.0

    # Query views: exact search asks the Embedder for them as Search does. A photo pasted
    # into a screenshot is found as an inset; an unedited-looking copy has none.
    views = report.views
    assert set(views) == {*KINDS, "all"}
    assert views["pasted_small"]["found_inset"] >= 0.5
    assert views["pasted_small"]["answer_inset_exact"] >= 0.5
    assert views["pasted_small"]["answer_inset_end_to_end"] >= 0.5
    assert views["mirror"]["found"] == 0.0
    whole_only = report.retrieval[label]["exact_whole_image"]
    assert exact["pasted_small"]["recall@1"] >= whole_only["pasted_small"]["recall@1"]

    fashion = report.fashion
    assert set(fashion) == {label, "raw pixels (784-d)"}
    for scores in fashion.values():
        assert 0.3 < scores["map@100"] <= 1.0
        assert 0.3 < scores["precision@10"] <= 1.0
        assert scores["map@100_strict"] <= scores["map@100"]

    line = headline(report)
    assert line["fingerprint"] == report.model["fingerprint"]
    assert line["easy_recall@1"] == 1.0
    json.dumps(line)  # one JSON line
    markdown = render_markdown(report, {})
    assert "| mirror | easy |" in markdown
    assert "## Query views" in markdown
    assert "| pasted_small |" in markdown
    assert "raw pixels (784-d)" in markdown
    assert "| photo/skimage | 6 | 6 |" in markdown
    # The audit of the sets: the closest pairs, each gallery picture against another one.
    assert report.closest_pairs
    assert all(p["gallery"] != p["other"] for p in report.closest_pairs)
    assert all(-1.0 <= p["cosine"] <= 1.0 for p in report.closest_pairs)
    # FindDuplicates' threshold: an unedited-looking copy (mirror) links more at 0.80 than
    # at 0.97, and the false links can only fall as the threshold rises.
    thresholds = report.duplicate_thresholds
    assert [r["threshold"] for r in thresholds] == sorted(r["threshold"] for r in thresholds)
    assert thresholds[0]["mirror"] >= thresholds[-1]["mirror"]
    false_pairs = [r["false_pairs"] for r in thresholds]
    assert false_pairs == sorted(false_pairs, reverse=True)
    assert "## Duplicate threshold (FindDuplicates)" in markdown
    write_report(report, tmp_path / "evaluation.md")
    assert (tmp_path / "img" / "eval-kinds.png").stat().st_size > 1000
