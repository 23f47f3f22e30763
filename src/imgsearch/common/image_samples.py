"""Pixel samples of any numeric type (16-bit, 32-bit, float) to 8-bit RGB, from their real range.

Pillow converts 16-bit and 32-bit images by clipping at 255 and float images by
truncation, so a float picture in [0, 1] comes out black. Here every sample type
is scaled from the range it actually uses, so that a picture embeds like its own
8-bit version:

- unsigned 8/16-bit integers: their nominal range (0..255, 0..65535);
- other integers (signed, 32-bit): 0..255 or 0..65535 when the values fit, else
  the values' own minimum..maximum;
- floats: 0..1 when the finite values fit (the usual convention), else 0..255
  when they fit, else their own minimum..maximum. NaN becomes the low end, +inf
  the high end and -inf the low end.

Colour channels share one range (a per-channel stretch would change the
colours); alpha is scaled on its own (floats: 0..1) and composited on white.
TIFFs whose sample layout Pillow cannot open (float RGB, float64, float16, 2
channels) are read with tifffile (uncompressed, Deflate or LZMA).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
from PIL import Image

WHITE = (255, 255, 255)


def composite_on_white(image: Image.Image) -> Image.Image:
    """An image with alpha (RGBA, LA, PA, RGBa, La) flattened onto white, as RGB."""
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    background = Image.new("RGB", rgba.size, WHITE)
    background.paste(rgba, (0, 0), rgba)
    return background


# Samples are converted this many rows at a time, so the float working copy
# stays small whatever the image's size (a full copy would take 4 bytes a sample).
_CHUNK_ROWS = 256


def _chunks(values: np.ndarray) -> Iterator[slice]:
    for start in range(0, values.shape[0], _CHUNK_ROWS):
        yield slice(start, start + _CHUNK_ROWS)


def _finite_range(values: np.ndarray) -> tuple[float, float]:
    """Smallest and largest finite sample (low > high when there is none)."""
    low, high = np.inf, -np.inf
    for rows in _chunks(values):
        chunk = values[rows]
        finite = np.isfinite(chunk)
        low = min(low, float(np.fmin.reduce(chunk, axis=None, initial=np.inf, where=finite)))
        high = max(high, float(np.fmax.reduce(chunk, axis=None, initial=-np.inf, where=finite)))
    return low, high


def _range_of_floats(values: np.ndarray) -> tuple[float, float]:
    low, high = _finite_range(values)
    if low > high:  # no finite value at all
        return 0.0, 1.0
    if low >= 0.0 and high <= 1.0:
        return 0.0, 1.0
    if low >= 0.0 and high <= 255.0:
        return 0.0, 255.0
    return low, high


def _range_of_integers(values: np.ndarray) -> tuple[float, float]:
    if values.dtype.kind == "u" and values.dtype.itemsize <= 2:
        return 0.0, float(np.iinfo(values.dtype).max)
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high <= 255:
        return 0.0, 255.0
    if low >= 0 and high <= 65535:
        return 0.0, 65535.0
    return low, high


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Samples of any real dtype scaled to uint8 from their real range (see the module doc)."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * np.uint8(255)
    if values.dtype.kind == "f":
        low, high = _range_of_floats(values)
    elif values.dtype.kind in "ui":
        low, high = _range_of_integers(values)
    else:
        raise ValueError(f"unsupported sample type {values.dtype}")
    scale = np.float32(255.0 / ((high - low) or 1.0))
    out = np.empty(values.shape, dtype=np.uint8)
    for rows in _chunks(values):
        work = values[rows].astype(np.float32)  # a small working copy, then in place
        np.subtract(work, np.float32(low), out=work)
        np.multiply(work, scale, out=work)
        np.nan_to_num(work, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        np.clip(work, 0.0, 255.0, out=work)
        np.rint(work, out=work)
        out[rows] = work
    return out


def _alpha_to_uint8(alpha: np.ndarray) -> np.ndarray:
    """Alpha as uint8: floats by the 0..1 convention (else their maximum), NaN opaque."""
    if alpha.dtype.kind == "f":
        high = max(_finite_range(alpha)[1], 1.0)
        opaque = np.where(np.isnan(alpha), np.float32(high), alpha)
        return to_uint8(np.clip(opaque, 0.0, high) * np.float32(1.0 / high))
    return to_uint8(alpha)


def samples_to_rgb(samples: np.ndarray, min_is_white: bool = False) -> Image.Image:
    """(H, W) or (H, W, C) samples of any real dtype as an RGB image.

    C = 1: gray; 2: gray + alpha; 3: RGB; 4: RGBA; more: the first three are
    taken as RGB. `min_is_white` inverts gray (TIFF MinIsWhite).
    """
    if samples.ndim == 3 and samples.shape[2] == 1:
        samples = samples[:, :, 0]
    if samples.ndim == 2:
        gray = to_uint8(samples)
        if min_is_white:
            np.subtract(255, gray, out=gray)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if samples.ndim != 3 or samples.shape[2] < 2:
        raise ValueError(f"unsupported sample layout {samples.shape}")
    channels = samples.shape[2]
    if channels == 2:
        gray = to_uint8(samples[:, :, 0])
        alpha = _alpha_to_uint8(samples[:, :, 1])
        return composite_on_white(Image.fromarray(np.dstack((gray, alpha)), mode="LA"))
    rgb = to_uint8(samples[:, :, :3])
    if channels == 4:
        alpha = _alpha_to_uint8(samples[:, :, 3])
        return composite_on_white(Image.fromarray(np.dstack((rgb, alpha)), mode="RGBA"))
    return Image.fromarray(rgb, mode="RGB")


class TiffSamples:
    """The first page of a TIFF read with tifffile: size known before any pixel is read."""

    def __init__(self, data: bytes) -> None:
        import tifffile  # only for the TIFFs Pillow cannot open

        self._file = tifffile.TiffFile(io.BytesIO(data))
        if not self._file.pages:
            raise ValueError("TIFF has no pages")
        self._page = self._file.pages.first
        axes, shape = self._page.axes, self._page.shape
        if "X" not in axes or "Y" not in axes:
            raise ValueError(f"TIFF page has no image plane (axes {axes})")
        self.size = (int(shape[axes.index("X")]), int(shape[axes.index("Y")]))
        self.nbytes = int(np.prod(shape)) * self._page.dtype.itemsize
        self.orientation = self._tag(274)

    def _tag(self, code: int) -> int | None:
        tag = self._page.tags.get(code)
        value = tag.value if tag is not None else None
        return value if isinstance(value, int) else None

    def to_rgb(self) -> Image.Image:
        """Decode the page's samples to RGB (raises on compressions tifffile cannot decode)."""
        samples = self._page.asarray()
        axes = self._page.axes
        keep = [axis for axis in axes if axis in "YXS"]
        for axis in reversed(axes):  # drop leading axes (pages, depth) by taking index 0
            if axis not in "YXS":
                samples = np.take(samples, 0, axis=axes.index(axis))
        order = [keep.index(axis) for axis in "YXS" if axis in keep]
        samples = np.transpose(samples, order)
        photometric = int(self._page.photometric)
        if photometric not in (0, 1, 2):  # MinIsWhite, MinIsBlack, RGB
            raise ValueError(f"unsupported TIFF photometric interpretation {photometric}")
        return samples_to_rgb(samples, min_is_white=photometric == 0)

    def close(self) -> None:
        self._file.close()
