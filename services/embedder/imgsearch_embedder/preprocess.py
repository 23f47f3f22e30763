"""Turning encoded images into the model's input: decode (shared), resize, centre-crop.

Runs in a thread pool (Pillow releases the GIL while decoding and resizing), off
the event loop. Decoding and its input checks live in `imgsearch.common.imaging`;
every rejection is an `InvalidArgumentError` whose message names the image's
index in the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from imgsearch.common.imaging import DecodeLimits, PixelBudget, configure_pillow, decode_then

__all__ = ["Preprocessor", "configure_pillow"]


@dataclass(frozen=True)
class Preprocessor:
    """Turns encoded image bytes into an (input_size, input_size, 3) uint8 RGB array.

    `max_aspect_ratio` bounds the work and memory of the geometry below for any
    image: a more elongated one is centre-cropped to that ratio first (see
    `imgsearch.common.imaging`). `budget` bounds the pixels decoded at once
    across the decode threads; the resize runs within the image's share.
    """

    input_size: int
    resize_size: int
    max_image_pixels: int
    max_aspect_ratio: float | None = None
    budget: PixelBudget | None = field(default=None, compare=False)

    def __call__(self, data: bytes, index: int) -> np.ndarray:
        limits = DecodeLimits(
            self.max_image_pixels,
            draft_size=self.resize_size,
            max_aspect_ratio=self.max_aspect_ratio,
            budget=self.budget,
        )
        return decode_then(data, f"images[{index}]", limits, self._resize_and_crop)

    def _resize_and_crop(self, image: Image.Image) -> np.ndarray:
        width, height = image.size
        scale = self.resize_size / min(width, height)
        new_size = (
            max(self.input_size, round(width * scale)),
            max(self.input_size, round(height * scale)),
        )
        if new_size != image.size:
            # reducing_gap: a fast box pre-shrink before bicubic, for large downscales.
            image = image.resize(new_size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        left = (new_size[0] - self.input_size) // 2
        top = (new_size[1] - self.input_size) // 2
        image = image.crop((left, top, left + self.input_size, top + self.input_size))
        return np.asarray(image, dtype=np.uint8)
