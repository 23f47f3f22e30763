"""Turning encoded images into the model's input: decode (shared), then the crop geometry.

Runs in a thread pool (Pillow releases the GIL while decoding and resizing), off
the event loop. Decoding and its input checks live in `imgsearch.common.imaging`;
every rejection is an `InvalidArgumentError` whose message names the image's
index in the request.

Geometry (`crop`):

- `full`: the whole picture is resized to input_size x input_size, whatever
  its aspect ratio (a 16:9 photo is squeezed, not cut). Nothing is thrown
  away, so a crop of any part of a picture still overlaps what was indexed.
- `centre`: the shorter side is resized to `resize_size`, then the central
  input_size square is kept (the ImageNet classifier's evaluation crop; it
  drops the sides of wide photos).

`trim_borders` first removes uniform bars along the edges (letterboxing,
pillarboxing, the flat margins of a screenshot), so a letterboxed copy of a
picture is seen as the picture itself.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image

from imgsearch.common.imaging import DecodeLimits, PixelBudget, configure_pillow, decode_then
from imgsearch_embedder.views import View, find_views

__all__ = ["CROP_POLICIES", "Preprocessor", "configure_pillow", "trim_uniform_borders"]

_log = logging.getLogger(__name__)
CropPolicy = Literal["full", "centre"]
CROP_POLICIES: tuple[CropPolicy, ...] = ("full", "centre")
# A border row or column belongs to a bar when every pixel is within this of the bar's colour.
BORDER_TOLERANCE = 12
# Never trim more than this fraction of a side: a picture with a flat sky stays whole.
MAX_TRIM_FRACTION = 0.4
_TRIM_PROBE_SIDE = 256


def _flat(lines: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Which of `lines` (n, length, 3) have every pixel within BORDER_TOLERANCE of `colour`."""
    deviation = np.abs(lines.astype(np.int16) - colour).reshape(len(lines), -1)
    return deviation.max(axis=1) <= BORDER_TOLERANCE


def _bar_length(lines: np.ndarray, limit: int) -> int:
    """How many leading lines (axis 0) are one flat colour, close to the first line's colour.

    Most pictures have no bar: their first line is not flat, and it is the only one
    looked at (measured: 0.1 instead of 1.7 ms an image, over the four sides).
    """
    if limit <= 0:
        return 0
    reference = np.median(lines[0], axis=0)
    if not _flat(lines[:1], reference)[0]:
        return 0
    flat = _flat(lines[:limit], reference)
    return limit if flat.all() else int(np.argmin(flat))


def trim_uniform_borders(image: Image.Image) -> Image.Image:
    """`image` without flat bars along its edges (at most MAX_TRIM_FRACTION of a side each way).

    Measured on a thumbnail of at most 256 px.
    """
    probe = image.copy()
    probe.thumbnail((_TRIM_PROBE_SIDE, _TRIM_PROBE_SIDE), Image.Resampling.NEAREST)
    pixels = np.asarray(probe, dtype=np.uint8)
    height, width = pixels.shape[:2]
    if height < 8 or width < 8:
        return image
    top = _bar_length(pixels, int(height * MAX_TRIM_FRACTION))
    bottom = _bar_length(pixels[::-1], int(height * MAX_TRIM_FRACTION))
    left = _bar_length(pixels.transpose(1, 0, 2), int(width * MAX_TRIM_FRACTION))
    right = _bar_length(pixels.transpose(1, 0, 2)[::-1], int(width * MAX_TRIM_FRACTION))
    if not (top or bottom or left or right):
        return image
    sx, sy = image.width / width, image.height / height
    box = (
        round(left * sx),
        round(top * sy),
        image.width - round(right * sx),
        image.height - round(bottom * sy),
    )
    return image.crop(box)


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
    crop: CropPolicy = "centre"
    trim_borders: bool = False

    def __call__(self, data: bytes, index: int) -> np.ndarray:
        return decode_then(data, f"images[{index}]", self._limits(), self.geometry)

    def with_views(
        self,
        data: bytes,
        index: int,
        whole_ready: Callable[[np.ndarray], None] | None = None,
    ) -> tuple[np.ndarray, list[tuple[View, np.ndarray]]]:
        """The model input of an image, and that of each of its query views (views.py).

        `whole_ready(input)` is called with the whole image's input as soon as it is
        made, before the views are looked for, so the caller can start its forward pass
        meanwhile.
        """
        return decode_then(
            data,
            f"images[{index}]",
            self._limits(),
            functools.partial(self._geometry_and_views, whole_ready=whole_ready),
        )

    def _limits(self) -> DecodeLimits:
        return DecodeLimits(
            self.max_image_pixels,
            draft_size=self.resize_size,
            max_aspect_ratio=self.max_aspect_ratio,
            budget=self.budget,
        )

    def _geometry_and_views(
        self, image: Image.Image, whole_ready: Callable[[np.ndarray], None] | None = None
    ) -> tuple[np.ndarray, list[tuple[View, np.ndarray]]]:
        """The whole image's model input and its views'; a view whose input cannot be made,
        or is not of the whole image's shape (it would fail the batch), is skipped."""
        whole = self.geometry(image)
        if whole_ready is not None:
            whole_ready(whole)
        inputs = []
        for view in find_views(image):
            try:
                array = self.geometry(view.image)
            except Exception:  # noqa: BLE001 -- like a failed detector: the view is skipped
                _log.exception("the model input of a %s view failed; skipped", view.kind)
                continue
            if array.shape != whole.shape:
                _log.error("the model input of a %s view is %s, not %s; skipped", view.kind,
                           array.shape, whole.shape)  # fmt: skip
                continue
            inputs.append((view, array))
        return whole, inputs

    def geometry(self, image: Image.Image) -> np.ndarray:
        """The model input for a decoded RGB image (trim, then crop policy)."""
        if self.trim_borders:
            image = trim_uniform_borders(image)
        if self.crop == "full":
            return self._resize_full(image)
        return self._resize_and_crop(image)

    def _resize_full(self, image: Image.Image) -> np.ndarray:
        size = (self.input_size, self.input_size)
        if image.size != size:
            # reducing_gap: a fast box pre-shrink before bicubic, for large downscales.
            image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        return np.asarray(image, dtype=np.uint8)

    def _resize_and_crop(self, image: Image.Image) -> np.ndarray:
        width, height = image.size
        scale = self.resize_size / min(width, height)
        new_size = (
            max(self.input_size, round(width * scale)),
            max(self.input_size, round(height * scale)),
        )
        if new_size != image.size:
            image = image.resize(new_size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        left = (new_size[0] - self.input_size) // 2
        top = (new_size[1] - self.input_size) // 2
        image = image.crop((left, top, left + self.input_size, top + self.input_size))
        return np.asarray(image, dtype=np.uint8)
