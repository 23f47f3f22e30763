"""The Embedder tests' view of the shared sample photos: full size, by name."""

from __future__ import annotations

from functools import cache

import numpy as np

from tests.fixtures.photos import encode, load_photo

__all__ = ["encode", "jpeg", "photo"]


@cache
def photo(name: str) -> np.ndarray:
    """A full-size RGB photo from skimage.data: chelsea (cat), coffee, astronaut, rocket."""
    return np.asarray(load_photo(name, max_side=None))


def jpeg(name: str, quality: int = 90) -> bytes:
    return encode(photo(name), "JPEG", quality=quality)
