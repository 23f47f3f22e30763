"""Odd but valid images decode like their plain versions; a decoder's failure is the image's own.

Each family (tests/embedder/odd_images.py) stands for a kind of input that once
failed: EXIF tags of the wrong type, extreme aspect ratios, large metadata,
float and high-range samples.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from PIL import Image

from imgsearch.common.errors import InvalidArgumentError
from imgsearch.common.imaging import DecodeLimits, PixelBudget, decode_then
from imgsearch_embedder.preprocess import Preprocessor, configure_pillow
from tests.embedder import odd_images
from tests.embedder.odd_images import (
    EXIF_FAMILY,
    HIGH_RANGE_FAMILY,
    METADATA_FAMILY,
    STRIP_FAMILY,
    UNREADABLE_ORIENTATION,
)

PRE = Preprocessor(
    input_size=224, resize_size=256, max_image_pixels=40_000_000, max_aspect_ratio=8.0
)


@pytest.fixture(autouse=True)
def _pillow_policy() -> None:
    configure_pillow(PRE.max_image_pixels)


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


EXIF_CARRIERS = {
    "jpeg": odd_images.jpeg_with_exif,
    "png": odd_images.png_with_exif,
    "webp": odd_images.webp_with_exif,
}


@pytest.mark.parametrize("carrier", sorted(EXIF_CARRIERS))
@pytest.mark.parametrize("case", sorted(EXIF_FAMILY))
def test_exif_with_tags_of_the_wrong_type_is_ignored_and_orientation_applied(
    case: str, carrier: str
) -> None:
    picture = odd_images.upright_picture()
    stored = odd_images.stored_for_orientation_6(picture)
    data = EXIF_CARRIERS[carrier](stored, odd_images.exif_block(EXIF_FAMILY[case]))
    upright = PRE(odd_images.encode(picture, "PNG"), 0)
    sideways = PRE(odd_images.encode(stored, "PNG"), 0)
    decoded = PRE(data, 0)
    assert _difference(decoded, upright) < 8, "orientation 6 not applied"
    assert _difference(decoded, sideways) > 40


@pytest.mark.parametrize("case", sorted(UNREADABLE_ORIENTATION))
def test_an_unreadable_orientation_leaves_the_pixels_as_stored(case: str) -> None:
    stored = odd_images.stored_for_orientation_6(odd_images.upright_picture())
    data = odd_images.jpeg_with_exif(stored, odd_images.exif_block(UNREADABLE_ORIENTATION[case]))
    assert _difference(PRE(data, 0), PRE(odd_images.encode(stored, "PNG"), 0)) < 8


@pytest.mark.parametrize(
    "garbage",
    [b"Exif\0\0", b"Exif\0\0II*\0\xff\xff\xff\xff", b"Exif\0\0MM\0*" + b"\xff" * 60, b"\0" * 40],
    ids=["empty-tiff", "bad-ifd-offset", "big-endian-garbage", "zeros"],
)
def test_a_garbage_exif_block_is_ignored(garbage: bytes) -> None:
    picture = odd_images.upright_picture()
    data = odd_images.jpeg_with_exif(picture, garbage)
    assert _difference(PRE(data, 0), PRE(odd_images.encode(picture, "PNG"), 0)) < 8


@pytest.mark.parametrize("case", sorted(STRIP_FAMILY))
def test_extreme_aspect_ratios_are_cropped_to_the_stated_ratio_before_any_resize(
    case: str,
) -> None:
    seen: list[tuple[int, int]] = []

    def finish(image: Image.Image) -> np.ndarray:
        seen.append(image.size)
        return PRE._resize_and_crop(image)

    limits = DecodeLimits(40_000_000, draft_size=256, max_aspect_ratio=8.0)
    result = decode_then(odd_images.strip_image(case), "images[0]", limits, finish)
    assert result.shape == (224, 224, 3)
    ((width, height),) = seen
    assert max(width, height) <= 8 * min(width, height)
    assert PRE(odd_images.strip_image(case), 0).shape == (224, 224, 3)


def test_the_aspect_crop_keeps_the_centre() -> None:
    pixels = np.zeros((10, 1000), dtype=np.uint8)
    pixels[:, 480:520] = 255  # a white band in the middle
    seen: list[np.ndarray] = []
    limits = DecodeLimits(40_000_000, max_aspect_ratio=8.0)
    decode_then(odd_images.encode(pixels, "PNG"), "x", limits, lambda i: seen.append(np.asarray(i)))
    assert seen[0].shape == (10, 80, 3)
    assert seen[0][:, 20:60].min() == 255
    assert seen[0][:, :20].max() == 0


@pytest.mark.parametrize("case", sorted(METADATA_FAMILY))
def test_large_metadata_is_ignored_consistently(case: str) -> None:
    picture = odd_images.upright_picture()
    data = METADATA_FAMILY[case](picture)
    plain = picture.convert("P") if case.startswith("gif") else picture  # GIF has a palette
    assert _difference(PRE(data, 0), PRE(odd_images.encode(plain, "PNG"), 0)) < 6


def test_png_orientation_in_a_small_xmp_packet_survives_the_metadata_stripping() -> None:
    picture = odd_images.upright_picture()
    stored = odd_images.stored_for_orientation_6(picture)
    xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    chunk = odd_images.png_chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + xmp)
    data = odd_images.png_with_chunks(stored, chunk)
    upright = PRE(odd_images.encode(picture, "PNG"), 0)
    assert _difference(PRE(data, 0), upright) < 8


def _eight_bit(values: np.ndarray, stretch: bool) -> bytes:
    if stretch:
        values = (values - values.min()) / (values.max() - values.min())
    return odd_images.encode(Image.fromarray(np.rint(values * 255).astype(np.uint8)), "PNG")


@pytest.mark.parametrize("case", sorted(HIGH_RANGE_FAMILY))
def test_high_range_samples_decode_like_their_8_bit_version(case: str) -> None:
    values = odd_images.gray_ramp()
    stretch = case in ("tiff-int16-signed", "tiff-uint32-gray")  # outside 0..65535: own range
    decoded = PRE(HIGH_RANGE_FAMILY[case](values), 0)
    reference = PRE(_eight_bit(values, stretch), 0)
    assert decoded.max() > 200, "came out dark"
    assert _difference(decoded, reference) < 3


def test_non_finite_floats_are_handled() -> None:
    values = odd_images.gray_ramp(64, 64)
    values[10:20] = np.nan
    values[30:40] = np.inf
    values[50:60] = -np.inf
    decoded = PRE(odd_images.encode(Image.fromarray(values, mode="F"), "TIFF"), 0)
    assert decoded.max() == 255  # +inf is the top of the range
    everything_nan = np.full((32, 32), np.nan, dtype=np.float32)
    assert PRE(odd_images.encode(Image.fromarray(everything_nan, mode="F"), "TIFF"), 0).max() == 0


@pytest.mark.parametrize(
    "data",
    [
        odd_images.tiff(np.zeros((8, 8, 3), np.float32), compression="lzma")[:60],
        odd_images.tiff(np.zeros((40, 50, 3), np.float32))[:-300],
        odd_images.tiff(np.zeros((4, 4, 7), np.complex64)),
        odd_images.png_with_chunks(
            odd_images.upright_picture(), odd_images.png_chunk(b"IHDR", b"\xff" * 13)
        ),
        b"II*\x00" + struct.pack("<I", 8) + b"\xff" * 200,
        b"GIF89a" + b"\xff" * 30,
        odd_images.encode(Image.new("RGB", (8, 8)), "JPEG")[:-200],
    ],
    ids=[
        "tiff-cut-in-header",
        "float-tiff-truncated",
        "complex-samples",
        "png-second-ihdr",
        "tiff-garbage-ifd",
        "gif-garbage",
        "jpeg-truncated-header",
    ],
)
def test_what_a_decoder_cannot_handle_is_the_images_own_invalid_argument(data: bytes) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^images\[5\]: "):
        PRE(data, 5)


def test_tiff_samples_beyond_the_byte_limit_are_refused_before_decoding() -> None:
    pre = Preprocessor(224, 256, max_image_pixels=100_000)
    data = odd_images.tiff(np.zeros((150, 200, 3), np.float64))  # 30,000 px, 720 kB
    with pytest.raises(InvalidArgumentError, match="over the limit of 400000 bytes"):
        pre(data, 0)


def test_the_pixel_budget_lets_one_oversized_image_through_alone_and_in_order() -> None:
    budget = PixelBudget(100)
    with budget.hold(500):  # larger than the whole budget: alone
        assert budget.in_use == 500
    with budget.hold(60), budget.hold(40):
        assert budget.in_use == 100
    assert budget.in_use == 0


def test_decoding_holds_the_budget_until_the_caller_is_done() -> None:
    budget = PixelBudget(10_000_000)
    inside: list[int] = []
    limits = DecodeLimits(40_000_000, budget=budget)
    data = odd_images.encode(Image.new("RGB", (300, 200)), "PNG")
    decode_then(data, "x", limits, lambda image: inside.append(budget.in_use))
    assert inside == [60_000]
    assert budget.in_use == 0


def test_icc_is_ignored_in_every_format_alike() -> None:
    picture = odd_images.upright_picture()
    srgb_like = odd_images._icc(4000)
    outputs = [
        PRE(odd_images.encode(picture, fmt, icc_profile=srgb_like), 0)
        for fmt in ("PNG", "TIFF", "WEBP")
    ] + [PRE(odd_images.encode(picture, "JPEG", quality=98, icc_profile=srgb_like), 0)]
    for output in outputs[1:]:
        assert _difference(output, outputs[0]) < 4


def test_png_stripping_keeps_a_chunk_stream_it_cannot_parse_for_pillow_to_judge() -> None:
    plain = odd_images.encode(odd_images.upright_picture(), "PNG")
    lying = plain[:8] + struct.pack(">I", 10**9) + plain[12:]
    with pytest.raises(InvalidArgumentError, match=r"^images\[0\]"):
        PRE(lying, 0)
