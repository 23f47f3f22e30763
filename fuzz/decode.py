"""Fuzzing the decode path: bytes -> the Embedder's model input, as one decode thread does it.

Every input must end in a (224, 224, 3) uint8 array or in the image's own
InvalidArgumentError ("images[0]: ..."); any other exception, a hang (per-input
`-timeout`) or memory beyond `-rss_limit_mb` is a finding. Pillow, tifffile and
our decoding modules are instrumented for coverage.

    python -m fuzz.decode -max_total_time=600
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["PIL", "tifffile", "imgsearch", "imgsearch_embedder"]):
    from PIL import Image

    Image.init()  # import every plugin now, while imports are instrumented
    from imgsearch.common.errors import InvalidArgumentError
    from imgsearch.common.imaging import PixelBudget
    from imgsearch_embedder.preprocess import Preprocessor, configure_pillow

from fuzz.harness import run
from fuzz.seeds import MAX_LEN, decode_seeds

# The service's own limits, with a smaller pixel limit so that each input is quick.
MAX_IMAGE_PIXELS = 4_000_000
PREPROCESS = Preprocessor(
    input_size=224,
    resize_size=256,
    max_image_pixels=MAX_IMAGE_PIXELS,
    max_aspect_ratio=8.0,
    budget=PixelBudget(MAX_IMAGE_PIXELS),
)


def test_one_input(data: bytes) -> None:
    try:
        result = PREPROCESS(data, 0)
    except InvalidArgumentError as error:
        if not error.message.startswith("images[0]: "):
            raise AssertionError(f"message does not name the image: {error.message}") from None
        return
    if result.shape != (224, 224, 3) or result.dtype.name != "uint8":
        raise AssertionError(f"decoded to {result.shape} {result.dtype}")


def main() -> None:
    configure_pillow(MAX_IMAGE_PIXELS)
    # Bound: ~100 MB interpreter and libraries, plus decoding one image at the
    # pixel limit at ~16 bytes per pixel (64 MB), with room for allocator slack.
    run("decode", test_one_input, decode_seeds(), rss_limit_mb=1024, timeout_s=20, max_len=MAX_LEN)


if __name__ == "__main__":
    main()
