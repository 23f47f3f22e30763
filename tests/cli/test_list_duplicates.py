"""`imgsearch list` and `imgsearch duplicates` against the session's stack (real everything)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from imgsearch.client import Client
from tests.cli.conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stored(stack_address: str, photo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three photos under `cli-dup/`, one of them twice (a recompressed copy), label set=cli-dup."""
    folder = tmp_path_factory.mktemp("cli-dup") / "cli-dup"
    folder.mkdir()
    for name in ("coffee.jpg", "astronaut.png"):
        (folder / name).write_bytes((photo_dir / name).read_bytes())
    Image.open(photo_dir / "coffee.jpg").save(folder / "coffee-copy.jpg", quality=40)
    Image.open(photo_dir / "nested" / "rocket.bmp").save(folder / "rocket.png")
    result = run_cli(
        ["ingest", str(folder), "--id-from", "path", "--label", "set=cli-dup", "--json"],
        stack_address,
        cwd=folder.parent,
    )
    assert result.code == 0, result.stderr
    assert result.json()["inserted"] == 4
    return folder


FILTER = 'set == "cli-dup"'
IDS = [
    "cli-dup/astronaut.png",
    "cli-dup/coffee-copy.jpg",
    "cli-dup/coffee.jpg",
    "cli-dup/rocket.png",
]


def test_list_pages_json_table_and_contact_sheet(
    stack_address: str, stored: Path, tmp_path: Path
) -> None:
    first = run_cli(["list", "--filter", FILTER, "--page-size", "3", "--json"], stack_address)
    assert first.code == 0, first.stderr
    page = first.json()
    assert [item["id"] for item in page["items"]] == IDS[:3]
    assert page["next_page_token"]
    rest = run_cli(
        ["list", "--filter", FILTER, "--page-token", page["next_page_token"], "--json"],
        stack_address,
    ).json()
    assert [item["id"] for item in rest["items"]] == IDS[3:]
    assert rest["next_page_token"] == ""

    everything = run_cli(["list", "--filter", FILTER, "--page-size", "1", "--all", "--json"],
                         stack_address).json()  # fmt: skip
    assert [item["id"] for item in everything["items"]] == IDS

    sheet = tmp_path / "items.html"
    table = run_cli(
        ["list", "--filter", FILTER, "--page-size", "2", "--html", str(sheet)], stack_address
    )
    assert table.code == 0, table.stderr
    assert "cli-dup/astronaut.png" in table.stdout
    assert "set=cli-dup" in table.stdout
    assert "more items: imgsearch list --filter" in table.stderr
    assert sheet.read_text().count('src="data:image/webp;base64,') == 2

    bad = run_cli(["list", "--page-token", "nonsense"], stack_address)
    assert bad.code == 1
    assert "page_token" in bad.stderr


def test_duplicates_json_table_and_contact_sheet(
    stack_address: str, stored: Path, tmp_path: Path
) -> None:
    found = run_cli(["duplicates", "--filter", FILTER, "--threshold", "0.9", "--json"],
                    stack_address)  # fmt: skip
    assert found.code == 0, found.stderr
    data = found.json()
    assert data["items_scanned"] == 4
    assert [[m["id"] for m in g["items"]] for g in data["groups"]] == [
        ["cli-dup/coffee-copy.jpg", "cli-dup/coffee.jpg"]
    ]
    group = data["groups"][0]
    assert 0.9 <= group["min_score"] <= 1.0
    assert group["items"][0]["best_match_id"] == "cli-dup/coffee.jpg"

    sheet = tmp_path / "dups.html"
    table = run_cli(
        ["duplicates", "--filter", FILTER, "--threshold", "0.9", "--html", str(sheet)],
        stack_address,
    )
    assert table.code == 0, table.stderr
    summary = r"1 group, 2 items in groups at cosine >= 0\.9; scanned 4 items in \d+\.\d s"
    assert re.search(summary, table.stdout)
    assert "cli-dup/coffee-copy.jpg" in table.stdout
    html = sheet.read_text()
    assert "group 1: 2 items" in html
    assert html.count('src="data:image/webp;base64,') == 2

    bad = run_cli(["duplicates", "--filter", "set ~ 1"], stack_address)
    assert bad.code == 1
    assert "filter" in bad.stderr


def test_client_iterates_and_fetches_thumbnails(stack_address: str, stored: Path) -> None:
    with Client(stack_address) as client:
        assert [item.id for item in client.iter_items(filter=FILTER, page_size=2)] == IDS
        thumbnails = client.thumbnails(IDS)
        assert set(thumbnails) == set(IDS)
        assert all(
            mime == "image/webp" and data[:4] == b"RIFF" for data, mime in thumbnails.values()
        )
        progress: list[tuple[int, int]] = []
        found = client.find_duplicates(
            threshold=0.9,
            filter=FILTER,
            progress=lambda done, total: progress.append((done, total)),
        )
        assert progress[0] == (0, 4)
        assert progress[-1] == (4, 4)
        assert [[m.id for m in g.items] for g in found.groups] == [
            ["cli-dup/coffee-copy.jpg", "cli-dup/coffee.jpg"]
        ]
