"""`make bench-thumbnails`: what a stored thumbnail costs per item, on real photo sets.

Makes every image's thumbnail exactly as Search does at Insert
(`imgsearch_search.thumbnails.make_thumbnail` with the default `ThumbnailSpec`,
or `--max-side`), and reports the encoded size and the size of its base64
text, the form Milvus stores in the `thumbnail` VARCHAR field and keeps in
memory while the collection is loaded. Sets: the 19 scikit-image sample
photos of the tests, the desktop photos of Debian's `gnome-backgrounds` and
`plasma-workspace-wallpapers` (camera-sized JPEG and PNG), and 1,000
Fashion-MNIST images (28 x 28 grey, `dataset-fashion-mnist`); sets whose
files are not installed are skipped.

Prints one JSON object: per set, the count and the median, mean and largest
stored bytes, and the memory a million such items take in Milvus (mean x 10^6).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from imgsearch_search.thumbnails import ThumbnailSpec, make_thumbnail  # noqa: E402
from tests.fixtures.photos import load_photos  # noqa: E402

DESKTOP_DIRS = (Path("/usr/share/backgrounds/gnome"), Path("/usr/share/wallpapers"))
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def desktop_photos() -> dict[str, bytes]:
    found = {}
    for root in DESKTOP_DIRS:
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp") and path.is_file():
                    found[str(path)] = path.read_bytes()
    return found


def fashion_mnist(count: int) -> dict[str, bytes]:
    if not FASHION_MNIST.is_file():
        return {}
    raw = gzip.decompress(FASHION_MNIST.read_bytes())
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)[:count]
    found = {}
    for index, array in enumerate(pixels):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        found[f"fashion-mnist/{index}"] = buffer.getvalue()
    return found


def measure(images: dict[str, bytes], spec: ThumbnailSpec) -> dict[str, float]:
    thumbnails = [make_thumbnail(data, spec) for data in images.values()]
    encoded = [len(thumbnail) for thumbnail in thumbnails]
    stored = [len(base64.b64encode(thumbnail)) for thumbnail in thumbnails]
    mean = statistics.fmean(stored)
    return {
        "count": len(stored),
        "encoded_median_bytes": statistics.median(encoded),
        "stored_median_bytes": statistics.median(stored),
        "stored_mean_bytes": round(mean),
        "stored_max_bytes": max(stored),
        "gb_per_million_items": round(mean * 1e6 / 1e9, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-side", type=int, default=ThumbnailSpec.max_side)
    parser.add_argument("--fashion-mnist", type=int, default=1000, help="images of that set")
    args = parser.parse_args()
    spec = ThumbnailSpec(max_side=args.max_side)
    sets = {
        "sample photos (scikit-image)": load_photos(),
        "desktop photos (gnome, plasma)": desktop_photos(),
        "fashion-mnist 28x28": fashion_mnist(args.fashion_mnist),
    }
    result = {"max_side": spec.max_side, "format": spec.image_format, "quality": spec.quality}
    result["sets"] = {name: measure(images, spec) for name, images in sets.items() if images}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
