"""`imgsearch ingest` of odd file names, special files and links, against the real local stack.

Every image gets indexed whatever its name (not UTF-8, control characters,
leading dashes, 250-byte names...); ids, uris and labels decode back to the
exact bytes of the name; one bad file fails alone; nothing blocks on a FIFO.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgsearch.client import Client, content_id
from imgsearch.filenames import escape_name, name_bytes, path_from_uri
from tests.cli.conftest import Result, run_cli

pytestmark = pytest.mark.slow

ODD_NAMES = [
    b"caf\xe9.png",  # Latin-1, from an old archive
    "café.png".encode(),
    b"new\nline.png",
    b"tab\there.png",
    b"\x1b[31mred.png",
    b"-dash.png",
    b"--help.png",
    b"100%.png",
    b"\xff\xfe.png",
    "写真".encode() * 41 + b".png",  # 250 bytes
]
FOLDER = b"d\xe9j\xe0 vu\n"  # a folder name that is not UTF-8 and ends in a newline
_RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # in output: no escape sequences


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(path: bytes, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


@dataclass(frozen=True)
class Tree:
    root: bytes  # the folder given to ingest, relative to `cwd`
    cwd: Path
    images: dict[bytes, bytes]  # path relative to cwd -> content
    bad: bytes  # a corrupt JPEG with an odd name


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory, stack_address: str) -> Iterator[Tree]:
    cwd = tmp_path_factory.mktemp("names")
    root = b"odd"
    os.makedirs(os.path.join(os.fsencode(cwd), root, FOLDER))
    os.makedirs(os.path.join(os.fsencode(cwd), b"elsewhere"))
    images = {}
    for index, name in enumerate(ODD_NAMES):
        images[os.path.join(root, name)] = _png(index)
    images[os.path.join(root, FOLDER, b"in folder.png")] = _png(100)
    images[os.path.join(root, b"linked", b"target.png")] = _png(101)
    for relative, data in images.items():
        if not relative.startswith(os.path.join(root, b"linked")):
            _write(os.path.join(os.fsencode(cwd), relative), data)
    base = os.path.join(os.fsencode(cwd), root)
    _write(os.path.join(os.fsencode(cwd), b"elsewhere", b"target.png"), _png(101))
    os.symlink(os.path.join(os.fsencode(cwd), b"elsewhere"), os.path.join(base, b"linked"))
    os.mkfifo(os.path.join(base, b"fifo\xe9.jpg"))
    os.symlink(b"/nonexistent/x.jpg", os.path.join(base, b"dangling.jpg"))
    bad = os.path.join(root, b"bad\xe9\n.jpg")
    _write(os.path.join(os.fsencode(cwd), bad), b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    yield Tree(root, cwd, images, bad)
    with Client(stack_address) as client:
        client.delete([escape_name(relative) for relative in images])
        client.delete([content_id(data) for data in images.values()])


def _printable(text: str) -> None:
    assert not _RAW_CONTROL.search(text), text


@pytest.fixture(scope="module")
def first_run(stack_address: str, tree: Tree) -> Result:
    args = ["ingest", os.fsdecode(tree.root), "--id-from", "path", "--folder-label", "folder"]
    return run_cli([*args, "--json"], stack_address, cwd=tree.cwd)


def test_every_odd_name_is_indexed_reversibly(
    stack_address: str, tree: Tree, first_run: Result
) -> None:
    result = first_run
    # Exit 1: the corrupt JPEG failed; every image was indexed all the same.
    assert result.code == 1, result.stderr
    report = result.json()
    assert report["inserted"] == len(tree.images)
    assert [failure["path"] for failure in report["failed"]] == [escape_name(tree.bad)]
    assert report["failed"][0]["reason"].startswith("INVALID_ARGUMENT")
    kinds = {Path(s["path"]).name: s["kind"] for s in report["not_regular_files"]}
    assert kinds == {"fifo%E9.jpg": "a FIFO", "dangling.jpg": "a broken symbolic link"}
    assert len(result.stderr.splitlines()) == 2  # one warning line per special file
    _printable(result.stderr)
    with Client(stack_address) as client:
        stored = client.get([escape_name(relative) for relative in tree.images])
    assert stored.missing_ids == []
    for item in stored.items:
        relative = name_bytes(item.id)
        assert tree.images[relative]  # the id decodes to the file's path
        assert os.fsencode(path_from_uri(item.uri)) == os.path.join(os.fsencode(tree.cwd), relative)
        folder = os.path.basename(os.path.dirname(relative))
        assert name_bytes(item.labels["folder"]) == folder


def test_odd_names_as_arguments_print_safely(
    stack_address: str, tree: Tree, first_run: Result
) -> None:
    """File arguments that are not UTF-8 or start with a dash (after `--`); hash ids."""
    folder = tree.cwd / os.fsdecode(tree.root)
    names = [os.fsdecode(name) for name in ODD_NAMES]
    bad = os.fsdecode(os.path.basename(tree.bad))
    result = run_cli(["ingest", "--", *names, bad], stack_address, folder)
    assert result.code == 1, result.stderr
    _printable(result.stdout)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"inserted {len(names)}, skipped 0 already indexed")
    assert lines[1].startswith("  failed: bad%E9%0A.jpg: INVALID_ARGUMENT")
    assert len(lines) == 2


def test_search_with_an_odd_query_name(stack_address: str, tree: Tree, first_run: Result) -> None:
    query = os.fsdecode(os.path.join(tree.root, b"caf\xe9.png"))
    result = run_cli(["search", query, "-k", "1", "--json"], stack_address, tree.cwd)
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["query"] == "odd/caf%E9.png"
    assert data["hits"][0]["uri"].endswith("/odd/caf%E9.png")
    assert data["hits"][0]["id"] in ("odd/caf%E9.png", content_id(tree.images[b"odd/caf\xe9.png"]))
