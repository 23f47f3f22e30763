"""`make soak` kept working: its verdicts, and a short run against the test session's stack."""

from __future__ import annotations

import json
import subprocess
from argparse import Namespace
from pathlib import Path

import pytest

from bench.soak import Tally, judge_memory, summarise
from tests.fixtures.processes import PYTHON

ROOT = Path(__file__).resolve().parents[2]


def _samples(growth_mib_per_min: float, seconds: float = 600, every: float = 5) -> list:
    """RSS samples of two services: `search` grows steadily, `redis` is flat with noise."""
    samples = []
    for step in range(int(seconds / every) + 1):
        t = step * every
        noise = 3.0 if step % 2 else -3.0
        samples.append((t, {"search": 300 + growth_mib_per_min * t / 60, "redis": 10 + noise}))
    return samples


def test_memory_growth_after_warm_up_fails_the_run() -> None:
    # 12 MiB/min for the 480 s after warm-up: 96 MiB, over the 64 MiB slack.
    verdict = judge_memory(_samples(12.0), 600)
    assert verdict["search"]["ok"] is False
    assert verdict["search"]["trend_mib"] == pytest.approx(96, abs=1)
    assert verdict["redis"]["ok"] is True
    # 4 MiB/min: 32 MiB, within the slack.
    assert judge_memory(_samples(4.0), 600)["search"]["ok"] is True


def test_memory_is_judged_only_once_the_collection_is_full() -> None:
    assert "ok" not in judge_memory(_samples(12.0), 600, filled_at=None)["search"]
    # Full at 500 s: only the last 100 s are judged (12 MiB/min: 20 MiB, within the slack).
    assert judge_memory(_samples(12.0), 600, filled_at=500)["search"]["ok"] is True


def test_short_runs_are_not_judged_on_memory() -> None:
    verdict = judge_memory(_samples(120.0, seconds=30, every=2), 30)
    assert "ok" not in verdict["search"]
    assert verdict["search"]["end_mib"] > verdict["search"]["start_mib"]


def test_undeclared_codes_and_lost_items_fail_the_run() -> None:
    tally = Tally()
    for op in ("Insert", "Search id"):
        tally.calls[op] = 10
        tally.latencies[op] = [5.0] * 9
    tally.errors[("Search id", "NOT_FOUND")] = 1  # an id deleted meanwhile: declared
    args = Namespace(concurrency=1, target_items=10)
    integrity = {"items_live_at_end": 3, "items_deleted": 0, "lost": 0, "resurrected": 0}
    assert summarise(tally, 10.0, integrity, None, args)["passed"] is True
    tally.errors[("Insert", "INTERNAL")] = 1
    result = summarise(tally, 10.0, {**integrity, "lost": 2}, None, args)
    assert result["passed"] is False
    assert result["undeclared_errors"] == {"Insert: INTERNAL": 1}
    assert "lost: 2" in result["failures"]


@pytest.mark.slow
def test_short_soak_against_the_local_stack(stack_address: str) -> None:
    """A 15 s soak in its own process against the session's `imgsearch up`."""
    proc = subprocess.run(
        [PYTHON, "bench/soak.py", "--seconds", "15", "--address", stack_address,
         "--concurrency", "2", "--target-items", "40", "--sample-s", "2", "--images", "500",
         "--no-docs"],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, (result["failures"], proc.stderr[-3000:])
    assert result["passed"] is True
    assert {"Insert", "Search image", "Search id", "Search vector"} <= set(result["ops"])
    assert result["lost"] == result["resurrected"] == 0
    assert {"search", "embedder", "redis", "milvus"} <= set(result["rss"])
    assert all(service["start_mib"] > 0 for service in result["rss"].values())
    assert result["memory_judged"] is False
    assert result["rss_samples"] >= 5
