"""Unit tests of the ingest file discovery, image sniffing and naming (no server involved)."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from imgsearch.cli.ingest import (
    IngestOptions,
    IngestReport,
    NotRegularFileError,
    PathNotFoundError,
    _batches,
    _item_fields,
    discover,
    looks_like_image,
    path_id,
    read_regular,
)
from imgsearch.filenames import escape_name


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", True),
        (b"\x89PNG\r\n\x1a\n\x00\x00", True),
        (b"GIF89a\x01\x00", True),
        (b"BM\x00\x00", True),
        (b"II*\x00\x08\x00", True),
        (b"MM\x00*\x00\x08", True),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", True),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", False),
        (b"xxxx\x00\x00\x00\x00WEBP", False),
        (b"hello world", False),
        (b"", False),
    ],
)
def test_looks_like_image(header: bytes, expected: bool) -> None:
    assert looks_like_image(header) is expected


def test_discover_folders_files_and_globs(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.jpg", "a/b/2.png", "a/b/3.txt", "4.jpg"):
        (tmp_path / name).write_bytes(b"x")
    found = discover([str(tmp_path / "a"), str(tmp_path / "4.jpg"), str(tmp_path / "**/*.png")])
    assert found == [
        tmp_path / "a" / "1.jpg",
        tmp_path / "a" / "b" / "2.png",
        tmp_path / "a" / "b" / "3.txt",
        tmp_path / "4.jpg",
    ]


def test_discover_missing_path_and_empty_glob(tmp_path: Path) -> None:
    with pytest.raises(PathNotFoundError, match="no such file or folder"):
        discover([str(tmp_path / "missing")])
    with pytest.raises(PathNotFoundError, match="no file matches"):
        discover([str(tmp_path / "*.jpg")])


def test_path_id_is_relative_to_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "x").mkdir()
    image = tmp_path / "x" / "photo.jpg"
    image.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert path_id(image) == "x/photo.jpg"
    assert path_id(Path("/etc/hostname")) == "/etc/hostname"


# --- special files and symbolic links: never opened, never silently dropped


def _special_files(folder: Path) -> dict[str, str]:
    """A FIFO, a socket, links to a device, nowhere and themselves; the kind each is reported as."""
    os.mkfifo(folder / "fifo.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "socket.png"))
    sock.close()
    (folder / "null.jpg").symlink_to("/dev/null")
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    return {
        "fifo.jpg": "a FIFO",
        "socket.png": "a socket",
        "null.jpg": "a character device",
        "dangling.jpg": "a broken symbolic link",
        "loop.jpg": "a symbolic link loop",
    }


def _sniff_in_thread(paths: list[Path]) -> tuple[IngestReport, list[str]]:
    """Run the sniffing of ingest on `paths`; fail (not hang) if it blocks on a file."""
    report = IngestReport()
    warnings: list[str] = []
    options = IngestOptions()
    worker = threading.Thread(
        target=lambda: list(_batches(paths, options, report, warnings.append)), daemon=True
    )
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "ingest blocked opening a special file"
    return report, warnings


def test_special_files_are_skipped_without_being_opened(tmp_path: Path) -> None:
    kinds = _special_files(tmp_path)
    (tmp_path / "real.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    files = discover([str(tmp_path)])
    assert sorted(path.name for path in files) == sorted([*kinds, "real.png"])
    report, warnings = _sniff_in_thread(files)
    assert {Path(s.path).name: s.kind for s in report.not_regular} == kinds
    assert not report.failed
    assert not report.not_images
    assert len(warnings) == len(kinds)
    assert all("not a regular file" in warning for warning in warnings)
    # A FIFO named on the command line is reported too, not silently ignored.
    report, _ = _sniff_in_thread(discover([str(tmp_path / "fifo.jpg")]))
    assert [s.kind for s in report.not_regular] == ["a FIFO"]


def test_read_regular_refuses_special_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NotRegularFileError, match="FIFO"):
        read_regular(tmp_path / "fifo")
    with pytest.raises(NotRegularFileError, match="character device"):
        read_regular(Path("/dev/zero"))
    with pytest.raises(NotRegularFileError, match="folder"):
        read_regular(tmp_path)
    (tmp_path / "file").write_bytes(b"abc")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    assert read_regular(tmp_path / "link") == b"abc"
    assert read_regular(tmp_path / "file", 2) == b"ab"


def test_symlinked_folders_are_followed_once_loops_are_cut(tmp_path: Path) -> None:
    photos, elsewhere = tmp_path / "photos", tmp_path / "elsewhere" / "2019"
    (photos / "cats").mkdir(parents=True)
    elsewhere.mkdir(parents=True)
    (photos / "cats" / "a.jpg").write_bytes(b"x")
    (elsewhere / "b.jpg").write_bytes(b"x")
    (photos / "2019").symlink_to(elsewhere)  # a symlinked sub-folder: followed
    (photos / "cats" / "up").symlink_to(photos)  # a loop back to the top
    (photos / "again").symlink_to(photos / "cats")  # a second way into the same folder
    (photos / "file-link.jpg").symlink_to(elsewhere / "b.jpg")  # a link to a file: a file
    warnings: list[str] = []
    found = discover([str(photos)], warn=warnings.append)
    # Real folders first; then the links, each folder once under its real path.
    assert found == [
        photos / "file-link.jpg",
        photos / "cats" / "a.jpg",
        photos / "2019" / "b.jpg",
    ]
    assert sorted(warnings) == [
        f"not following link {photos / 'again'}: it leads to {photos / 'cats'},"
        " which is already included",
        f"not following link {photos / 'cats' / 'up'}: it leads to {photos},"
        " which is already included",
    ]


def test_broken_link_argument_is_not_a_missing_path(tmp_path: Path) -> None:
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    assert discover([str(tmp_path / "dangling.png")]) == [tmp_path / "dangling.png"]


def test_odd_names_are_discovered_and_reported_printably(tmp_path: Path) -> None:
    folder = os.fsencode(tmp_path)
    names = [b"caf\xe9.txt", b"new\nline.txt", b"-rf.txt", b"\x1b[31mred.txt"]
    for name in names:
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(b"not an image")
    found = discover([os.fsdecode(folder)])
    assert sorted(os.fsencode(path.name) for path in found) == sorted(names)
    report, warnings = _sniff_in_thread(found)
    assert len(report.not_images) == len(names)
    for line in [*warnings, *report.not_images]:
        line.encode("utf-8")  # printable text, no lone surrogates
        assert "\n" not in line
        assert "\x1b" not in line
    assert f"{escape_name(tmp_path)}/caf%E9.txt" in report.not_images


def test_names_too_long_for_the_service(tmp_path: Path) -> None:
    """A uri over 2,048 bytes is dropped with a warning; ids and labels over limits fail."""
    latin1 = os.fsdecode(b"\xe9" * 250)  # 750 bytes once percent-encoded
    deep = tmp_path / latin1 / latin1 / latin1 / "photo.png"
    warnings: list[str] = []
    item_id, uri, labels = _item_fields(deep, IngestOptions(), "ab" * 32, warnings.append)
    assert (item_id, uri, labels) == ("ab" * 32, "", {})
    assert len(warnings) == 1
    assert "indexed without a uri" in warnings[0]
    assert "%E9%E9" in warnings[0]
    with pytest.raises(ValueError, match=r"path id is \d+ bytes, over the limit of 512"):
        _item_fields(deep, IngestOptions(id_from="path"), "ab" * 32, warnings.append)
    with pytest.raises(ValueError, match="folder name is 750 bytes"):
        _item_fields(deep, IngestOptions(folder_label="folder"), "ab" * 32, warnings.append)
    short = tmp_path / "caf\udce9" / "new\nline.png"
    item_id, uri, labels = _item_fields(
        short, IngestOptions(id_from="path", folder_label="folder"), "", warnings.append
    )
    assert item_id == f"{escape_name(tmp_path)}/caf%E9/new%0Aline.png"
    assert uri == f"file://{escape_name(tmp_path)}/caf%E9/new%0Aline.png"
    assert labels == {"folder": "caf%E9"}


@pytest.mark.parametrize("label", ["k=a\nb", "k=caf\udce9", "k=\x1b[31m"], ids=repr)
def test_labels_that_cannot_be_stored_are_bad_usage(label: str, tmp_path: Path) -> None:
    """Refused before anything is sent (exit 2), in one printable line."""
    from typer.testing import CliRunner

    from imgsearch.cli.main import app

    args = ["--address", "127.0.0.1:1", "ingest", str(tmp_path), "--label", label]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "UTF-8 text without control characters" in result.stderr
    assert "\x1b" not in result.stderr
