"""Edited copies of a picture: the queries of the near-duplicate benchmark.

Each edit kind is a function `(image, rng, backdrops) -> (edited image, JPEG quality)`;
`rng` is a `numpy.random.Generator` seeded per (seed, picture, kind), so a set is
the same on every run and machine. `backdrops` are unrelated pictures (from
the training sources, never indexed) for the edits that need one.

Strengths follow the issue's wording; "keeping X% of the picture" is X% of its
area, with the picture's aspect ratio (centre crop 70%: sqrt(0.7) = 0.837 of
each side; corner crop 55%: sqrt(0.55) = 0.742 of each side, at a random
corner). docs/evaluation.md states every kind's exact definition.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

Generator = np.random.Generator
Backdrops = Sequence[Image.Image]
Edit = Callable[[Image.Image, Generator, Backdrops], tuple[Image.Image, int]]
DEFAULT_QUALITY = 90
RESIZE_FLOOR = 64  # px, longer side
_WORDS = (
    "SALE", "holiday", "look at this", "2024", "best view", "my trip", "wow", "new",
    "share", "repost", "follow for more", "original?",
)  # fmt: skip


@dataclass(frozen=True)
class EditKind:
    """One kind of edit, in a difficulty group ("easy" or "hard")."""

    name: str
    group: str
    description: str
    apply: Edit


def _crop_area(image: Image.Image, area: float, corner: tuple[float, float]) -> Image.Image:
    """Keep `area` of the picture's area (sqrt(area) of each side); `corner` (0..1, 0..1)
    places the window."""
    width, height = image.size
    keep = area**0.5
    w, h = max(1, round(width * keep)), max(1, round(height * keep))
    left, top = round((width - w) * corner[0]), round((height - h) * corner[1])
    return image.crop((left, top, left + w, top + h))


def _scaled(image: Image.Image, factor: float) -> Image.Image:
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.BICUBIC)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


def _backdrop(backdrops: Sequence[Image.Image], rng: np.random.Generator) -> Image.Image:
    if not backdrops:
        return Image.new("RGB", (800, 600), (230, 232, 236))
    return backdrops[int(rng.integers(len(backdrops)))].convert("RGB")


# --- easy


def centre_crop_70(
    image: Image.Image, rng: Generator, backdrops: Backdrops
) -> tuple[Image.Image, int]:
    return _crop_area(image, 0.7, (0.5, 0.5)), DEFAULT_QUALITY


def jpeg_q20(image: Image.Image, rng: Generator, backdrops: Backdrops) -> tuple[Image.Image, int]:
    return image, 20


def rotate_10(image: Image.Image, rng: Generator, backdrops: Backdrops) -> tuple[Image.Image, int]:
    angle = 10.0 if rng.random() < 0.5 else -10.0
    return image.rotate(angle, Image.Resampling.BICUBIC, expand=True), DEFAULT_QUALITY


def mirror(image: Image.Image, rng: Generator, backdrops: Backdrops) -> tuple[Image.Image, int]:
    return ImageOps.mirror(image), DEFAULT_QUALITY


def resize_20(image: Image.Image, rng: Generator, backdrops: Backdrops) -> tuple[Image.Image, int]:
    # Small pictures (cut-out objects of ~200 px) stop at 64 px: below that it is thumbnail_48.
    factor = max(0.2, min(1.0, RESIZE_FLOOR / max(image.size)))
    return _scaled(image, factor), DEFAULT_QUALITY


def grayscale(image: Image.Image, rng: Generator, backdrops: Backdrops) -> tuple[Image.Image, int]:
    return ImageOps.grayscale(image).convert("RGB"), DEFAULT_QUALITY


def brighten_40(
    image: Image.Image, rng: Generator, backdrops: Backdrops
) -> tuple[Image.Image, int]:
    return ImageEnhance.Brightness(image).enhance(1.4), DEFAULT_QUALITY


# --- hard


def corner_crop_55(
    image: Image.Image, rng: Generator, backdrops: Backdrops
) -> tuple[Image.Image, int]:
    corner = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))[int(rng.integers(4))]
    return _crop_area(image, 0.55, corner), DEFAULT_QUALITY


def rotate_30(image: Image.Image, rng: Generator, backdrops: Backdrops) -> tuple[Image.Image, int]:
    angle = 30.0 if rng.random() < 0.5 else -30.0
    return image.rotate(angle, Image.Resampling.BICUBIC, expand=True), DEFAULT_QUALITY


def banner_25(image: Image.Image, rng: Generator, backdrops: Backdrops) -> tuple[Image.Image, int]:
    """An unrelated picture strip with a caption over 25% of the area (top or bottom)."""
    out = image.copy()
    height = max(1, round(image.height * 0.25))
    strip = ImageOps.fit(_backdrop(backdrops, rng), (image.width, height))
    draw = ImageDraw.Draw(strip)
    word = _WORDS[int(rng.integers(len(_WORDS)))]
    draw.text((height // 5, height // 5), word, fill="white", font=_font(height // 2),
              stroke_width=2, stroke_fill="black")  # fmt: skip
    out.paste(strip, (0, 0 if rng.random() < 0.5 else image.height - height))
    return out, DEFAULT_QUALITY


def crop_rotate_jpeg10(
    image: Image.Image, rng: Generator, backdrops: Backdrops
) -> tuple[Image.Image, int]:
    cropped = _crop_area(image, 0.8, (float(rng.random()), float(rng.random())))
    angle = 15.0 if rng.random() < 0.5 else -15.0
    return cropped.rotate(angle, Image.Resampling.BICUBIC, expand=True), 10


def blur_darken(
    image: Image.Image, rng: Generator, backdrops: Backdrops
) -> tuple[Image.Image, int]:
    radius = max(1.0, max(image.size) / 200)
    blurred = image.filter(ImageFilter.GaussianBlur(radius))
    return ImageEnhance.Brightness(blurred).enhance(0.5), DEFAULT_QUALITY


def thumbnail_48(
    image: Image.Image, rng: Generator, backdrops: Backdrops
) -> tuple[Image.Image, int]:
    small = image.copy()
    small.thumbnail((48, 48), Image.Resampling.LANCZOS)
    return small, DEFAULT_QUALITY


def sepia_mirror(
    image: Image.Image, rng: Generator, backdrops: Backdrops
) -> tuple[Image.Image, int]:
    gray = ImageOps.grayscale(ImageOps.mirror(image))
    return ImageOps.colorize(gray, (40, 26, 13), (255, 240, 192), mid=(160, 120, 70)), 85


def letterbox(image: Image.Image, rng: Generator, backdrops: Backdrops) -> tuple[Image.Image, int]:
    """Black bars: a landscape picture letterboxed into 4:5, a portrait pillarboxed into 16:9."""
    width, height = image.size
    if width >= height:
        canvas = Image.new("RGB", (width, round(width * 5 / 4)), "black")
    else:
        canvas = Image.new("RGB", (round(height * 16 / 9), height), "black")
    canvas.paste(image, ((canvas.width - width) // 2, (canvas.height - height) // 2))
    return canvas, DEFAULT_QUALITY


def pasted_small(
    image: Image.Image, rng: Generator, backdrops: Backdrops
) -> tuple[Image.Image, int]:
    """The picture at 40% of an unrelated larger picture's width, pasted into it (a screenshot)."""
    backdrop = ImageOps.fit(_backdrop(backdrops, rng), (1024, 640))
    inset = _scaled(image, 0.4 * backdrop.width / image.width)
    left = int(rng.integers(0, max(1, backdrop.width - inset.width)))
    top = int(rng.integers(0, max(1, backdrop.height - inset.height)))
    backdrop.paste(inset, (left, top))
    return backdrop, DEFAULT_QUALITY


def text_overlay(
    image: Image.Image, rng: Generator, backdrops: Backdrops
) -> tuple[Image.Image, int]:
    """Three lines of large white captions with a black outline across the picture."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    size = max(10, image.height // 8)
    for line in range(3):
        words = " ".join(_WORDS[int(i)] for i in rng.integers(len(_WORDS), size=2))
        y = round(image.height * (0.15 + 0.3 * line))
        draw.text((image.width // 12, y), words, fill="white", font=_font(size),
                  stroke_width=max(1, size // 12), stroke_fill="black")  # fmt: skip
    return out, DEFAULT_QUALITY


def perspective(
    image: Image.Image, rng: Generator, backdrops: Backdrops
) -> tuple[Image.Image, int]:
    """A keystone skew: one side shrunk by 25%, as a photo of a screen taken at an angle."""
    width, height = image.size
    inset = 0.25 * height / 2
    # Source quad (what lands on the output corners): top-left, bottom-left, bottom-right,
    # top-right. Widening the right side of the source shrinks it in the output.
    quad = (0, 0, 0, height, width, height + inset, width, -inset)
    if rng.random() < 0.5:
        quad = (0, -inset, 0, height + inset, width, height, width, 0)
    return image.transform(image.size, Image.Transform.QUAD, quad, Image.Resampling.BICUBIC), 90


EASY = (
    EditKind(
        "centre_crop_70",
        "easy",
        "centre crop keeping 70% of the area (0.837 of each side)",
        centre_crop_70,
    ),
    EditKind("jpeg_q20", "easy", "re-encoded as JPEG quality 20", jpeg_q20),
    EditKind(
        "rotate_10",
        "easy",
        "rotated 10 degrees either way, bicubic; the canvas grows (black corners)",
        rotate_10,
    ),
    EditKind("mirror", "easy", "mirrored left to right", mirror),
    EditKind(
        "resize_20",
        "easy",
        "resized to 20% of each side, bicubic (never below 64 px on the longer side)",
        resize_20,
    ),
    EditKind("grayscale", "easy", "grayscale (ITU-R 601 luma), saved as RGB", grayscale),
    EditKind("brighten_40", "easy", "brightness x1.4 (PIL ImageEnhance)", brighten_40),
)
HARD = (
    EditKind("corner_crop_55", "hard",
             "crop keeping 55% of the area (0.742 of each side) at a random corner",
             corner_crop_55),
    EditKind("rotate_30", "hard",
             "rotated 30 degrees either way, bicubic; the canvas grows (black corners)",
             rotate_30),
    EditKind("banner_25", "hard",
             "a strip of an unrelated picture with a caption over the top or bottom 25% of the"
             " height (25% of the area)", banner_25),
    EditKind("crop_rotate_jpeg10", "hard",
             "crop keeping 80% of the area at a random place, rotated 15 degrees either way"
             " (canvas grows), JPEG quality 10", crop_rotate_jpeg10),
    EditKind("blur_darken", "hard",
             "Gaussian blur (radius: longer side / 200, at least 1 px), then brightness x0.5",
             blur_darken),
    EditKind("thumbnail_48", "hard", "a thumbnail: longer side 48 px (Lanczos)", thumbnail_48),
    EditKind("sepia_mirror", "hard", "mirrored, sepia toned, JPEG quality 85", sepia_mirror),
    EditKind("letterbox", "hard",
             "black bars: a landscape picture letterboxed into 4:5, a portrait one"
             " pillarboxed into 16:9", letterbox),
    EditKind("pasted_small", "hard",
             "scaled to 40% of the width of an unrelated 1024x640 picture and pasted into it at"
             " a random place (a screenshot)", pasted_small),
    EditKind("text_overlay", "hard",
             "three lines of white, black-outlined caption text, each 1/8 of the height tall,"
             " across the picture", text_overlay),
    EditKind("perspective", "hard",
             "perspective (keystone) skew: the left or right side shrunk by 25%", perspective),
)  # fmt: skip
ALL_KINDS = EASY + HARD
KINDS_BY_NAME = {kind.name: kind for kind in ALL_KINDS}


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def edited_query(
    image: Image.Image,
    kind: EditKind,
    seed: int,
    picture_index: int,
    backdrops: Sequence[Image.Image],
) -> bytes:
    """The query bytes for one (picture, kind): deterministic in (seed, picture_index, kind)."""
    kind_index = ALL_KINDS.index(kind)
    rng = np.random.default_rng([seed, picture_index, kind_index])
    edited, quality = kind.apply(image, rng, backdrops)
    return encode_jpeg(edited, quality)
