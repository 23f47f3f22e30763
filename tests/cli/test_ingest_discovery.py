"""Unit tests of the ingest file discovery and image sniffing (no server involved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgsearch.cli.ingest import PathNotFoundError, discover, looks_like_image, path_id


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
