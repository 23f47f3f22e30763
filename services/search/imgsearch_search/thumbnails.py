"""Thumbnails that Search makes of every image at Insert, so results can be shown anywhere.

Where they live: in the Milvus collection itself, beside each item's vector,
as the base64 text of a small WebP (or JPEG) in the VARCHAR field `thumbnail`
(schema 2; Milvus 2.3 has no binary scalar type, and a VARCHAR holds at most
65,535 bytes, so the encoded thumbnail is capped well below 48 KiB). Nothing
outside Milvus is needed to show a result: not the original file, not a
shared disk, on a laptop as on Kubernetes.

What they cost (measured on the sample photos, docs/web.md): about 4 to
12 KiB of WebP per photo at 256 px (a third more as base64 text in Milvus,
which holds loaded scalar fields in memory), and a few milliseconds of CPU per
image on a worker thread; JPEG is decoded at a reduced scale (libjpeg DCT
scaling) first, so camera-sized photos cost little more than small ones.

The decoding is `imgsearch.common.imaging.decode_rgb`, the Embedder's own, so
an image the Embedder accepted is decodable here too; the work runs on a
bounded pool of threads (Pillow releases the GIL while decoding, resizing and
encoding), never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image

from imgsearch.common.errors import InvalidArgumentError
from imgsearch.common.imaging import decode_rgb

# Longest encoded thumbnail whose base64 text fits in a Milvus VARCHAR (65,535 bytes).
MAX_STORED_BYTES = 49_000
MIME_TYPES = {"WEBP": "image/webp", "JPEG": "image/jpeg"}
_SMALLEST_SIDE = 32
_QUALITY_STEP = 15
_LOWEST_QUALITY = 30


@dataclass(frozen=True)
class ThumbnailSpec:
    """How thumbnails are made: format, size and byte bounds, decoding limit."""

    max_side: int = 256
    max_bytes: int = 24 * 1024
    image_format: str = "WEBP"  # a key of MIME_TYPES
    quality: int = 80
    max_image_pixels: int = 40_000_000


def mime_type(data: bytes) -> str:
    """Media type of an encoded thumbnail, from its first bytes ("" when unknown or empty)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    return ""


def to_stored(data: bytes) -> str:
    """The text stored in Milvus for an encoded thumbnail (base64; "" for none)."""
    return base64.b64encode(data).decode("ascii")


def from_stored(text: str | None) -> bytes:
    """The encoded thumbnail from its stored text; b"" when absent or unreadable."""
    if not text:
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _encode(image: Image.Image, spec: ThumbnailSpec, quality: int) -> bytes:
    buffer = io.BytesIO()
    if spec.image_format == "WEBP":
        image.save(buffer, format="WEBP", quality=quality, method=4)
    else:
        image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def make_thumbnail(data: bytes, spec: ThumbnailSpec) -> bytes:
    """Encode a thumbnail of `data` within `spec`'s side and byte bounds.

    Images smaller than `max_side` keep their size (a browser scales them up).
    When the first encoding is over `max_bytes`, lower qualities and then
    smaller sides are tried. Raises InvalidArgumentError when the image cannot
    be decoded or no encoding fits.
    """
    image = decode_rgb(data, "image", spec.max_image_pixels, draft_size=spec.max_side)
    image.thumbnail((spec.max_side, spec.max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    while True:
        quality = spec.quality
        while True:
            encoded = _encode(image, spec, quality)
            if len(encoded) <= spec.max_bytes:
                return encoded
            if quality <= _LOWEST_QUALITY:
                break
            quality = max(_LOWEST_QUALITY, quality - _QUALITY_STEP)
        side = max(image.size) * 3 // 4
        if side < _SMALLEST_SIDE:
            raise InvalidArgumentError(f"image: no thumbnail of it fits in {spec.max_bytes} bytes")
        image.thumbnail((side, side), Image.Resampling.LANCZOS)


class ThumbnailMaker:
    """Makes thumbnails on a bounded pool of worker threads (or none, when not `enabled`)."""

    def __init__(self, spec: ThumbnailSpec, workers: int, *, enabled: bool = True) -> None:
        self.spec = spec
        self.enabled = enabled
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="thumbnail")

    async def make_each(self, images: Sequence[bytes]) -> list[bytes | InvalidArgumentError]:
        """One result per image, in order: the encoded thumbnail, or why none could be made.

        When thumbnails are turned off, b"" for each: stored as no thumbnail, and
        no warning (the operator chose it; nothing failed).
        """
        if not self.enabled:
            return [b""] * len(images)
        loop = asyncio.get_running_loop()

        async def one(data: bytes) -> bytes | InvalidArgumentError:
            try:
                return await loop.run_in_executor(self._executor, make_thumbnail, data, self.spec)
            except InvalidArgumentError as error:
                return error
            except (OSError, ValueError) as error:  # an encoder failure, not the input's fault
                return InvalidArgumentError(f"image: cannot encode a thumbnail: {error}")

        return list(await asyncio.gather(*(one(data) for data in images)))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
