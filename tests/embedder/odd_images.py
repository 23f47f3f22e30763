"""Odd but valid images, generated here: each family stands for a kind of input that broke decoding.

Used by the Embedder's tests and as seeds of the fuzzers (fuzz/). Every
function returns encoded bytes; the picture is small so tests stay fast.

- EXIF blocks with tags of the wrong type (`exif_block`, `EXIF_FAMILY`);
- extreme aspect ratios (`STRIP_FAMILY`);
- large metadata: ICC profiles, text chunks, comments (`METADATA_FAMILY`);
- float and other high-range samples (`HIGH_RANGE_FAMILY`).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
import tifffile
from PIL import Image

ORIENTATION = 0x0112
# TIFF field types
ASCII, SHORT, LONG, RATIONAL, SRATIONAL, UNDEFINED = 2, 3, 4, 5, 10, 7


def exif_block(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """A raw EXIF block ("Exif\\0\\0" + little-endian TIFF IFD) with exactly these entries.

    Each entry is (tag, field type, count, payload bytes), written as given, so
    a tag can be stored with a type the standard does not allow for it.
    """
    first_ifd = 8
    data_start = first_ifd + 2 + 12 * len(entries) + 4
    table, extra = b"", b""
    for tag, kind, count, payload in entries:
        if len(payload) <= 4:
            table += struct.pack("<HHI", tag, kind, count) + payload.ljust(4, b"\0")
        else:
            table += struct.pack("<HHII", tag, kind, count, data_start + len(extra))
            extra += payload
    header = b"II*\x00" + struct.pack("<I", first_ifd) + struct.pack("<H", len(entries))
    return b"Exif\x00\x00" + header + table + b"\x00\x00\x00\x00" + extra


def upright_picture() -> Image.Image:
    """A small picture that is clearly not symmetric: red on the left, blue at the bottom."""
    pixels = np.zeros((96, 160, 3), dtype=np.uint8)
    pixels[:, :40] = (230, 20, 20)
    pixels[64:, 40:] = (20, 20, 230)
    pixels[:64, 40:] = (240, 240, 240)
    return Image.fromarray(pixels)


def stored_for_orientation_6(picture: Image.Image) -> Image.Image:
    """The pixels a camera stores for EXIF orientation 6 (rotate 90° clockwise to display)."""
    return picture.rotate(90, expand=True)


_O6 = (ORIENTATION, SHORT, 1, struct.pack("<H", 6))

# name -> EXIF entries; every one carries orientation 6 that must still be applied
# (except where the orientation itself is unreadable: then the pixels stay as stored).
EXIF_FAMILY: dict[str, list[tuple[int, int, int, bytes]]] = {
    "xresolution-ascii": [_O6, (282, ASCII, 3, b"72\0")],  # TypeError in Pillow
    "resolution-unit-ascii": [_O6, (296, ASCII, 2, b"2\0")],  # struct.error
    "ycbcr-positioning-ascii": [_O6, (0x0213, ASCII, 2, b"1\0")],  # struct.error
    "negative-srational": [_O6, (282, SRATIONAL, 1, struct.pack("<ii", -72, 0))],  # struct.error
    "rational-zero-denominator": [_O6, (283, RATIONAL, 1, struct.pack("<II", 72, 0))],
    "exif-ifd-out-of-range": [_O6, (0x8769, LONG, 1, struct.pack("<I", 99999))],
    "gps-ifd-ascii": [_O6, (0x8825, ASCII, 2, b"1\0")],
    "huge-count": [_O6, (270, ASCII, 0x7FFFFFFF, b"\0\0\0\0")],
    "unknown-type": [_O6, (283, 0, 1, b"\0\0\0\0")],
    "software-undefined": [_O6, (305, UNDEFINED, 6, b"\xff\xfe\x00\x01\x02\x03")],
}
UNREADABLE_ORIENTATION: dict[str, list[tuple[int, int, int, bytes]]] = {
    "orientation-ascii": [(ORIENTATION, ASCII, 2, b"6\0")],
    "orientation-out-of-range": [(ORIENTATION, SHORT, 1, struct.pack("<H", 99))],
}


def encode(image: Image.Image | np.ndarray, fmt: str, **options: object) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def jpeg_with_exif(picture: Image.Image, exif: bytes) -> bytes:
    return encode(picture, "JPEG", quality=95, exif=exif)


def png_with_exif(picture: Image.Image, exif: bytes) -> bytes:
    return encode(picture, "PNG", exif=exif)


def webp_with_exif(picture: Image.Image, exif: bytes) -> bytes:
    return encode(picture, "WEBP", quality=95, exif=exif)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_chunks(picture: Image.Image, *chunks: bytes) -> bytes:
    """A PNG of `picture` with extra chunks inserted right after IHDR."""
    plain = encode(picture, "PNG")
    after_ihdr = 8 + 12 + 13
    return plain[:after_ihdr] + b"".join(chunks) + plain[after_ihdr:]


def _noise(size: int, seed: int = 7) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def _icc(size: int) -> bytes:
    return b"\0\0\0\0" + b"lcms" + b"\x04\x30\0\0" + b"mntrRGB XYZ " + _noise(size - 24)


def _metadata_family() -> dict[str, Callable[[Image.Image], bytes]]:
    big_icc = _icc(1_500_000)
    return {
        "png-iccp-1.5mb": lambda p: encode(p, "PNG", icc_profile=big_icc),
        "png-iccp-bomb": lambda p: png_with_chunks(
            p, png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(b"\0" * 80_000_000, 9))
        ),
        "png-ztxt-8mb": lambda p: png_with_chunks(
            p, png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"a" * 8_000_000, 9))
        ),
        "png-itxt-compressed-4mb": lambda p: png_with_chunks(
            p,
            png_chunk(b"iTXt", b"Description\0\1\0en\0\0" + zlib.compress(b"b" * 4_000_000, 9)),
        ),
        "png-text-2mb": lambda p: png_with_chunks(
            p, png_chunk(b"tEXt", b"Comment\0" + b"c" * 2_000_000)
        ),
        "png-many-text-chunks": lambda p: png_with_chunks(
            p, *(png_chunk(b"tEXt", b"k%d\0v" % i) for i in range(3000))
        ),
        "jpeg-icc-3mb": lambda p: encode(p, "JPEG", quality=95, icc_profile=_icc(3_000_000)),
        "jpeg-comment-64kb": lambda p: encode(p, "JPEG", quality=95, comment=b"x" * 65_000),
        "webp-icc-exif-xmp": lambda p: encode(
            p,
            "WEBP",
            quality=95,
            icc_profile=big_icc,
            exif=b"Exif\0\0" + _noise(60_000),
            xmp=b"<x:xmpmeta>" + b"y" * 1_000_000 + b"</x:xmpmeta>",
        ),
        "tiff-icc-1.5mb": lambda p: encode(p, "TIFF", icc_profile=big_icc),
        "gif-comment-1mb": lambda p: encode(p.convert("P"), "GIF", comment=b"z" * 1_000_000),
    }


METADATA_FAMILY = _metadata_family()

# name -> (height, width); each is a valid image whose aspect ratio is extreme.
STRIP_FAMILY: dict[str, tuple[str, tuple[int, int]]] = {
    "png-1x8400000": ("PNG", (8_400_000, 1)),
    "png-8400000x1": ("PNG", (1, 8_400_000)),
    "png-1x5000": ("PNG", (5000, 1)),
    "png-3x200000-rgba": ("PNG", (3, 200_000)),
    "jpeg-1x65000": ("JPEG", (65_000, 1)),
    "gif-60000x2": ("GIF", (2, 60_000)),
    "bmp-1x100000": ("BMP", (100_000, 1)),
}


def strip_image(name: str) -> bytes:
    fmt, (height, width) = STRIP_FAMILY[name]
    mode = "RGBA" if name.endswith("rgba") else "L"
    ramp = (np.arange(height * width, dtype=np.uint32) % 251).astype(np.uint8)
    pixels = ramp.reshape(height, width)
    if mode == "RGBA":
        pixels = np.dstack([pixels, pixels, pixels, np.full_like(pixels, 200)])
    return encode(Image.fromarray(pixels, mode=mode), fmt)


def gray_ramp(height: int = 200, width: int = 240) -> np.ndarray:
    """A smooth float picture in [0, 1] (a diagonal ramp with a bright disc)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (x / width + y / height) / 2
    disc = ((x - width / 2) ** 2 + (y - height / 2) ** 2) < (min(height, width) / 4) ** 2
    return np.where(disc, 0.95, ramp * 0.8).astype(np.float32)


def tiff(samples: np.ndarray, **options: object) -> bytes:
    """Samples written as a TIFF by tifffile, whatever their type and channel count."""
    buffer = io.BytesIO()
    photometric = "rgb" if samples.ndim == 3 and samples.shape[2] in (3, 4) else "minisblack"
    extrasamples = ("unassalpha",) if samples.ndim == 3 and samples.shape[2] in (2, 4) else None
    tifffile.imwrite(
        buffer,
        samples,
        photometric=photometric,
        extrasamples=extrasamples,
        **options,  # type: ignore[arg-type]
    )
    return buffer.getvalue()


def _with_non_finite(values: np.ndarray) -> np.ndarray:
    spoiled = values.copy()
    spoiled[::17, ::13] = np.nan
    spoiled[5, :] = np.inf
    spoiled[7, :] = -np.inf
    return spoiled


def _high_range_family() -> dict[str, Callable[[np.ndarray], bytes]]:
    """name -> encoder of a [0, 1] float gray picture in that sample type."""

    def rgb(values: np.ndarray) -> np.ndarray:
        return np.dstack([values, values, values])

    return {
        "tiff-float32-gray": lambda v: encode(Image.fromarray(v, mode="F"), "TIFF"),
        "tiff-float32-gray-0-255": lambda v: encode(Image.fromarray(v * 255, mode="F"), "TIFF"),
        "tiff-float32-non-finite": lambda v: encode(
            Image.fromarray(_with_non_finite(v), mode="F"), "TIFF"
        ),
        "tiff-float32-rgb": lambda v: tiff(rgb(v)),
        "tiff-float32-rgba": lambda v: tiff(np.dstack([rgb(v), np.ones_like(v)])),
        "tiff-float64-rgb-deflate": lambda v: tiff(rgb(v).astype(np.float64), compression="zlib"),
        "tiff-float16-gray": lambda v: tiff(v.astype(np.float16)),
        "tiff-uint16-gray": lambda v: tiff((v * 65535).astype(np.uint16)),
        "tiff-uint16-rgb": lambda v: tiff((rgb(v) * 65535).astype(np.uint16)),
        "tiff-uint16-gray-alpha": lambda v: tiff(
            np.dstack([(v * 65535).astype(np.uint16), np.full(v.shape, 65535, np.uint16)])
        ),
        "tiff-int32-gray": lambda v: tiff((v * 65535).astype(np.int32)),
        "tiff-uint32-gray": lambda v: tiff((v * 4_000_000_000).astype(np.uint32)),
        "tiff-int16-signed": lambda v: tiff((v * 60000 - 30000).astype(np.int16)),
        "png-16bit-gray": lambda v: encode(Image.fromarray((v * 65535).astype(np.uint16)), "PNG"),
    }


HIGH_RANGE_FAMILY = _high_range_family()
