"""`make demo`, scaled down to 50 Fashion-MNIST images: the same stack, ingest, queries, outputs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from imgsearch.demo import FASHION_DIR
from tests.fixtures.processes import PYTHON

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_demo_writes_results_and_stops_the_stack(tmp_path: Path) -> None:
    out, data = tmp_path / "demo", tmp_path / "data"
    demo = [PYTHON, "-m", "imgsearch.demo", "--out", str(out), "--data-dir", str(data)]
    proc = subprocess.run(
        [*demo, "--per-class", "5", "--precision-per-class", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = proc.stdout
    assert "inserted 50, skipped 0, failed 0" in log
    # Edited copies of the photos find their original first.
    assert "the original is the top hit for 6 of 6 easy edits and" in log
    assert re.search(r"and [0-5] of 5 hard edits", log)
    # The photo pasted into a screenshot is found through the query's inset view, and says so.
    assert "(found as the picture pasted into your image) expected" in log
    assert re.search(r"Fashion-MNIST: \d+\.\d% of the top-5 hits share the class", log)
    assert f"wrote {out / 'results.html'}" in log
    # Not kept running (no terminal): the page is not advertised as if it stayed up.
    assert "web page: http" not in log
    assert "the stack stops now, and its web page with it" in log
    assert "--keep-running" in log

    page = (out / "results.html").read_text()
    assert page.count("<h2>") == 17
    assert 'src="contact_sheet.png"' in page
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.format == "PNG"
        assert sheet.width > 900
        assert sheet.height > 17 * 150

    # Every service was stopped with its own stop signal and exited cleanly.
    for name in ("web", "search", "embedder", "milvus", "redis"):
        assert f"{name} stopped with exit code 0" in (data / "logs" / f"{name}.log").read_text()
