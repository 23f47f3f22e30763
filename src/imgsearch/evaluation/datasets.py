"""The evaluation's photo sets, built deterministically from real photos that exist offline.

Sources are the pictures shipped by Debian photo packages (`PHOTO_PACKAGES`,
found with `dpkg-query -L`, never by scanning folders) and `skimage.data`.
There are about 110 distinct wallpapers (up to 5120x2880), about 180
cut-out object photos (Tux Paint stamps) and 15 skimage photos, so:

- *gallery* pictures (the ones queried) are whole photos, or for a large
  wallpaper its top-left and bottom-right quarters: two different views,
  each downscaled to at most 1024 px;
- *distractors* are non-overlapping tiles (about 0.055 megapixels, varied
  shapes) cut from the wallpaper's other two quarters: never a crop of a
  gallery picture, so no query has a second right answer, but often of
  the same scene and style, as in a real photo collection.

Nearly flat tiles (sky, solid colour) and near-copies of a kept picture
(repeating patterns) are dropped. Sources are split by a hash of their name
into a *training* part (for fitting whitening, and the backdrops of some
edits) and an *evaluation* part, so nothing fitted ever saw an evaluated
picture. The Debian packages `mate-backgrounds` and `libjxl-testdata` are
reserved for independent checks and are never read (`RESERVED_PACKAGES`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PHOTO_PACKAGES = (
    "plasma-workspace-wallpapers",
    "gnome-backgrounds",
    "ukui-wallpapers",
    "lomiri-wallpapers",
    "lomiri-wallpapers-16.04",
    "lomiri-wallpapers-20.04",
    "sway-backgrounds",
    "lxqt-themes",
    "tuxpaint-stamps-default",
)
# Only these folders of a package hold photos (the rest: icons, themes, cartoons).
PACKAGE_FOLDERS = {
    "lxqt-themes": ("/usr/share/lxqt/wallpapers/",),
    "tuxpaint-stamps-default": ("/usr/share/tuxpaint/stamps/",),
}
# Tux Paint stamps are cut-out photos of objects on a transparent background;
# only those at least this large (longer side) and not drawings are used, as distractors.
MIN_STAMP_SIDE = 180
STAMP_EXCLUDED = ("cartoon", "/symbols/")
RESERVED_PACKAGES = ("mate-backgrounds", "libjxl-testdata")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# skimage.data pictures that are photographs (shipped in the wheel).
SKIMAGE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "coins",
    "moon",
    "horse",
    "clock",
    "brick",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "motorcycle_left",
)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# Distractor tile shapes (width, height), about 0.055 megapixels each.
TILE_SHAPES = ((288, 192), (256, 192), (192, 256), (240, 240), (320, 180), (288, 216))
# Sources larger than this (long side) are shrunk first.
MAX_SOURCE_SIDE = 5120
# Sources at least this large (long side) give two gallery quarters and distractor tiles;
# smaller ones are one gallery picture, whole.
MIN_SPLIT_SIDE = 1400
TRAIN_FRACTION = 0.18
MIN_TILE_STD = 10.0
DUPLICATE_DISTANCE = 6.0
MAX_SIDE = 1024


class DataUnavailableError(RuntimeError):
    """The photo packages or the data set are not installed; the message says how to."""


@dataclass(frozen=True)
class Picture:
    """One item of the sets: a distinct picture and where it came from."""

    name: str  # unique, e.g. "plasma-workspace-wallpapers/Autumn#q0"
    source: str  # the source picture it was cut from
    split: str  # "train" or "eval"
    jpeg: bytes  # the item as a quality-90 JPEG (what would be indexed)
    role: str = "gallery"  # "gallery" (whole photo or quarter) or "distractor" (tile)

    def image(self) -> Image.Image:
        return Image.open(io.BytesIO(self.jpeg)).convert("RGB")


@dataclass(frozen=True)
class Source:
    """A source picture file in an installed package."""

    package: str
    key: str  # one name for every resolution or variant of the same picture
    path: Path


def _package_files(package: str) -> list[Path]:
    if shutil.which("dpkg-query") is None:
        raise DataUnavailableError("dpkg-query not found: the evaluation needs Debian packages")
    listed = subprocess.run(
        ["dpkg-query", "-L", package], capture_output=True, text=True, check=False
    )
    if listed.returncode != 0:
        raise DataUnavailableError(
            f"the Debian package {package} is not installed: run `make eval-data`"
            " (as root: scripts/ensure-eval-data.sh)"
        )
    folders = PACKAGE_FOLDERS.get(package, ("/",))
    return [
        Path(line)
        for line in listed.stdout.splitlines()
        if line.lower().endswith(_IMAGE_SUFFIXES)
        and "screenshot" not in line.lower()
        and line.startswith(folders)
        and not (package == "tuxpaint-stamps-default" and any(x in line for x in STAMP_EXCLUDED))
    ]


def _picture_key(package: str, path: Path) -> str:
    """One key per picture: resolutions (plasma, sway) and light/dark variants (gnome) merge."""
    text = str(path)
    if package == "tuxpaint-stamps-default":
        return f"{package}/{path.parent.name}/{path.stem}"
    if "/contents/" in text:
        return f"{package}/{text.split('/contents/')[0].rsplit('/', 1)[-1]}"
    stem = re.sub(r"_\d+x\d+(_Portrait)?$", "", path.stem)
    stem = re.sub(r"-[dl]$", "", stem)
    return f"{package}/{stem}"


def find_sources(packages: Sequence[str] = PHOTO_PACKAGES) -> list[Source]:
    """The largest file of every distinct picture in `packages`, sorted by key."""
    reserved = set(packages) & set(RESERVED_PACKAGES)
    if reserved:
        raise ValueError(f"reserved packages must not be used: {sorted(reserved)}")
    best: dict[str, tuple[int, Source]] = {}
    for package in packages:
        for path in _package_files(package):
            if not path.is_file():
                continue
            with Image.open(path) as image:
                area = image.width * image.height
                if package == "tuxpaint-stamps-default" and max(image.size) < MIN_STAMP_SIDE:
                    continue
            key = _picture_key(package, path)
            # Ties (light/dark variants of the same size): the first name wins.
            if (
                key not in best
                or area > best[key][0]
                or (area == best[key][0] and str(path) < str(best[key][1].path))
            ):
                best[key] = (area, Source(package, key, path))
    return [best[key][1] for key in sorted(best)]


def split_of(key: str) -> str:
    """ "train" or "eval", by a hash of the source's key (stable across runs and machines)."""
    fraction = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if fraction < TRAIN_FRACTION else "eval"


def to_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def shrink(image: Image.Image, max_side: int) -> Image.Image:
    """`image` scaled down (never up) so its longer side is at most `max_side`."""
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _signature(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L").resize((16, 16), Image.Resampling.BOX), np.float32)


def tiles(image: Image.Image, shape: tuple[int, int]) -> list[Image.Image]:
    """Non-overlapping tiles of `shape`, a grid centred in `image` (the whole image if smaller)."""
    width, height = shape
    if image.width < width * 1.5 or image.height < height * 1.5:
        return [shrink(image, MAX_SIDE)]
    columns, rows = image.width // width, image.height // height
    left0 = (image.width - columns * width) // 2
    top0 = (image.height - rows * height) // 2
    return [
        image.crop((left0 + c * width, top0 + r * height, left0 + (c + 1) * width,
                    top0 + (r + 1) * height))
        for r in range(rows)
        for c in range(columns)
    ]  # fmt: skip


def _distinct(candidates: Iterable[tuple[str, Image.Image]]) -> list[tuple[str, Image.Image]]:
    """Drop nearly flat tiles and tiles that are near-copies of one kept before."""
    kept: list[tuple[str, Image.Image]] = []
    signatures: list[np.ndarray] = []
    for name, tile in candidates:
        signature = _signature(tile)
        if float(np.asarray(tile.convert("L"), np.float32).std()) < MIN_TILE_STD:
            continue
        if any(float(np.abs(signature - s).mean()) < DUPLICATE_DISTANCE for s in signatures):
            continue
        kept.append((name, tile))
        signatures.append(signature)
    return kept


def _quarters(image: Image.Image) -> list[tuple[int, int, int, int]]:
    half_w, half_h = image.width // 2, image.height // 2
    return [
        (0, 0, half_w, half_h),
        (half_w, half_h, image.width, image.height),
        (half_w, 0, image.width, half_h),
        (0, half_h, half_w, image.height),
    ]


def _source_pictures(source: Source, max_tiles: int | None) -> list[tuple[str, str, Image.Image]]:
    """(name, role, picture) of one source: gallery quarters (or the whole) and distractor tiles."""
    with Image.open(source.path) as opened:
        if opened.format == "JPEG":
            opened.draft("RGB", (MAX_SOURCE_SIDE, MAX_SOURCE_SIDE))
        if opened.mode in ("RGBA", "LA", "P"):  # cut-outs: onto white, as a product photo
            rgba = opened.convert("RGBA")
            opened = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
        image = shrink(opened.convert("RGB"), MAX_SOURCE_SIDE)
    if max(image.size) < MIN_SPLIT_SIDE:
        return [(f"{source.key}#whole", "gallery", shrink(image, MAX_SIDE))]
    digest = int(hashlib.sha256(source.key.encode()).hexdigest()[:8], 16)
    shape = TILE_SHAPES[digest % len(TILE_SHAPES)]
    boxes = _quarters(image)
    out = [
        (f"{source.key}#q{index}", "gallery", shrink(image.crop(box), MAX_SIDE))
        for index, box in enumerate(boxes[:2])
    ]
    cut: list[Image.Image] = []
    for box in boxes[2:]:
        cut.extend(tiles(image.crop(box), shape))
    if max_tiles is not None:
        cut = cut[:max_tiles]
    out.extend((f"{source.key}#t{index}", "distractor", tile) for index, tile in enumerate(cut))
    return out


def skimage_pictures() -> list[tuple[str, Image.Image]]:
    """The skimage.data photographs that ship with scikit-image (no download)."""
    import skimage.data

    pictures = []
    for name in SKIMAGE_PHOTOS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                array = getattr(skimage.data, name)()
        except (AttributeError, ModuleNotFoundError, OSError, ValueError):
            continue  # needs a download in this scikit-image version
        if array.dtype != np.uint8:
            low, high = float(array.min()), float(array.max())
            array = ((array - low) / max(high - low, 1e-9) * 255).astype(np.uint8)
        pictures.append(
            (f"skimage/{name}", shrink(Image.fromarray(array).convert("RGB"), MAX_SIDE))
        )
    return pictures


def build_pictures(
    packages: Sequence[str] = PHOTO_PACKAGES, max_tiles_per_source: int | None = None
) -> list[Picture]:
    """Every distinct picture of the sources, in a stable order (see the module docstring)."""
    candidates: list[tuple[str, str, str, str, Image.Image]] = []
    for source in find_sources(packages):
        split = split_of(source.key)
        for name, role, picture in _source_pictures(source, max_tiles_per_source):
            candidates.append((name, source.key, split, role, picture))
    for name, image in skimage_pictures():
        candidates.append((name, name, split_of(name), "gallery", image))
    by_name = {name: (source, split, role) for name, source, split, role, _ in candidates}
    pictures = []
    for name, picture in _distinct((name, picture) for name, _, _, _, picture in candidates):
        source, split, role = by_name[name]
        pictures.append(Picture(name, source, split, to_jpeg(picture), role))
    return pictures


@dataclass(frozen=True)
class PhotoSets:
    """The near-duplicate benchmark's sets."""

    gallery: list[Picture]  # queried: each is the answer of its edited copies
    distractors: list[Picture]  # indexed beside the gallery, never queried
    train: list[Picture]  # disjoint sources: whitening, and backdrops of edits

    @property
    def indexed(self) -> list[Picture]:
        return self.gallery + self.distractors


def photo_sets(
    pictures: Sequence[Picture], gallery_size: int, distractor_count: int, seed: int
) -> PhotoSets:
    """Draw gallery and distractors from the evaluation pictures, deterministically."""
    gallery = [p for p in pictures if p.split == "eval" and p.role == "gallery"]
    distractors = [p for p in pictures if p.split == "eval" and p.role == "distractor"]
    train = [p for p in pictures if p.split == "train"]
    if len(gallery) < gallery_size or len(distractors) < distractor_count:
        raise DataUnavailableError(
            f"only {len(gallery)} gallery pictures and {len(distractors)} distractors for a"
            f" gallery of {gallery_size} and {distractor_count} distractors"
        )
    rng = np.random.default_rng(seed)
    chosen_gallery = [gallery[i] for i in rng.permutation(len(gallery))[:gallery_size]]
    chosen_distractors = [
        distractors[i] for i in rng.permutation(len(distractors))[:distractor_count]
    ]
    return PhotoSets(chosen_gallery, chosen_distractors, train)


# --- Fashion-MNIST


def read_idx(path: Path) -> np.ndarray:
    """A gzip'd IDX file (the MNIST format) as an array."""
    data = gzip.decompress(path.read_bytes())
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fashion(split: str, directory: Path = FASHION_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,)) of the "train" or "test" split."""
    prefix = "train" if split == "train" else "t10k"
    if not directory.is_dir():
        raise DataUnavailableError(
            f"{directory} is missing: install Debian's dataset-fashion-mnist (`make setup`)"
        )
    images = read_idx(directory / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(directory / f"{prefix}-labels-idx1-ubyte.gz")
    return images, labels


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


# --- cache

# Bump when anything above changes which pictures are built, or how.
PICTURES_VERSION = "3"


def _cache_key(packages: Sequence[str], max_tiles_per_source: int | None) -> str:
    text = "|".join(
        (PICTURES_VERSION, ",".join(packages), str(max_tiles_per_source), str(TILE_SHAPES),
         str(MIN_TILE_STD), str(DUPLICATE_DISTANCE), str(TRAIN_FRACTION))
    )  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached_pictures(
    cache_dir: Path,
    packages: Sequence[str] = PHOTO_PACKAGES,
    max_tiles_per_source: int | None = None,
) -> list[Picture]:
    """`build_pictures`, remembered under `cache_dir` (rebuilding takes about half a minute)."""
    folder = cache_dir / f"pictures-{_cache_key(packages, max_tiles_per_source)}"
    manifest = folder / "manifest.json"
    if manifest.is_file():
        entries = json.loads(manifest.read_text())
        return [
            Picture(
                e["name"], e["source"], e["split"], (folder / e["file"]).read_bytes(), e["role"]
            )
            for e in entries
        ]
    pictures = build_pictures(packages, max_tiles_per_source)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    entries = []
    for index, picture in enumerate(pictures):
        file = f"{index:05d}.jpg"
        (staging / file).write_bytes(picture.jpeg)
        entries.append(
            {
                "name": picture.name,
                "source": picture.source,
                "split": picture.split,
                "role": picture.role,
                "file": file,
            }
        )
    (staging / "manifest.json").write_text(json.dumps(entries, indent=0))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return pictures
