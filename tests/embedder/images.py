"""Real test images (skimage.data photos) encoded in every format the Embedder accepts."""

from __future__ import annotations

import io
from functools import cache

import numpy as np
from PIL import Image
from skimage import data


@cache
def photo(name: str) -> np.ndarray:
    """An RGB photo from skimage.data: chelsea (cat), coffee, astronaut, rocket."""
    array = getattr(data, name)()
    return array if array.ndim == 3 else np.stack([array] * 3, axis=-1)


def encode(image: Image.Image | np.ndarray, fmt: str, **options: object) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg(name: str, quality: int = 90) -> bytes:
    return encode(photo(name), "JPEG", quality=quality)
