"""Random photo edits for *fitting* (whitening), never for measuring.

`random_edit` composes edits of random kind and strength (crop anywhere,
rotation, rescaling, colour, blur, captions, banners, pasting into another
picture, bars, perspective, JPEG), in the spirit of the augmentations used to
train copy-detection descriptors (SSCD). It is deliberately not the
evaluation's fixed list of kinds and strengths (`edits.py`): a fitted
projection must generalise to edits, not learn the test.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from imgsearch.evaluation.edits import encode_jpeg

_TEXT = ("hello", "look", "2023", "wow!!", "caption here", "share", "funny", "omg", "sale -50%")


def _rand_crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    keep_w, keep_h = rng.uniform(0.45, 1.0), rng.uniform(0.45, 1.0)
    w, h = max(8, round(image.width * keep_w)), max(8, round(image.height * keep_h))
    left = int(rng.integers(0, image.width - w + 1))
    top = int(rng.integers(0, image.height - h + 1))
    return image.crop((left, top, left + w, top + h))


def _caption(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    out = image.copy()
    draw = ImageDraw.Draw(out)
    size = max(8, int(image.height * rng.uniform(0.06, 0.18)))
    for _ in range(int(rng.integers(1, 4))):
        text = _TEXT[int(rng.integers(len(_TEXT)))]
        xy = (int(rng.integers(0, max(1, image.width // 2))), int(rng.integers(0, image.height)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.text(xy, text, fill=colour, font=ImageFont.load_default(size=size),
                  stroke_width=max(1, size // 12), stroke_fill="black")  # fmt: skip
    return out


def _overlay(image: Image.Image, other: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A strip of another picture over 10-35% of this one, at an edge."""
    out = image.copy()
    if rng.random() < 0.5:
        height = max(1, int(image.height * rng.uniform(0.1, 0.35)))
        strip = ImageOps.fit(other, (image.width, height))
        out.paste(strip, (0, 0 if rng.random() < 0.5 else image.height - height))
    else:
        width = max(1, int(image.width * rng.uniform(0.1, 0.35)))
        strip = ImageOps.fit(other, (width, image.height))
        out.paste(strip, (0 if rng.random() < 0.5 else image.width - width, 0))
    return out


def _paste_into(image: Image.Image, other: Image.Image, rng: np.random.Generator) -> Image.Image:
    canvas = ImageOps.fit(other, (int(rng.integers(600, 1100)), int(rng.integers(400, 800))))
    scale = rng.uniform(0.3, 0.75) * canvas.width / image.width
    inset = image.resize((max(8, int(image.width * scale)), max(8, int(image.height * scale))))
    inset = inset.crop((0, 0, min(inset.width, canvas.width), min(inset.height, canvas.height)))
    left = int(rng.integers(0, canvas.width - inset.width + 1))
    top = int(rng.integers(0, canvas.height - inset.height + 1))
    canvas.paste(inset, (left, top))
    return canvas


def _bars(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    colour = "black" if rng.random() < 0.7 else "white"
    if rng.random() < 0.5:
        canvas = Image.new("RGB", (image.width, int(image.height * rng.uniform(1.15, 1.8))), colour)
    else:
        canvas = Image.new("RGB", (int(image.width * rng.uniform(1.15, 1.8)), image.height), colour)
    canvas.paste(image, ((canvas.width - image.width) // 2, (canvas.height - image.height) // 2))
    return canvas


def _perspective(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    d = rng.uniform(-0.15, 0.15, 8) * np.array([w, h] * 4)
    quad = np.array([0, 0, 0, h, w, h, w, 0], dtype=float) + d
    return image.transform(image.size, Image.Transform.QUAD, tuple(quad), Image.Resampling.BICUBIC)


def _colour(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    roll = rng.random()
    if roll < 0.2:
        image = ImageOps.grayscale(image).convert("RGB")
    elif roll < 0.3:
        dark = tuple(int(c) for c in rng.integers(0, 80, 3))
        light = tuple(int(c) for c in rng.integers(170, 256, 3))
        image = ImageOps.colorize(ImageOps.grayscale(image), dark, light)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.45, 1.55))
    return ImageEnhance.Contrast(image).enhance(rng.uniform(0.6, 1.4))


def random_edit(
    image: Image.Image, rng: np.random.Generator, others: Sequence[Image.Image]
) -> bytes:
    """One randomly edited copy of `image`, as JPEG bytes; `others` are unrelated pictures."""
    other = others[int(rng.integers(len(others)))] if others else Image.new("RGB", (640, 480))
    if rng.random() < 0.6:
        image = _rand_crop(image, rng)
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    if rng.random() < 0.35:
        image = image.rotate(rng.uniform(-35, 35), Image.Resampling.BICUBIC, expand=True)
    if rng.random() < 0.15:
        image = _perspective(image, rng)
    if rng.random() < 0.6:
        image = _colour(image, rng)
    if rng.random() < 0.2:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 3.5)))
    overlay = rng.random()
    if overlay < 0.2:
        image = _caption(image, rng)
    elif overlay < 0.35:
        image = _overlay(image, other, rng)
    elif overlay < 0.5:
        image = _paste_into(image, other, rng)
    elif overlay < 0.6:
        image = _bars(image, rng)
    if rng.random() < 0.3:
        side = rng.uniform(40, 240)
        small = image.copy()
        small.thumbnail((int(side), int(side)), Image.Resampling.LANCZOS)
        image = small
    return encode_jpeg(image, int(rng.integers(10, 96)))
