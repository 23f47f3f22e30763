"""`imgsearch duplicates` and `imgsearch list` stay readable in an 80-column terminal.

Hash ids (64 characters) and long uris, printed with COLUMNS=80 by the real
command against the session's stack: every id whole on one line, no line
wider than the terminal, no header squeezed to an ellipsis, a few lines per item.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.cli.conftest import IMGSEARCH, run_cli

LABEL = "set=narrow-80"
FILTER = 'set == "narrow-80"'


@pytest.fixture(scope="module")
def narrow_items(
    stack_address: str, photo_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[str]:
    """Two near-identical copies of a photo and another photo, under a long folder name."""
    folder = tmp_path_factory.mktemp("narrow") / ("a folder with a rather long name " * 3).strip()
    folder.mkdir()
    coffee = Image.open(photo_dir / "coffee.jpg")
    coffee.save(folder / "coffee at quality 91 with a long file name.jpg", quality=91)
    coffee.save(folder / "coffee at quality 45.jpg", quality=45)
    Image.open(photo_dir / "astronaut.png").save(folder / "astronaut.jpg", quality=91)
    done = run_cli(["ingest", str(folder), "-l", LABEL, "--update", "--json"], stack_address)
    assert done.code == 0, done.stderr
    listed = run_cli(["list", "--filter", FILTER, "--json"], stack_address).json()
    return [item["id"] for item in listed["items"]]


def _run_at_80(args: list[str], address: str) -> str:
    env = {**os.environ, "COLUMNS": "80", "IMGSEARCH_ADDRESS": address}
    proc = subprocess.run(
        [*IMGSEARCH, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _assert_readable(out: str, ids: list[str], max_lines: int) -> None:
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80, out
    assert "…" not in out, out
    for item_id in ids:
        assert any(line.strip().startswith(item_id) for line in lines), (item_id, out)
    assert len(lines) <= max_lines, out


def test_duplicates_at_80_columns(stack_address: str, narrow_items: list[str]) -> None:
    assert len(narrow_items) == 3
    out = _run_at_80(["duplicates", "--filter", FILTER, "--threshold", "0.9"], stack_address)
    table = out.split("1 group, 2 items in groups")[0]
    grouped = [item_id for item_id in narrow_items if item_id in table]
    assert len(grouped) == 2
    _assert_readable(out, grouped, max_lines=16)
    assert "group 1: 2 items" in out
    assert "best" in out


def test_list_at_80_columns(stack_address: str, narrow_items: list[str]) -> None:
    out = _run_at_80(["list", "--filter", FILTER], stack_address)
    _assert_readable(out, narrow_items, max_lines=20)
    assert out.count("set=narrow-80") == 3


def test_search_at_80_columns(stack_address: str, narrow_items: list[str], photo_dir: Path) -> None:
    """The hits' ids whole, with their rank and score beside them (the uri below), even
    when a view of the query found them: it was all id, with blank or '…' columns."""
    query = photo_dir / "coffee.jpg"
    out = _run_at_80(["search", str(query), "-k", "3", "--filter", FILTER], stack_address)
    hits = run_cli(["search", str(query), "-k", "3", "--filter", FILTER, "--json"], stack_address)
    ranked = [hit["id"] for hit in hits.json()["hits"]]
    assert sorted(ranked) == sorted(narrow_items)
    _assert_readable(out, ranked, max_lines=20)  # 3 lines of header, at most 5 a hit
    for rank, hit in enumerate(hits.json()["hits"], start=1):
        line = next(line for line in out.splitlines() if line.strip().startswith(hit["id"]))
        assert line.split()[1:] == [str(rank), f"{hit['score']:.4f}"], out
