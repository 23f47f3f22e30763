"""Real photographs for the Search tests (scikit-image's bundled samples) and edits of them.

The samples ship inside the scikit-image wheel, so nothing is downloaded.
`chelsea` and `cat` are the same picture, so only one of them is used.
"""

from __future__ import annotations

import io

import numpy as np
import skimage.data
from PIL import Image

PHOTO_NAMES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "camera",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "horse",
    "page",
    "text",
    "moon",
    "coins",
    "brick",
    "grass",
    "gravel",
    "clock",
    "shepp_logan_phantom",
)


def _to_pil(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        low, high = float(array.min()), float(array.max())
        array = ((array - low) / ((high - low) or 1.0) * 255).astype(np.uint8)
    image = Image.fromarray(array)
    return image.convert("RGB")


def load_photo(name: str, max_side: int = 512) -> Image.Image:
    """One sample photo as an RGB image, no larger than `max_side` pixels."""
    image = _to_pil(getattr(skimage.data, name)())
    image.thumbnail((max_side, max_side))
    return image


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def cropped(image: Image.Image, keep: float = 0.8) -> Image.Image:
    """The centre `keep` fraction of each side (a crop a user might upload)."""
    width, height = image.size
    dx, dy = int(width * (1 - keep) / 2), int(height * (1 - keep) / 2)
    return image.crop((dx, dy, width - dx, height - dy))


def load_photos() -> dict[str, bytes]:
    """Every sample photo as JPEG bytes, by name."""
    return {name: jpeg(load_photo(name)) for name in PHOTO_NAMES}


def corrupt(data: bytes) -> bytes:
    """A JPEG cut short: the header parses, the image data does not."""
    return data[: max(64, len(data) // 10)]
