"""Seed inputs of the fuzzers: every accepted format and mode, and each odd family that failed.

The families come from tests/embedder/odd_images.py (EXIF tags of the wrong
type, extreme aspect ratios, large metadata, float and high-range samples),
scaled down so that each seed fits the fuzzers' `-max_len`.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tests.embedder import odd_images

MAX_LEN = 262_144


def _formats(picture: Image.Image) -> dict[str, bytes]:
    encode = odd_images.encode
    gray16 = np.asarray(picture.convert("L"), dtype=np.uint16) * 257
    rgba = picture.convert("RGBA")
    return {
        "jpeg": encode(picture, "JPEG", quality=90),
        "jpeg-progressive": encode(picture, "JPEG", progressive=True),
        "jpeg-cmyk": encode(picture.convert("CMYK"), "JPEG"),
        "jpeg-gray": encode(picture.convert("L"), "JPEG"),
        "mpo": encode(picture, "MPO", save_all=True, append_images=[picture]),
        "png": encode(picture, "PNG"),
        "png-16bit": encode(Image.fromarray(gray16), "PNG"),
        "png-palette-transparent": encode(picture.convert("P"), "PNG", transparency=0),
        "png-rgba": encode(rgba, "PNG"),
        "apng": encode(picture, "PNG", save_all=True, append_images=[rgba]),
        "webp": encode(picture, "WEBP"),
        "webp-lossless-alpha": encode(rgba, "WEBP", lossless=True),
        "gif": encode(picture.convert("P"), "GIF"),
        "gif-animated": encode(picture.convert("P"), "GIF", save_all=True, append_images=[rgba]),
        "bmp": encode(picture, "BMP"),
        "tiff": encode(picture, "TIFF"),
        "tiff-deflate": encode(picture, "TIFF", compression="tiff_adobe_deflate"),
        "tiff-multipage": encode(picture, "TIFF", save_all=True, append_images=[rgba]),
    }


def _exif(picture: Image.Image) -> dict[str, bytes]:
    stored = odd_images.stored_for_orientation_6(picture)
    seeds = {}
    families = {**odd_images.EXIF_FAMILY, **odd_images.UNREADABLE_ORIENTATION}
    for name, entries in families.items():
        block = odd_images.exif_block(entries)
        seeds[f"exif-{name}-jpeg"] = odd_images.jpeg_with_exif(stored, block)
        seeds[f"exif-{name}-png"] = odd_images.png_with_exif(stored, block)
    return seeds


def _metadata(picture: Image.Image) -> dict[str, bytes]:
    compressible_icc = b"\0" * 1_500_000  # inflates past Pillow's 1 MB text-chunk limit
    seeds = {
        "png-iccp-compressible-1.5mb": odd_images.png_with_chunks(
            picture, odd_images.png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(compressible_icc, 9))
        ),
        "jpeg-icc-200kb": odd_images.encode(picture, "JPEG", icc_profile=b"\1" * 200_000),
    }
    for name, make in odd_images.METADATA_FAMILY.items():
        if name in ("png-ztxt-8mb", "png-itxt-compressed-4mb", "png-iccp-bomb"):
            seeds[name] = make(picture)
    return seeds


def _high_range() -> dict[str, bytes]:
    values = odd_images.gray_ramp(24, 32)
    return {name: make(values) for name, make in odd_images.HIGH_RANGE_FAMILY.items()}


def _strips() -> dict[str, bytes]:
    return {name: odd_images.strip_image(name) for name in odd_images.STRIP_FAMILY}


def decode_seeds(max_len: int = MAX_LEN) -> dict[str, bytes]:
    """Name -> encoded image, each at most `max_len` bytes."""
    picture = odd_images.upright_picture().resize((64, 40))
    seeds = {
        **_formats(picture),
        **_exif(picture),
        **_metadata(picture),
        **_high_range(),
        **_strips(),
        "truncated-jpeg": odd_images.encode(picture, "JPEG")[:300],
        "empty": b"",
    }
    return {name: data for name, data in seeds.items() if len(data) <= max_len}


def write_corpus(directory: Path, seeds: dict[str, bytes]) -> Path:
    """Write each seed as a file of `directory` (created); returns the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (directory / f"seed-{name}").write_bytes(data)
    return directory
