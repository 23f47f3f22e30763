"""What an evaluation measures and what it talks to: `EvalConfig`, `Services`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imgsearch.evaluation import edits

# The Embedder's previous default descriptor (before issue 10): the baseline. Every
# setting that shapes its vectors is pinned (tests/evaluation/test_baseline.py), so a
# new default of any of them never leaks into the baseline.
BASELINE_ENV = {
    "EMBEDDER_CROP": "centre",
    "EMBEDDER_INPUT_SIZE": "224",
    "EMBEDDER_RESIZE_SIZE": "256",
    "EMBEDDER_TRIM_BORDERS": "false",
    "EMBEDDER_POOLING": "avg",
    "EMBEDDER_POWER": "1.0",
    "EMBEDDER_PROJECTION": "none",
    "EMBEDDER_THUMBNAIL_SIDE": "0",
    "EMBEDDER_MID_LAYER": "none",
    "EMBEDDER_QUERY_VIEWS": "false",
}
RAW_ENV = {"EMBEDDER_PROJECTION": "none"}
RECALL_KS = (1, 5, 10)
SEARCH_TOP_K = 100
Say = Callable[[str], None]


@dataclass(frozen=True)
class EvalConfig:
    """What to measure; the defaults are `make eval`'s full run."""

    seed: int = 0
    gallery: int = 300
    distractors: int = 2000
    kinds: tuple[str, ...] = tuple(kind.name for kind in edits.ALL_KINDS)
    fashion_gallery: int = 10_000
    fashion_queries: int = 1_000
    baseline: bool = True
    # An extra Embedder of the unprojected descriptor, for the curve up to its full width
    # (otherwise the curve truncates the served vectors: served width and below).
    dimension_curve: bool = False
    speed_rounds: int = 5  # 0: no speed probe
    milvus: str = "lite"
    data_dir: Path = Path(".imgsearch/eval")
    # Scaled-down sets for the tests: skimage.data photos only, no Debian packages.
    small: bool = False
    batch_size: int = 16
    concurrency: int = 2
    # Torch threads of every Embedder the evaluation starts (0: the usable cores shared
    # among them, `stack_control.embedder_threads`).
    embedder_threads: int = 0


@dataclass
class Services:
    """Addresses of what the evaluation talks to (started by it, or given)."""

    search: str
    embedder: str
    raw_embedder: str | None = None
    baseline_embedder: str | None = None
