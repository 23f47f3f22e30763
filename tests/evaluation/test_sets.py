"""The evaluation's yardstick: resource archives, near-duplicate removal, edit strengths, roles.

Small, fast cases on skimage.data's photos and synthetic pictures; no Debian
package is needed.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from imgsearch.evaluation import datasets, edits
from imgsearch.evaluation.near_duplicates import NearDuplicateFilter
from imgsearch.evaluation.qt_resources import ResourceFormatError, read_rcc

# --- Qt resource archives


def _rcc(files: dict[str, tuple[bytes, bool]]) -> bytes:
    """A version-3 rcc archive holding `files` ({name: (bytes, zlib?)}) under /pics."""
    names = b""
    name_offsets = {}
    for name in ["pics", *files]:
        name_offsets[name] = len(names)
        encoded = name.encode("utf-16-be")
        names += struct.pack(">HI", len(name), 0) + encoded
    data = b""
    data_offsets = {}
    for name, (blob, compress) in files.items():
        data_offsets[name] = len(data)
        stored = struct.pack(">I", len(blob)) + zlib.compress(blob) if compress else blob
        data += struct.pack(">I", len(stored)) + stored
    nodes = [struct.pack(">IHII", 0, 2, 1, 1) + b"\0" * 8]  # root: 1 child at index 1
    nodes.append(struct.pack(">IHII", name_offsets["pics"], 2, len(files), 2) + b"\0" * 8)
    for name, (_, compress) in files.items():
        flags = 1 if compress else 0
        nodes.append(
            struct.pack(">IHHHI", name_offsets[name], flags, 0, 0, data_offsets[name]) + b"\0" * 8
        )
    tree = b"".join(nodes)
    header_size = 24
    tree_offset = header_size
    data_offset = tree_offset + len(tree)
    names_offset = data_offset + len(data)
    header = b"qres" + struct.pack(">IIIII", 3, tree_offset, data_offset, names_offset, 0)
    return header + tree + data + names


def test_a_qt_resource_archive_gives_back_its_files_plain_and_compressed(tmp_path: Path) -> None:
    plain, packed = b"\xff\xd8 a picture", bytes(range(256)) * 40
    path = tmp_path / "activity.rcc"
    path.write_bytes(_rcc({"a.webp": (plain, False), "b.webp": (packed, True)}))
    assert read_rcc(path) == {"/pics/a.webp": plain, "/pics/b.webp": packed}


@pytest.mark.parametrize("cut", [b"not an archive at all", None])
def test_a_broken_archive_is_refused_by_name(tmp_path: Path, cut: bytes | None) -> None:
    path = tmp_path / "broken.rcc"
    whole = _rcc({"a.webp": (b"x" * 100, False)})
    path.write_bytes(cut if cut is not None else whole[: len(whole) - 30])
    with pytest.raises(ResourceFormatError, match=r"broken\.rcc"):
        read_rcc(path)


# --- near-duplicates


def _photos() -> dict[str, Image.Image]:
    return dict(datasets.skimage_pictures())


def _object_on_white(shape: str, colour: str) -> Image.Image:
    image = Image.new("RGB", (300, 240), "white")
    draw = ImageDraw.Draw(image)
    if shape == "disc":
        draw.ellipse((80, 50, 220, 190), fill=colour)
    else:
        draw.polygon([(150, 30), (250, 210), (50, 210)], fill=colour)
    return image


def test_copies_of_a_picture_are_dropped_and_look_alikes_are_kept() -> None:
    photos = _photos()
    astronaut = photos["skimage/astronaut"]
    # One master shipped at two aspect ratios (as wallpapers are): 16:10 and 16:9 crops.
    wide, wider = astronaut.crop((0, 96, 512, 416)), astronaut.crop((0, 112, 512, 400))
    recompressed = Image.open(io.BytesIO(datasets.to_jpeg(astronaut.resize((200, 200)), 30)))
    unique = NearDuplicateFilter()
    assert unique.offer("astronaut", astronaut)
    # A square and its 16:10 crop are 1.6x apart in scale: beyond the hash (the report lists
    # the closest pairs by descriptor for that); two aspect ratios of one master are not.
    unique.offer("astronaut at 16:10", wide)
    for name, copy in (
        ("resized and recompressed", recompressed),
        ("mirrored", ImageOps.mirror(astronaut)),
        ("another aspect ratio", wider),
        ("brighter", Image.eval(astronaut, lambda v: min(255, int(v * 1.2)))),
    ):
        assert not unique.offer(name, copy), name
    # Distinct photos, and distinct objects on white (alike for a perceptual hash alone).
    for name in ("skimage/coffee", "skimage/chelsea", "skimage/rocket", "skimage/camera"):
        assert unique.offer(name, photos[name]), name
    assert unique.offer("red disc", _object_on_white("disc", "red"))
    assert unique.offer("blue triangle", _object_on_white("triangle", "navy"))
    assert {dropped for dropped, _ in unique.dropped} == {
        "resized and recompressed", "mirrored", "another aspect ratio", "brighter"
    }  # fmt: skip


# --- edit strengths


@pytest.mark.parametrize(("kind", "area"), [("centre_crop_70", 0.70), ("corner_crop_55", 0.55)])
def test_crops_keep_the_stated_share_of_the_area(kind: str, area: float) -> None:
    image = Image.new("RGB", (1000, 600))
    rng = np.random.default_rng(0)
    cropped, _ = edits.KINDS_BY_NAME[kind].apply(image, rng, [])
    assert cropped.width * cropped.height / (1000 * 600) == pytest.approx(area, abs=0.002)
    assert cropped.width / cropped.height == pytest.approx(1000 / 600, rel=0.01)


def test_every_edit_kind_states_its_definition() -> None:
    for kind in edits.ALL_KINDS:
        assert len(kind.description) > 10, kind.name


# --- roles


def _picture(name: str, role: str, kind: str) -> datasets.Picture:
    return datasets.Picture(name, name.split("#")[0], "eval", b"", role, kind)


def test_the_gallery_prefers_photos_and_distractors_never_share_a_gallery_source() -> None:
    pictures = [_picture(f"photo{i}#whole", "gallery", "photo") for i in range(6)]
    pictures += [_picture(f"stamp{i}#whole", "gallery", "cutout") for i in range(6)]
    pictures += [_picture(f"wall{i // 10}#t{i % 10}", "distractor", "wallpaper") for i in range(30)]
    pictures.append(datasets.Picture("train#whole", "train", "train", b"", "gallery", "photo"))
    sets = datasets.photo_sets(pictures, gallery_size=8, distractor_count=20, seed=3)
    kinds = [p.kind for p in sets.gallery]
    assert kinds.count("photo") == 6
    assert kinds.count("cutout") == 2
    gallery_sources = {p.source for p in sets.gallery}
    assert not gallery_sources & {p.source for p in sets.distractors}
    assert len(sets.distractors) == 20
    assert [p.name for p in sets.train] == ["train#whole"]
    again = datasets.photo_sets(pictures, gallery_size=8, distractor_count=20, seed=3)
    assert again == sets
