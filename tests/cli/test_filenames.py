"""The reversible encoding of file names into uris, ids and labels (no server involved)."""

from __future__ import annotations

import os
import random
import re

import pytest

from imgsearch.filenames import escape_name, file_uri, name_bytes, path_from_uri

# Names from bug reports against photo tools: old archives, scripts gone wrong, other OSes.
ODD_NAMES = [
    b"caf\xe9.png",  # Latin-1
    "café.png".encode(),  # UTF-8
    b"new\nline.png",
    b"tab\there.png",
    b"carriage\rreturn.png",
    b"\x1b[31mred\x1b[0m.png",  # a terminal escape sequence
    b"del\x7f.png",
    b"c1\xc2\x85next-line.png",  # U+0085 NEXT LINE, valid UTF-8
    "line\u2028separator.png".encode(),
    "right-to-left\u202egnp.exe".encode(),
    b"100%.png",
    b"%41.png",  # looks escaped already
    b"-rf.png",
    b"--help.png",
    b"overlong\xc0\xaf.png",
    b"surrogate\xed\xa0\x80.png",
    b"truncated\xe2\x82.png",
    b"\xff\xfe",
    b"x" * 255,
    "写真".encode() * 42,  # 252 bytes of CJK
    b"spaces and 'quotes' \"here\".png",
]
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


@pytest.mark.parametrize("raw", ODD_NAMES, ids=lambda raw: repr(raw)[:30])
def test_escape_name_is_printable_and_reversible(raw: bytes) -> None:
    escaped = escape_name(raw)
    assert not _UNSAFE.search(escaped), escaped
    escaped.encode("utf-8")  # valid text: no lone surrogates
    assert name_bytes(escaped) == raw


@pytest.mark.parametrize("raw", ODD_NAMES, ids=lambda raw: repr(raw)[:30])
def test_file_uri_is_ascii_and_reversible(raw: bytes, tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(os.fsencode(tmp_path), raw)
    uri = file_uri(path)
    assert uri.startswith("file:///")
    assert uri.isascii()
    assert re.fullmatch(r"file://[A-Za-z0-9._~/%-]+", uri), uri
    assert os.fsencode(path_from_uri(uri)) == path


def test_clean_names_are_unchanged() -> None:
    assert escape_name("photos/2024/café au lait.jpg") == "photos/2024/café au lait.jpg"
    assert escape_name(b"caf\xe9.png") == "caf%E9.png"
    assert escape_name(b"a\nb.png") == "a%0Ab.png"
    assert escape_name(b"100%.png") == "100%25.png"
    assert file_uri(b"/photos/caf\xe9 1.png") == "file:///photos/caf%E9%201.png"
    assert file_uri("/photos/café.png") == "file:///photos/caf%C3%A9.png"


def test_random_byte_names_round_trip() -> None:
    rng = random.Random(9)
    alphabet = [byte for byte in range(1, 256) if byte != ord("/")]
    for _ in range(2000):
        raw = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        if raw in (b".", b".."):  # not names: abspath resolves them
            continue
        escaped = escape_name(raw)
        assert name_bytes(escaped) == raw
        assert not _UNSAFE.search(escaped)
        uri = file_uri(b"/" + raw)
        assert uri.isascii()
        assert os.fsencode(path_from_uri(uri)) == b"/" + raw


def test_path_from_uri_accepts_plain_paths_and_refuses_other_schemes() -> None:
    assert str(path_from_uri("/photos/cat.jpg")) == "/photos/cat.jpg"
    assert str(path_from_uri("file://localhost/photos/cat.jpg")) == "/photos/cat.jpg"
    with pytest.raises(ValueError, match="not a file"):
        path_from_uri("https://example.com/cat.jpg")
    with pytest.raises(ValueError, match="another host"):
        path_from_uri("file://server/share/cat.jpg")


def test_html_thumbnails_open_file_uris_of_any_name(tmp_path: os.PathLike[str]) -> None:
    from PIL import Image

    from imgsearch.cli.html import hit_image_src

    path = os.path.join(os.fsencode(tmp_path), b"caf\xe9\n1.png")
    Image.new("RGB", (4, 4), "blue").save(os.fsdecode(path), format="PNG")
    src = hit_image_src(file_uri(path))
    assert src is not None
    assert src.startswith("data:image/jpeg;base64,")
