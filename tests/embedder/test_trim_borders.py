"""Trimming flat bars off a picture's edges (EMBEDDER_TRIM_BORDERS, on by default).

Real photos (scikit-image's samples) with bars added the way letterboxed video
frames, pillarboxed phone pictures and padded thumbnails have them.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from imgsearch_embedder.preprocess import MAX_TRIM_FRACTION, trim_uniform_borders
from tests.fixtures.photos import PHOTO_NAMES, load_photo


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _padded(photo: Image.Image, border: tuple[int, int, int, int], colour: object) -> Image.Image:
    """`photo` with bars of (left, top, right, bottom) px in `colour`."""
    return ImageOps.expand(photo, border, fill=colour)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "border", "colour", "quality"),
    [
        ("astronaut", (0, 64, 0, 64), "black", None),  # letterbox
        ("coffee", (90, 0, 90, 0), (30, 60, 90), 85),  # pillarbox, JPEG noise in the bars
        ("chelsea", (40, 0, 0, 25), "white", 70),  # two sides, different widths
        ("rocket", (12, 12, 12, 12), (128, 128, 128), None),  # a thin frame
    ],
)
def test_bars_are_trimmed_to_the_picture(
    name: str, border: tuple[int, int, int, int], colour: object, quality: int | None
) -> None:
    photo = load_photo(name)
    image = _padded(photo, border, colour)
    if quality is not None:
        image = _jpeg(image, quality)
    trimmed = trim_uniform_borders(image)
    # The bars are found on a probe of at most 256 px: within one probe pixel.
    step = max(image.size) / 256 + 1
    assert abs(trimmed.width - photo.width) <= 2 * step, (trimmed.size, photo.size)
    assert abs(trimmed.height - photo.height) <= 2 * step, (trimmed.size, photo.size)


# Flat edges of their own, rightly trimmed: margins of paper (page, text), a black
# surround (retina, the phantom), a white background (horse), a flat grey sky (camera).
_FLAT_EDGED = ("page", "text", "retina", "shepp_logan_phantom", "horse", "camera")


@pytest.mark.parametrize("name", [n for n in PHOTO_NAMES if n not in _FLAT_EDGED])
def test_a_picture_without_bars_is_returned_as_it_is(name: str) -> None:
    photo = load_photo(name)
    assert trim_uniform_borders(photo) is photo


def test_never_more_than_the_largest_share_of_a_side() -> None:
    """A flat sky over the top half stays: at most MAX_TRIM_FRACTION of a side goes."""
    photo = load_photo("astronaut")
    sky = _padded(photo, (0, photo.height * 2, 0, 0), (120, 170, 230))
    trimmed = trim_uniform_borders(sky)
    assert trimmed.width == sky.width
    assert trimmed.height == pytest.approx(sky.height * (1 - MAX_TRIM_FRACTION), abs=4)


def test_a_flat_first_line_over_a_picture_is_one_bar_line() -> None:
    """Only lines like the first count: a 1-line rule over a photo trims that line only."""
    photo = load_photo("coffee").resize((256, 192))
    ruled = _padded(photo, (0, 1, 0, 0), "black")
    assert trim_uniform_borders(ruled).size == photo.size
    pixels = np.asarray(trim_uniform_borders(ruled))
    assert np.array_equal(pixels, np.asarray(photo))
