"""Decoding every accepted format, EXIF orientation, odd pixel modes, and bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imgsearch.common.errors import InvalidArgumentError
from imgsearch_embedder.preprocess import Preprocessor, configure_pillow
from tests.embedder.images import encode, jpeg, photo

PRE = Preprocessor(input_size=224, resize_size=256, max_image_pixels=4_000_000)


@pytest.fixture(autouse=True, scope="module")
def _pillow_policy() -> None:
    configure_pillow(PRE.max_image_pixels)


def _similar(a: np.ndarray, b: np.ndarray, tolerance: float = 12.0) -> bool:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()) < tolerance


def _variants() -> dict[str, bytes]:
    cat = Image.fromarray(photo("chelsea"))
    rgba = cat.convert("RGBA")
    return {
        "jpeg-baseline": encode(cat, "JPEG", quality=90),
        "jpeg-progressive": encode(cat, "JPEG", quality=90, progressive=True),
        "jpeg-grayscale": encode(cat.convert("L"), "JPEG"),
        "jpeg-cmyk": encode(cat.convert("CMYK"), "JPEG"),
        "png-8bit": encode(cat, "PNG"),
        "png-16bit-gray": encode(
            Image.fromarray(np.asarray(cat.convert("L"), dtype=np.uint16) * 257),
            "PNG",
        ),
        "png-palette": encode(cat.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "png-alpha": encode(rgba, "PNG"),
        "webp": encode(cat, "WEBP", quality=90),
        "gif": encode(cat.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
        "bmp": encode(cat, "BMP"),
        "tiff": encode(cat, "TIFF"),
    }


@pytest.mark.parametrize("variant", sorted(_variants()))
def test_every_accepted_format_decodes_to_the_same_picture(variant: str) -> None:
    reference = PRE(encode(photo("chelsea"), "PNG"), 0)
    decoded = PRE(_variants()[variant], 0)
    assert decoded.shape == (224, 224, 3)
    assert decoded.dtype == np.uint8
    if "gray" in variant or "grayscale" in variant:
        reference = np.repeat(reference.mean(axis=2, keepdims=True), 3, axis=2)
    assert _similar(decoded, reference), variant


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    ramp = np.tile(np.linspace(0, 65535, 300, dtype=np.uint16), (300, 1))
    decoded = PRE(encode(Image.fromarray(ramp), "PNG"), 0)
    # The centre crop keeps the middle 224/256 of the ramp: about 16..239.
    assert decoded.min() < 30
    assert decoded.max() > 225
    assert 100 < decoded.mean() < 155  # clipping at 255 would make it nearly all white


def test_transparent_pixels_become_white() -> None:
    clear = Image.new("RGBA", (300, 300), (255, 0, 0, 0))
    assert PRE(encode(clear, "PNG"), 0).min() == 255


def test_gif_first_frame_is_used() -> None:
    red = Image.new("RGB", (300, 300), (255, 0, 0))
    blue = Image.new("RGB", (300, 300), (0, 0, 255))
    buffer = io.BytesIO()
    red.save(buffer, "GIF", save_all=True, append_images=[blue])
    decoded = PRE(buffer.getvalue(), 0)
    assert decoded[..., 0].mean() > 200
    assert decoded[..., 2].mean() < 50


def test_exif_orientation_is_honoured() -> None:
    upright = photo("chelsea")
    # Store the pixels rotated, with the EXIF tag that says how to undo it.
    stored = Image.fromarray(upright).rotate(90, expand=True)  # counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    tagged = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    untagged = encode(stored, "JPEG", quality=95)
    reference = PRE(encode(upright, "JPEG", quality=95), 0)
    assert _similar(PRE(tagged, 0), reference)
    assert not _similar(PRE(untagged, 0), reference)


def test_small_images_are_upscaled_to_the_input() -> None:
    assert PRE(encode(Image.new("RGB", (10, 40), (0, 128, 0)), "PNG"), 0).shape == (224, 224, 3)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "images[3]: empty image bytes"),
        (b"this is not an image", "images[3]: not a decodable image"),
        (jpeg("coffee")[:2000], "images[3]: corrupt or truncated image"),
        (encode(Image.new("L", (2100, 2000)), "PNG"), "exceeds the limit of 4000000 pixels"),
        (encode(Image.new("RGB", (8, 8)), "ICO"), "images[3]: unsupported image format ICO"),
    ],
    ids=["empty", "garbage", "truncated", "too-many-pixels", "unsupported-format"],
)
def test_bad_input_is_invalid_argument_naming_the_image(payload: bytes, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        PRE(payload, 3)
    assert message in info.value.message


def test_decompression_bomb_header_is_refused_before_decoding() -> None:
    # A PNG header claiming 30000x30000 pixels: Pillow itself raises at twice the
    # limit; either way the caller gets INVALID_ARGUMENT naming the image.
    bomb = encode(Image.new("1", (30000, 30000)), "PNG")
    assert len(bomb) < 200_000
    with pytest.raises(InvalidArgumentError, match=r"images\[0\]: .*pixel") as info:
        PRE(bomb, 0)
    # One limit, ours; the image's own size, not Pillow's doubled limit.
    assert info.value.message == "images[0]: 900000000 pixels exceeds the limit of 4000000 pixels"
