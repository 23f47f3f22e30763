"""Decoding and resizing encoded images into the model's input, with strict input checks.

Runs in a thread pool (Pillow releases the GIL while decoding and resizing), off
the event loop. Every rejection is an `InvalidArgumentError` whose message
names the image's index in the request.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imgsearch.common.errors import InvalidArgumentError

# Formats we promise to accept; anything else Pillow might open is refused.
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
_HIGH_BIT_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


def configure_pillow(max_image_pixels: int) -> None:
    """Process-wide Pillow policy: decompression bombs are errors, not warnings.

    Called once from the server's start-up (never at import). Pillow warns above
    MAX_IMAGE_PIXELS and raises above twice that; we also check each image's
    header against the limit before decoding it.
    """
    Image.MAX_IMAGE_PIXELS = max_image_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)


@dataclass(frozen=True)
class Preprocessor:
    """Turns encoded image bytes into an (input_size, input_size, 3) uint8 RGB array."""

    input_size: int
    resize_size: int
    max_image_pixels: int

    def __call__(self, data: bytes, index: int) -> np.ndarray:
        where = f"images[{index}]"
        if not data:
            raise InvalidArgumentError(f"{where}: empty image bytes")
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise InvalidArgumentError(
                f"{where}: not a decodable image ({len(data)} bytes; accepted formats: "
                "JPEG, PNG, WebP, GIF, BMP, TIFF)"
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InvalidArgumentError(
                f"{where}: image exceeds the pixel limit of {self.max_image_pixels} ({exc})"
            ) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise InvalidArgumentError(f"{where}: cannot read image header: {exc}") from None
        with image:
            if image.format not in ACCEPTED_FORMATS:
                raise InvalidArgumentError(
                    f"{where}: unsupported image format {image.format} "
                    "(accepted: JPEG, PNG, WebP, GIF, BMP, TIFF)"
                )
            width, height = image.size
            if width * height > self.max_image_pixels:
                raise InvalidArgumentError(
                    f"{where}: {width}x{height} = {width * height} pixels exceeds the limit "
                    f"of {self.max_image_pixels} pixels"
                )
            if width < 1 or height < 1:
                raise InvalidArgumentError(f"{where}: image has no pixels ({width}x{height})")
            try:
                return self._decode(image)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise InvalidArgumentError(
                    f"{where}: image exceeds the pixel limit of {self.max_image_pixels} ({exc})"
                ) from None
            except (OSError, ValueError, SyntaxError, EOFError) as exc:
                # Truncated or corrupt data surfaces here, when the pixels are decoded.
                raise InvalidArgumentError(f"{where}: corrupt or truncated image: {exc}") from None

    def _decode(self, image: Image.Image) -> np.ndarray:
        if image.format == "JPEG":
            # Let libjpeg decode at a reduced scale (DCT scaling) when the image is
            # much larger than needed: several times faster on camera-sized photos.
            # The scale keeps both sides >= resize_size, so quality is unaffected.
            image.draft("RGB", (self.resize_size, self.resize_size))
        image.load()
        image = ImageOps.exif_transpose(image) or image
        rgb = self._to_rgb(image)
        return self._resize_and_crop(rgb)

    @staticmethod
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
