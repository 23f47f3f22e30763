"""A short run of each coverage-guided fuzzer: every seed, then a few seconds of mutations.

The seeds are the inputs that once failed (tests/embedder/odd_images.py) and
one image of each format; `make fuzz` runs the same fuzzers for minutes. A
finding (an exception other than the image's own INVALID_ARGUMENT, a status
other than OK / INVALID_ARGUMENT / RESOURCE_EXHAUSTED, a hang, memory beyond the
bound) makes libFuzzer exit non-zero with the input saved under `tmp_path`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.fixtures.processes import PYTHON

ROOT = Path(__file__).resolve().parents[2]
# libFuzzer's -rss_limit_mb reads the process's peak RSS (getrusage), which Linux
# carries across fork and exec: a fuzzer exec'd straight from this pytest process,
# which holds models and servers (over 1 GiB), would start "over" its limit. A
# shell that forks the fuzzer (rather than exec'ing it) gives it a fresh peak.
FRESH_PEAK_RSS = ["/bin/sh", "-c", '"$0" "$@"; exit $?']


@pytest.mark.parametrize(("target", "seconds"), [("decode", 4), ("embed", 4)])
def test_a_short_fuzzing_run_finds_nothing(target: str, seconds: int, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *FRESH_PEAK_RSS, PYTHON, "-m", f"fuzz.{target}",
            f"-max_total_time={seconds}", "-seed=1",
            f"-artifact_prefix={tmp_path}/", str(tmp_path / "corpus"),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    output = result.stdout[-2000:] + result.stderr[-4000:]
    assert result.returncode == 0, output
    assert "INITED" in result.stderr, output  # every seed ran
    assert not list(tmp_path.glob("crash-*")), output
