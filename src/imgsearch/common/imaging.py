"""Decoding untrusted encoded images into upright RGB pictures, with strict input checks.

Shared by every service that reads image bytes: the Embedder (model input) and
Search (stored thumbnails). Every rejection is an `InvalidArgumentError` whose
message starts with `where` (e.g. `images[3]`), so callers can say which image
of a request was refused. Whatever an input makes the decoders raise (Pillow's
plugins raise `struct.error`, `TypeError`, `IndexError`... on malformed files)
is that image's INVALID_ARGUMENT, never an internal error; only `MemoryError`
passes through (the server is short of memory, RESOURCE_EXHAUSTED).

What is decoded, and how:
- formats: JPEG (and MPO), PNG, WebP, GIF (first frame), BMP, TIFF (first page);
- the header is checked against `max_image_pixels` before any pixel is decoded;
- EXIF orientation is applied when it can be read; a broken EXIF block (tags
  of the wrong type, bad offsets) is ignored, never an error;
- metadata is ignored, consistently for every format: ICC profiles are not
  applied, and a PNG's text and ICC chunks (tEXt, zTXt, iTXt, iCCP) are dropped
  before Pillow parses it, so their size never matters;
- 16-bit, 32-bit and float samples are scaled from their real range
  (`imgsearch.common.image_samples`); transparency is composited on white;
- with `max_aspect_ratio`, an image more elongated than that is cropped to its
  centre part of that ratio before any further work, which bounds the work and
  memory of a resize that scales the shorter side (a 1 x 8,400,000 strip).

Runs in worker threads: Pillow releases the GIL while decoding and resizing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from imgsearch.common.errors import InvalidArgumentError
from imgsearch.common.image_samples import TiffSamples, composite_on_white, samples_to_rgb

_log = logging.getLogger(__name__)
T = TypeVar("T")

# Formats we promise to accept; Pillow is not even asked to try the others.
ACCEPTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF")
ACCEPTED_FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP, TIFF"
_HIGH_RANGE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# EXIF orientation -> the transpose that makes the picture upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_METADATA_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt", b"iCCP"})
# An uncompressed XMP packet may carry the orientation; kept when this small.
_PNG_XMP_PREFIX = b"XML:com.adobe.xmp\x00\x00"
_PNG_XMP_MAX_BYTES = 1024 * 1024
# Samples read by tifffile may take this many bytes per pixel of the limit.
_TIFF_BYTES_PER_PIXEL = 4


def configure_pillow(max_image_pixels: int) -> None:
    """Process-wide Pillow policy: decompression bombs are errors, metadata warnings muted.

    Called once from a server's start-up (never at import). Pillow warns above
    MAX_IMAGE_PIXELS and raises above twice that; decoding also checks each
    image's header against the limit before decoding it. Pillow's UserWarnings
    about malformed metadata in untrusted files ("Corrupt EXIF data") say
    nothing an operator can act on, so they are not printed.
    """
    Image.MAX_IMAGE_PIXELS = max_image_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


class PixelBudget:
    """Bounds the pixels being decoded at once across decode threads (thread-safe, FIFO).

    An image holds its pixel count (width x height once decoded) from the start
    of its decoding until its caller is done with the picture; when the budget
    cannot take it, its thread waits for others to finish. An image larger than
    the whole budget goes alone.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._condition = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def _fits(self, ticket: int, pixels: int) -> bool:
        return ticket == self._serving and (self.in_use == 0 or self.in_use + pixels <= self.limit)

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        with self._condition:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._condition.wait_for(lambda: self._fits(ticket, pixels))
            self._serving += 1
            self.in_use += pixels
            self._condition.notify_all()
        try:
            yield
        finally:
            with self._condition:
                self.in_use -= pixels
                self._condition.notify_all()


@dataclass(frozen=True)
class DecodeLimits:
    """How far decoding one untrusted image may go."""

    max_image_pixels: int
    # For JPEG: decode at a reduced DCT scale while both sides stay >= this.
    draft_size: int | None = None
    # Longer side / shorter side kept; a more elongated image is centre-cropped to it.
    max_aspect_ratio: float | None = None
    budget: PixelBudget | None = None


def decode_rgb(
    data: bytes, where: str, max_image_pixels: int, draft_size: int | None = None
) -> Image.Image:
    """Decode `data` into an upright RGB Pillow image.

    `draft_size`: for JPEG, let libjpeg decode at a reduced scale (DCT scaling)
    as long as both sides stay at least this many pixels; several times faster
    on camera-sized photos when a small result is all that is needed.

    Raises InvalidArgumentError (message prefixed with `where`) for empty,
    undecodable, truncated, unsupported or oversized images.
    """
    limits = DecodeLimits(max_image_pixels, draft_size=draft_size)
    return decode_then(data, where, limits, lambda image: image)


def decode_then(
    data: bytes, where: str, limits: DecodeLimits, finish: Callable[[Image.Image], T]
) -> T:
    """Decode `data` into an upright RGB image and return `finish(image)`.

    `finish` (e.g. the model's resize and crop) runs within the image's pixel
    budget, and whatever it raises for this picture is the image's own
    InvalidArgumentError too. Raises InvalidArgumentError (prefixed with
    `where`) for empty, undecodable, truncated, unsupported or oversized images.
    """
    if not data:
        raise InvalidArgumentError(f"{where}: empty image bytes")
    with _input_errors(where, "cannot read image header", limits.max_image_pixels):
        source = _open(_without_png_metadata(data), where, limits)
    width, height = source.size
    budget = limits.budget.hold(width * height) if limits.budget else contextlib.nullcontext()
    with budget:
        with _input_errors(where, "corrupt or truncated image", limits.max_image_pixels):
            image = source.decode()
        with _input_errors(where, "cannot process image", limits.max_image_pixels):
            return finish(image)


@contextlib.contextmanager
def _input_errors(where: str, what: str, max_image_pixels: int) -> Iterator[None]:
    """Turn whatever decoding one input raises into that input's InvalidArgumentError."""
    try:
        yield
    except (InvalidArgumentError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own text quotes its limit (twice ours, for the error): name only ours.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{found.group(1)} pixels" if found else "the image"
        raise InvalidArgumentError(
            f"{where}: {size} exceeds the limit of {max_image_pixels} pixels"
        ) from None
    except Exception as exc:  # noqa: BLE001 -- malformed input makes decoders raise anything
        if not isinstance(exc, OSError | ValueError | SyntaxError | EOFError):
            _log.debug("decoder raised %s for %s", type(exc).__name__, where, exc_info=True)
        detail = str(exc) or "no detail"
        raise InvalidArgumentError(f"{where}: {what}: {type(exc).__name__}: {detail}") from None


def _guess_format(prefix: bytes) -> str | None:
    """The format whose signature `prefix` matches, among all Pillow knows (no parsing)."""
    for name, (_, accept) in Image.OPEN.items():
        with contextlib.suppress(Exception):
            if accept is not None and accept(prefix):
                return name
    return None


class _PillowSource:
    """An opened (not yet decoded) Pillow image that passed the header checks."""

    def __init__(self, image: Image.Image, limits: DecodeLimits) -> None:
        if image.format == "JPEG" and limits.draft_size is not None:
            image.draft("RGB", (limits.draft_size, limits.draft_size))
        self._image = image
        self._limits = limits
        self.size = image.size

    def decode(self) -> Image.Image:
        image = self._image
        image.load()
        unsigned = _is_uint32_tiff(image)
        image = _crop_to_aspect_ratio(_upright(image, _orientation(image)), self._limits)
        return _to_rgb(image, unsigned)


class _TiffSource:
    """A TIFF that Pillow cannot open (float RGB, float16/64...), read with tifffile."""

    def __init__(self, samples: TiffSamples, limits: DecodeLimits) -> None:
        self._samples = samples
        self._limits = limits
        self.size = samples.size

    def decode(self) -> Image.Image:
        try:
            image = self._samples.to_rgb()
        finally:
            self._samples.close()
        return _crop_to_aspect_ratio(_upright(image, self._samples.orientation), self._limits)


def _open(data: bytes, where: str, limits: DecodeLimits) -> _PillowSource | _TiffSource:
    Image.init()  # registers every plugin once
    # MPO has no opener of its own in recent Pillow: the JPEG one returns it.
    openers = [name for name in ACCEPTED_FORMATS if name in Image.OPEN]
    try:
        image = Image.open(io.BytesIO(data), formats=openers)
    except UnidentifiedImageError:
        if data.startswith(_TIFF_MAGICS):
            return _open_tiff_samples(data, where, limits)
        guessed = _guess_format(data[:64])
        if guessed is not None and guessed not in ACCEPTED_FORMATS:
            raise InvalidArgumentError(
                f"{where}: unsupported image format {guessed} (accepted: {ACCEPTED_FORMAT_NAMES})"
            ) from None
        raise InvalidArgumentError(
            f"{where}: not a decodable image ({len(data)} bytes; accepted formats: "
            f"{ACCEPTED_FORMAT_NAMES})"
        ) from None
    _check_size(image.size, where, limits.max_image_pixels)
    return _PillowSource(image, limits)


def _open_tiff_samples(data: bytes, where: str, limits: DecodeLimits) -> _TiffSource:
    samples = TiffSamples(data)
    _check_size(samples.size, where, limits.max_image_pixels)
    most = limits.max_image_pixels * _TIFF_BYTES_PER_PIXEL
    if samples.nbytes > most:
        samples.close()
        raise InvalidArgumentError(
            f"{where}: TIFF samples take {samples.nbytes} bytes decoded, over the limit of"
            f" {most} bytes ({_TIFF_BYTES_PER_PIXEL} bytes x the pixel limit)"
        )
    return _TiffSource(samples, limits)


def _check_size(size: tuple[int, int], where: str, max_image_pixels: int) -> None:
    width, height = size
    if width * height > max_image_pixels:
        raise InvalidArgumentError(
            f"{where}: {width}x{height} = {width * height} pixels exceeds the limit "
            f"of {max_image_pixels} pixels"
        )
    if width < 1 or height < 1:
        raise InvalidArgumentError(f"{where}: image has no pixels ({width}x{height})")


def _without_png_metadata(data: bytes) -> bytes:
    """A PNG without its text and ICC chunks (which we ignore); other data unchanged.

    Pillow refuses a PNG whose iCCP or zTXt chunk inflates beyond
    PngImagePlugin.MAX_TEXT_CHUNK (1 MB), a valid file with a large profile
    included. Chunks are copied verbatim (their CRCs stay valid); a chunk
    stream that does not parse is left for Pillow to judge.
    """
    if not data.startswith(_PNG_SIGNATURE):
        return data
    view = memoryview(data)
    kept: list[memoryview] = [view[:8]]
    position, dropped = 8, False
    while position + 12 <= len(data):
        length = int.from_bytes(view[position : position + 4], "big")
        kind = bytes(view[position + 4 : position + 8])
        end = position + 12 + length
        if end > len(data):
            break
        body = view[position + 8 : position + 8 + length]
        if kind in _PNG_METADATA_CHUNKS and not _is_small_xmp(kind, body):
            dropped = True
        else:
            kept.append(view[position:end])
        position = end
        if kind == b"IEND":
            break
    if not dropped:
        return data
    kept.append(view[position:])
    return b"".join(kept)


def _is_small_xmp(kind: bytes, body: memoryview) -> bool:
    return (
        kind == b"iTXt"
        and len(body) <= _PNG_XMP_MAX_BYTES
        and bytes(body[: len(_PNG_XMP_PREFIX)]) == _PNG_XMP_PREFIX
    )


def _orientation(image: Image.Image) -> int | None:
    """The EXIF orientation (1-8), or None when absent, unreadable or out of range."""
    try:
        value = image.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 -- a broken EXIF block is ignored, not an error
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _upright(image: Image.Image, orientation: int | None) -> Image.Image:
    """Apply the EXIF orientation to the pixels; the metadata itself is left alone.

    Pillow's `ImageOps.exif_transpose` also rewrites the EXIF block, which raises
    when any tag has the wrong type (XResolution stored as ASCII); only the
    pixels matter here.
    """
    method = _UPRIGHT.get(orientation or 1)
    return image if method is None else image.transpose(method)


def _crop_to_aspect_ratio(image: Image.Image, limits: DecodeLimits) -> Image.Image:
    """Centre-crop the longer side to `max_aspect_ratio` x the shorter one, when longer."""
    ratio = limits.max_aspect_ratio
    if ratio is None:
        return image
    width, height = image.size
    short, long = min(width, height), max(width, height)
    keep = max(1, int(short * ratio))
    if long <= keep:
        return image
    start = (long - keep) // 2
    box = (start, 0, start + keep, height) if width > height else (0, start, width, start + keep)
    return image.crop(box)


def _is_uint32_tiff(image: Image.Image) -> bool:
    """Unsigned 32-bit TIFF samples, which Pillow reads into mode I as if signed."""
    tags = getattr(image, "tag_v2", None)
    if image.format != "TIFF" or image.mode != "I" or tags is None:
        return False
    bits, sample_format = tags.get(258), tags.get(339, 1)
    bits = bits[0] if isinstance(bits, tuple) and bits else bits
    sample_format = sample_format[0] if isinstance(sample_format, tuple) else sample_format
    return bits == 32 and sample_format == 1


def _to_rgb(image: Image.Image, unsigned32: bool = False) -> Image.Image:
    mode = image.mode
    if mode in _HIGH_RANGE_MODES:
        samples = np.asarray(image)
        return samples_to_rgb(samples.view(np.uint32) if unsigned32 else samples)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in _ALPHA_MODES:
        # Transparent pixels have arbitrary colours: composite them onto white.
        return composite_on_white(image)
    if mode != "RGB":
        return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    return image
