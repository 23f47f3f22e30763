"""The evaluation's photo sets, built deterministically from real pictures that exist offline.

Sources (`sources.py`): Debian packages' wallpapers, GCompris' and Tux Paint's
photographs, `skimage.data`'s photographs, and Tux Paint's cut-out stamps. A
source is split by a hash of its name into a *training* part (fitting the
whitening, and the backdrops of some edits) and an *evaluation* part, so
nothing fitted ever sees an evaluated picture. Evaluation sources then play
one role each:

- *gallery* candidates (the pictures queried): whole pictures, downscaled to
  at most 1024 px;
- *tiled* sources: half of the large wallpapers (by another hash), cut into
  non-overlapping tiles of about 0.055 megapixels, which are *distractors*.
  No tile is ever a crop of a gallery picture: they come from other sources.

Sources that are the same picture (another resolution or aspect ratio, a
mirror image, another package's copy) and tiles that repeat one another are
dropped by perceptual hash (`near_duplicates`), across every role; nearly
flat tiles (sky, solid colour) are dropped too.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imgsearch.evaluation import sources as sources_module
from imgsearch.evaluation.near_duplicates import MAX_DISTANCE, MIN_CORRELATION, NearDuplicateFilter
from imgsearch.evaluation.sources import (
    PHOTO_PACKAGES,
    RESERVED_PACKAGES,
    DataUnavailableError,
    Source,
    find_sources,
    load_source,
    shrink,
)

__all__ = [
    "PHOTO_PACKAGES",
    "RESERVED_PACKAGES",
    "DataUnavailableError",
    "PhotoSets",
    "Picture",
    "build_pictures",
    "cached_pictures",
    "load_fashion",
    "photo_sets",
    "shrink",
    "skimage_pictures",
    "split_of",
]

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# Distractor tile shapes (width, height), about 0.055 megapixels each.
TILE_SHAPES = ((288, 192), (256, 192), (192, 256), (240, 240), (320, 180), (288, 216))
# Wallpapers at least this large (long side) may be tiled; smaller ones stay whole.
MIN_SPLIT_SIDE = 1400
# The share of large evaluation wallpapers that are tiled into distractors.
TILED_FRACTION = 0.5
# Most tiles kept of one source (evenly spread over it), so no scene dominates.
MAX_TILES_PER_SOURCE = 120
TRAIN_FRACTION = 0.18
MIN_TILE_STD = 10.0
MAX_SIDE = 1024


@dataclass(frozen=True)
class Picture:
    """One item of the sets: a distinct picture and where it came from."""

    name: str  # unique, e.g. "plasma-workspace-wallpapers/Autumn#whole"
    source: str  # the source picture it was cut from
    split: str  # "train" or "eval"
    jpeg: bytes  # the item as a quality-90 JPEG (what would be indexed)
    role: str = "gallery"  # "gallery" (a whole picture) or "distractor" (a tile)
    kind: str = "photo"  # the source's kind: "wallpaper", "photo" or "cutout"

    def image(self) -> Image.Image:
        return Image.open(io.BytesIO(self.jpeg)).convert("RGB")


def _fraction(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def split_of(key: str) -> str:
    """ "train" or "eval", by a hash of the source's key (stable across runs and machines)."""
    return "train" if _fraction(key) < TRAIN_FRACTION else "eval"


def is_tiled(source: Source) -> bool:
    """Whether an evaluation source is cut into distractor tiles (else it is one gallery item)."""
    large = source.kind == "wallpaper" and max(source.size) >= MIN_SPLIT_SIDE
    return large and _fraction(f"tiles:{source.key}") < TILED_FRACTION


def to_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def tiles(image: Image.Image, shape: tuple[int, int]) -> list[Image.Image]:
    """Non-overlapping tiles of `shape`, a grid centred in `image` (none if it is too small)."""
    width, height = shape
    if image.width < width * 1.5 or image.height < height * 1.5:
        return []
    columns, rows = image.width // width, image.height // height
    left0 = (image.width - columns * width) // 2
    top0 = (image.height - rows * height) // 2
    return [
        image.crop((left0 + c * width, top0 + r * height, left0 + (c + 1) * width,
                    top0 + (r + 1) * height))
        for r in range(rows)
        for c in range(columns)
    ]  # fmt: skip


def _spread(items: list[Image.Image], most: int) -> list[Image.Image]:
    """At most `most` of `items`, evenly spaced (tiles of the whole picture, not its top rows)."""
    if len(items) <= most:
        return items
    return [items[int(i * len(items) / most)] for i in range(most)]


def _source_tiles(source: Source, image: Image.Image) -> list[tuple[str, Image.Image]]:
    digest = int(hashlib.sha256(source.key.encode()).hexdigest()[:8], 16)
    shape = TILE_SHAPES[digest % len(TILE_SHAPES)]
    flat = [t for t in tiles(image, shape) if _detailed(t)]
    return [(f"{source.key}#t{i}", t) for i, t in enumerate(_spread(flat, MAX_TILES_PER_SOURCE))]


def _detailed(image: Image.Image) -> bool:
    return float(np.asarray(image.convert("L"), np.float32).std()) >= MIN_TILE_STD


def skimage_pictures() -> list[tuple[str, Image.Image]]:
    """The skimage.data photographs that ship with scikit-image (no download)."""
    return sources_module.skimage_pictures(MAX_SIDE)


def _candidates(
    packages: Sequence[str],
) -> Iterable[tuple[str, str, str, str, str, Image.Image]]:
    """(name, source key, split, role, kind, picture) of every source, whole pictures first.

    Whole pictures come first (largest first), so the near-duplicate filter
    keeps the best copy of a picture, and a tile never displaces one.
    """
    found = find_sources(packages)
    found.sort(key=lambda s: (-s.size[0] * s.size[1], s.key))
    tiled: list[Source] = []
    for source in found:
        split = split_of(source.key)
        if split == "eval" and is_tiled(source):
            tiled.append(source)
            continue
        whole = shrink(load_source(source), MAX_SIDE)
        yield f"{source.key}#whole", source.key, split, "gallery", source.kind, whole
        if split == "train" and max(source.size) >= MIN_SPLIT_SIDE:
            tiled.append(source)  # training tiles: more views to fit on
    for name, image in skimage_pictures():
        yield name, name, split_of(name), "gallery", "photo", image
    for source in tiled:
        split = split_of(source.key)
        for name, tile in _source_tiles(source, load_source(source)):
            yield name, source.key, split, "distractor", source.kind, tile


def build_pictures(
    packages: Sequence[str] = PHOTO_PACKAGES,
) -> tuple[list[Picture], list[tuple[str, str]]]:
    """Every distinct picture of the sources, in a stable order (see the module docstring),
    and the near-duplicates dropped: (dropped picture, the kept one it repeats)."""
    unique = NearDuplicateFilter()
    pictures = []
    for name, source, split, role, kind, picture in _candidates(packages):
        if unique.offer(name, picture):
            pictures.append(Picture(name, source, split, to_jpeg(picture), role, kind))
    pictures.sort(key=lambda p: p.name)
    return pictures, unique.dropped


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
    """Draw gallery and distractors from the evaluation pictures, deterministically.

    The gallery is drawn from the whole photographs and wallpapers first; cut-outs
    fill it only when those are too few. Whole pictures not drawn join the tiles
    as distractors.
    """
    rng = np.random.default_rng(seed)
    whole = [p for p in pictures if p.split == "eval" and p.role == "gallery"]
    whole = [whole[i] for i in rng.permutation(len(whole))]
    whole.sort(key=lambda p: p.kind == "cutout")  # stable: photos first, each part shuffled
    tiles_ = [p for p in pictures if p.split == "eval" and p.role == "distractor"]
    gallery, rest = whole[:gallery_size], whole[gallery_size:]
    pool = rest + tiles_
    if len(gallery) < gallery_size or len(pool) < distractor_count:
        raise DataUnavailableError(
            f"only {len(whole)} whole pictures and {len(tiles_)} tiles for a gallery of"
            f" {gallery_size} and {distractor_count} distractors"
        )
    distractors = [pool[i] for i in rng.permutation(len(pool))[:distractor_count]]
    train = [p for p in pictures if p.split == "train"]
    return PhotoSets(gallery, distractors, train)


def composition(pictures: Sequence[Picture]) -> dict[str, int]:
    """How many pictures of each kind and package: {"photo/gcompris-qt-data": 212, ...}."""
    counts: dict[str, int] = {}
    for picture in pictures:
        key = f"{picture.kind}/{picture.name.split('/', 1)[0]}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


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
PICTURES_VERSION = "4"


def _cache_key(packages: Sequence[str]) -> str:
    text = "|".join(
        (PICTURES_VERSION, ",".join(packages), str(TILE_SHAPES), str(MIN_TILE_STD),
         str(MAX_DISTANCE), str(MIN_CORRELATION), str(TRAIN_FRACTION), str(TILED_FRACTION),
         str(MAX_TILES_PER_SOURCE))
    )  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached_pictures(cache_dir: Path, packages: Sequence[str] = PHOTO_PACKAGES) -> list[Picture]:
    """`build_pictures`, remembered under `cache_dir` (rebuilding takes a few minutes)."""
    folder = cache_dir / f"pictures-{_cache_key(packages)}"
    manifest = folder / "manifest.json"
    if manifest.is_file():
        entries = json.loads(manifest.read_text())
        return [
            Picture(
                e["name"], e["source"], e["split"], (folder / e["file"]).read_bytes(), e["role"],
                e["kind"],
            )
            for e in entries
        ]  # fmt: skip
    pictures, dropped = build_pictures(packages)
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
                "kind": picture.kind,
                "file": file,
            }
        )
    (staging / "manifest.json").write_text(json.dumps(entries, indent=0))
    (staging / "near-duplicates.json").write_text(json.dumps(dropped, indent=0))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return pictures
