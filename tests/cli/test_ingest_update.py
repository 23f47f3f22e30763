"""Re-ingesting: skipped items keep their labels and uri (said so); --update applies new ones.

And an ingest that ends early (the service goes away mid-run) still prints
its summary, --json included, before exiting 3. Real `imgsearch` processes
against the session's stack; the outage is a real TCP relay that resets
connections and then refuses new ones (tests/fixtures/relay.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tests.cli.conftest import IMGSEARCH, run_cli
from tests.fixtures.relay import TcpRelay


def _noise_images(folder: Path, count: int, seed: int, side: int = 64) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        path = folder / f"noise {index}.png"
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _stored(address: str, paths: list[Path]) -> dict[str, dict]:
    ids = [hashlib.sha256(path.read_bytes()).hexdigest() for path in paths]
    result = run_cli(["get", *ids, "--json"], address)
    assert result.code == 0, result.stderr
    return {item["id"]: item for item in result.json()["items"]}


def test_reingest_says_labels_are_kept_and_update_applies_them(
    stack_address: str, tmp_path: Path
) -> None:
    first = _noise_images(tmp_path / "first", 3, seed=501)
    done = run_cli(["ingest", str(tmp_path / "first"), "-l", "owner=bo", "--json"], stack_address)
    assert done.code == 0, done.stderr
    assert done.json()["inserted"] == 3

    again = run_cli(["ingest", str(tmp_path / "first"), "-l", "owner=ana"], stack_address)
    assert again.code == 0, again.stderr
    assert "skipped 3 already indexed" in again.stdout
    assert "3 skipped items keep their stored labels and uri" in again.stderr
    assert "--update" in again.stderr
    assert {item["labels"]["owner"] for item in _stored(stack_address, first).values()} == {"bo"}

    updated = run_cli(
        ["ingest", str(tmp_path / "first"), "-l", "owner=ana", "--update", "--json"],
        stack_address,
    )
    assert updated.code == 0, updated.stderr
    summary = updated.json()
    assert (summary["updated"], summary["inserted"], summary["skipped"]) == (3, 0, 0)
    assert {item["labels"]["owner"] for item in _stored(stack_address, first).values()} == {"ana"}

    # A moved file (same content, so the same id): --update gives it its new uri.
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(first[0], moved / "renamed.png")
    moved_run = run_cli(
        ["ingest", str(moved), "-l", "owner=ana", "--update", "--json"], stack_address
    )
    assert moved_run.json()["updated"] == 1
    assert _stored(stack_address, first[:1])[hashlib.sha256(first[0].read_bytes()).hexdigest()][
        "uri"
    ].endswith("/moved/renamed.png")

    # Nothing differs any more: a plain skip, no note.
    quiet = run_cli(["ingest", str(moved), "-l", "owner=ana", "--json"], stack_address)
    assert (quiet.json()["skipped"], quiet.json()["stale"]) == (1, 0)
    assert "keep their stored labels" not in quiet.stderr


def test_ingest_json_summary_is_printed_when_the_service_goes_away(
    stack_address: str, tmp_path: Path
) -> None:
    _noise_images(tmp_path / "many", 40, seed=502, side=96)
    # Every connection is reset after ~4 images went up; after the first reset
    # the relay refuses new connections: the service is gone mid-run.
    with TcpRelay(stack_address, cut_after_bytes=130_000, cut_connections=1000) as relay:

        def refuse_after_first_cut() -> None:
            deadline = time.monotonic() + 120
            while relay.cuts == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            relay.refuse()

        watcher = threading.Thread(target=refuse_after_first_cut, daemon=True)
        watcher.start()
        env = {**os.environ, "IMGSEARCH_ADDRESS": relay.address}
        proc = subprocess.run(
            [*IMGSEARCH, "ingest", str(tmp_path / "many"), "--batch-size", "1",
             "--concurrency", "1", "--json"],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        watcher.join(5)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert 1 <= summary["inserted"] < 40
    assert "unavailable" in summary["stopped"].lower()
    assert proc.stderr.strip().splitlines()[-1].startswith("imgsearch: error:")
    assert "Traceback" not in proc.stderr
