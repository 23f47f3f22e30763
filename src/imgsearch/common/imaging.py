"""Decoding untrusted encoded images into upright RGB pictures, with strict input checks.

Shared by every service that reads image bytes: the Embedder (model input) and
Search (stored thumbnails). Every rejection is an `InvalidArgumentError` whose
message starts with `where` (e.g. `images[3]`), so callers can say which image
of a request was refused.

Runs in worker threads: Pillow releases the GIL while decoding and resizing.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imgsearch.common.errors import InvalidArgumentError

# Formats we promise to accept; anything else Pillow might open is refused.
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
ACCEPTED_FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP, TIFF"
_HIGH_BIT_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


def configure_pillow(max_image_pixels: int) -> None:
    """Process-wide Pillow policy: decompression bombs are errors, not warnings.

    Called once from a server's start-up (never at import). Pillow warns above
    MAX_IMAGE_PIXELS and raises above twice that; `decode_rgb` also checks
    each image's header against the limit before decoding it.
    """
    Image.MAX_IMAGE_PIXELS = max_image_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)


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
    if not data:
        raise InvalidArgumentError(f"{where}: empty image bytes")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidArgumentError(
            f"{where}: not a decodable image ({len(data)} bytes; accepted formats: "
            f"{ACCEPTED_FORMAT_NAMES})"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidArgumentError(
            f"{where}: image exceeds the pixel limit of {max_image_pixels} ({exc})"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidArgumentError(f"{where}: cannot read image header: {exc}") from None
    with image:
        if image.format not in ACCEPTED_FORMATS:
            raise InvalidArgumentError(
                f"{where}: unsupported image format {image.format} "
                f"(accepted: {ACCEPTED_FORMAT_NAMES})"
            )
        width, height = image.size
        if width * height > max_image_pixels:
            raise InvalidArgumentError(
                f"{where}: {width}x{height} = {width * height} pixels exceeds the limit "
                f"of {max_image_pixels} pixels"
            )
        if width < 1 or height < 1:
            raise InvalidArgumentError(f"{where}: image has no pixels ({width}x{height})")
        try:
            return _decode(image, draft_size)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InvalidArgumentError(
                f"{where}: image exceeds the pixel limit of {max_image_pixels} ({exc})"
            ) from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            # Truncated or corrupt data surfaces here, when the pixels are decoded.
            raise InvalidArgumentError(f"{where}: corrupt or truncated image: {exc}") from None


def _decode(image: Image.Image, draft_size: int | None) -> Image.Image:
    if image.format == "JPEG" and draft_size is not None:
        image.draft("RGB", (draft_size, draft_size))
    image.load()
    image = ImageOps.exif_transpose(image) or image
    return _to_rgb(image)


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in _HIGH_BIT_DEPTH_MODES:
        # Pillow's own conversion clips 16-bit values at 255; scale instead.
        values = np.asarray(image, dtype=np.float32)
        top = 65535.0 if mode.startswith("I;16") or values.max() > 255 else 255.0
        gray = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels have arbitrary colours: composite them onto white.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    return image
