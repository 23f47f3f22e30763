"""The `imgsearch` command against a real local stack started by `imgsearch up`."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

from imgsearch.client import Client, ItemInput, content_id
from tests.cli.conftest import run_cli
from tests.fixtures.photos import screenshot
from tests.fixtures.processes import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ingest_dir(photo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The photos plus a non-image and a corrupt JPEG (a real JPEG cut after 600 bytes)."""
    folder = tmp_path_factory.mktemp("ingest")
    shutil.copytree(photo_dir, folder, dirs_exist_ok=True)
    (folder / "notes.txt").write_text("not an image\n")
    jpeg = (photo_dir / "coffee.jpg").read_bytes()
    (folder / "nested" / "broken.jpg").write_bytes(jpeg[:600])
    return folder


@pytest.fixture(scope="module")
def ingested(stack_address: str, ingest_dir: Path) -> dict:
    result = run_cli(["ingest", str(ingest_dir), "--json"], stack_address)
    # Exit 1: one file failed (the corrupt JPEG); everything else was indexed.
    assert result.code == 1, result.stderr
    return {"report": result.json(), "stderr": result.stderr}


def test_ingest_reports_inserted_non_images_and_failures(ingested: dict, ingest_dir: Path) -> None:
    report = ingested["report"]
    assert report["inserted"] == 4
    assert report["skipped"] == 0
    assert report["not_images"] == [str(ingest_dir / "notes.txt")]
    assert len(report["failed"]) == 1
    failure = report["failed"][0]
    assert failure["path"] == str(ingest_dir / "nested" / "broken.jpg")
    assert failure["reason"].startswith("INVALID_ARGUMENT")
    warnings = [line for line in ingested["stderr"].splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: skipping {ingest_dir / 'notes.txt'}: not an image"]


def test_reingest_skips_indexed_images(
    stack_address: str, ingest_dir: Path, ingested: dict
) -> None:
    result = run_cli(["ingest", str(ingest_dir), "--json"], stack_address)
    report = result.json()
    assert report["inserted"] == 0
    assert report["skipped"] == 4
    assert len(report["failed"]) == 1


def test_ingest_human_summary(stack_address: str, ingest_dir: Path, ingested: dict) -> None:
    result = run_cli(["ingest", str(ingest_dir / "nested")], stack_address)
    assert result.code == 1
    assert "inserted 0, skipped 2 already indexed" in result.stdout
    assert "failed 1" in result.stdout
    assert f"failed: {ingest_dir / 'nested' / 'broken.jpg'}: INVALID_ARGUMENT" in result.stdout


def _edited_astronaut(photo_dir: Path, tmp_path: Path) -> Path:
    image = Image.open(photo_dir / "astronaut.png").convert("RGB")
    width, height = image.size
    edited = image.crop((40, 40, width - 60, height - 30)).rotate(8)
    # Brackets and colons: file names are data, never rich markup or emoji codes.
    path = tmp_path / "query [red]x[bold] :smile:.jpg"
    edited.save(path, quality=40)
    return path


def test_search_json_finds_the_original(
    stack_address: str, photo_dir: Path, ingested: dict, tmp_path: Path
) -> None:
    query = _edited_astronaut(photo_dir, tmp_path)
    result = run_cli(["search", str(query), "--k", "3", "--json"], stack_address)
    assert result.code == 0, result.stderr
    data = result.json()
    hits = data["hits"]
    assert [hit["rank"] for hit in hits] == [1, 2, 3]
    assert hits[0]["uri"].endswith("astronaut.png")
    assert hits[0]["id"] == content_id((photo_dir / "astronaut.png").read_bytes())
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert -1.0 <= scores[-1] <= scores[0] <= 1.0
    # Which view of the query found each hit ("" for the whole image) is part of the JSON.
    assert all(isinstance(hit["matched_view"], str) for hit in hits)


def test_search_table_and_html(
    stack_address: str, photo_dir: Path, ingested: dict, tmp_path: Path
) -> None:
    query = _edited_astronaut(photo_dir, tmp_path)
    page = tmp_path / "hits.html"
    result = run_cli(["search", str(query), "-k", "2", "--html", str(page)], stack_address)
    assert result.code == 0, result.stderr
    assert "rank" in result.stdout
    assert "score" in result.stdout
    assert f"2 hits for {query}" in result.stdout
    assert "astronaut.png" in result.stdout
    html = page.read_text()
    # The query and both hits are embedded as thumbnails, with scores.
    assert html.count('src="data:image/jpeg;base64,') == 3
    assert html.count('class="score"') == 2


def test_search_by_id_and_min_score(stack_address: str, photo_dir: Path, ingested: dict) -> None:
    coffee = content_id((photo_dir / "coffee.jpg").read_bytes())
    result = run_cli(["search", "--id", coffee, "--json", "--min-score", "0.999"], stack_address)
    assert result.code == 0, result.stderr
    hits = result.json()["hits"]
    assert [hit["id"] for hit in hits] == [coffee]


def test_filter_on_labels(stack_address: str, photo_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "labelled"
    folder.mkdir()
    image = Image.open(photo_dir / "astronaut.png").convert("L")
    image.save(folder / "astronaut-grey.png")
    result = run_cli(
        ["ingest", str(folder), "--label", "kind=grey", "--id-from", "path", "--json"],
        stack_address,
        cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    assert result.json()["inserted"] == 1
    search = run_cli(
        ["search", str(photo_dir / "astronaut.png"), "--filter", 'kind == "grey"', "--json"],
        stack_address,
    )
    assert search.code == 0, search.stderr
    hits = search.json()["hits"]
    assert [hit["id"] for hit in hits] == ["labelled/astronaut-grey.png"]
    assert hits[0]["labels"] == {"kind": "grey"}


def test_get_stats_delete_health(stack_address: str, photo_dir: Path, ingested: dict) -> None:
    rocket = content_id((photo_dir / "nested" / "rocket.bmp").read_bytes())
    got = run_cli(["get", rocket, "--json"], stack_address)
    assert got.code == 0, got.stderr
    item = got.json()["items"][0]
    assert item["content_sha256"] == rocket
    assert item["uri"].endswith("rocket.bmp")

    stats = run_cli(["stats", "--json"], stack_address).json()
    assert stats["item_count"] >= 4
    assert stats["dimension"] > 0

    health = run_cli(["health", "--json"], stack_address)
    assert health.code == 0
    assert health.json()["status"] == "SERVING"

    deleted = run_cli(["delete", rocket, "--json"], stack_address)
    assert deleted.json() == {"deleted": 1, "requested": 1}
    missing = run_cli(["get", rocket], stack_address)
    assert missing.code == 1
    assert missing.stderr.strip() == f"imgsearch: error: not stored: {rocket}"
    # Put it back for the other tests; re-ingest inserts only the deleted one.
    again = run_cli(["ingest", str(photo_dir / "nested" / "rocket.bmp"), "--json"], stack_address)
    assert again.json()["inserted"] == 1


def _one_error_line(result_stderr: str) -> str:
    lines = result_stderr.strip().splitlines()
    assert len(lines) == 1, result_stderr
    assert lines[0].startswith("imgsearch: error: ")
    return lines[0]


def test_bad_filter_is_one_clear_line(stack_address: str, photo_dir: Path) -> None:
    result = run_cli(
        ["search", str(photo_dir / "astronaut.png"), "--filter", "kind ~= grey"], stack_address
    )
    assert result.code == 1
    assert "filter" in _one_error_line(result.stderr).lower()


def test_unreadable_query_file(stack_address: str, tmp_path: Path) -> None:
    result = run_cli(["search", str(tmp_path / "missing.jpg")], stack_address)
    assert result.code == 2
    assert "cannot read" in _one_error_line(result.stderr)


def test_not_an_image_query(stack_address: str, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    result = run_cli(["search", str(text)], stack_address)
    assert result.code == 1
    _one_error_line(result.stderr)


@pytest.mark.parametrize(
    "args",
    [["stats"], ["health"], ["get", "x"], ["delete", "x"], ["search", "--id", "x"]],
    ids=lambda args: args[0],
)
def test_service_down_exits_3(args: list[str], photo_dir: Path) -> None:
    result = run_cli([*args, "--json"], f"127.0.0.1:{free_port()}")
    assert result.code == 3
    line = _one_error_line(result.stderr)
    assert "unavailable" in line
    assert "imgsearch up" in line  # what a newcomer who forgot the stack should do
    assert result.stdout == ""


def test_ingest_with_service_down(photo_dir: Path) -> None:
    result = run_cli(["ingest", str(photo_dir)], f"127.0.0.1:{free_port()}")
    assert result.code == 3
    assert "unavailable" in _one_error_line(result.stderr)


def test_address_option_beats_environment(stack_address: str) -> None:
    result = run_cli(["--address", stack_address, "health"], f"127.0.0.1:{free_port()}")
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == f"{stack_address}: SERVING"


def test_python_client_round_trip(stack_address: str, photo_dir: Path) -> None:
    image = Image.open(photo_dir / "coffee.jpg")
    buffer = io.BytesIO()
    image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(buffer, format="PNG")
    with Client(stack_address, timeout=30) as client:
        outcomes = client.insert(
            [ItemInput(image=buffer.getvalue(), id="client-flipped-coffee", labels={"t": "c"})]
        )
        assert [(outcome.id, outcome.ok) for outcome in outcomes] == [
            ("client-flipped-coffee", True)
        ]
        by_vector = client.get(["client-flipped-coffee"], include_vectors=True).items[0]
        assert by_vector.vector is not None
        hits = client.search(vector=by_vector.vector, k=1).hits
        assert hits[0].id == "client-flipped-coffee"
        assert hits[0].score == pytest.approx(1.0, abs=1e-3)
        assert client.delete(["client-flipped-coffee"]) == 1


def test_python_client_batches_inserts_and_keeps_order(stack_address: str) -> None:
    # An image no other test uses, so the items cannot show up in their results.
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.camera()).save(buffer, format="PNG")
    good = buffer.getvalue()
    items = [
        ItemInput(image=good, id="batch-0"),
        ItemInput(image=good[:500], id="batch-1-truncated"),
        ItemInput(image=good, id="batch-2"),
        ItemInput(image=b"not an image", id="batch-3-text"),
        ItemInput(image=good, id="batch-4"),
    ]
    with Client(stack_address) as client:
        outcomes = client.insert(items, batch_size=2)
        assert [outcome.id for outcome in outcomes] == [item.id for item in items]
        assert [outcome.ok for outcome in outcomes] == [True, False, True, False, True]
        assert outcomes[1].code.name == "INVALID_ARGUMENT"
        assert outcomes[1].message
        stored = client.get([item.id for item in items])
        assert [item.id for item in stored.items] == ["batch-0", "batch-2", "batch-4"]
        assert stored.missing_ids == ["batch-1-truncated", "batch-3-text"]
        assert client.delete(["batch-0", "batch-2", "batch-4"]) == 3


def test_search_says_when_a_view_of_the_query_found_the_hit(
    stack_address: str, ingested: dict, tmp_path: Path
) -> None:
    query = tmp_path / "shot.jpg"
    query.write_bytes(screenshot("astronaut", backdrop="immunohistochemistry"))
    as_json = run_cli(["search", str(query), "-k", "2", "--json"], stack_address)
    assert as_json.code == 0, as_json.stderr
    first = as_json.json()["hits"][0]
    assert first["uri"].endswith("astronaut.png")
    assert first["matched_view"] == "inset"
    table = run_cli(["search", str(query), "-k", "2"], stack_address)
    assert table.code == 0, table.stderr
    assert "found" in table.stdout
    assert "pasted" in table.stdout
