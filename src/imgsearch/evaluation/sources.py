"""The source pictures of the evaluation: real photos and wallpapers that Debian packages ship.

Found through `dpkg-query -L` (never by scanning folders), one `Source` per
distinct picture (the largest file of its resolutions and light/dark
variants). Four kinds:

- `wallpaper`: desktop wallpapers (`WALLPAPER_PACKAGES`): photographs and
  digital artwork, up to 5120x2880;
- `photo`: plain photographs: GCompris' photo activities (`gcompris-qt-data`,
  packed in Qt resource archives, `qt_resources`), Tux Paint's photo
  templates (`tuxpaint-data`) and `skimage.data`'s photographs;
- `cutout`: Tux Paint stamps, photos of objects cut out onto white.

The Debian packages `mate-backgrounds` and `libjxl-testdata` are reserved for
independent checks and are never read (`RESERVED_PACKAGES`).
"""

from __future__ import annotations

import functools
import io
import re
import shutil
import subprocess
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imgsearch.evaluation.qt_resources import read_rcc

WALLPAPER_PACKAGES = (
    "plasma-workspace-wallpapers",
    "gnome-backgrounds",
    "ukui-wallpapers",
    "lomiri-wallpapers",
    "lomiri-wallpapers-16.04",
    "lomiri-wallpapers-20.04",
    "sway-backgrounds",
    "lxqt-themes",
)
GCOMPRIS_PACKAGE = "gcompris-qt-data"
TUXPAINT_PACKAGE = "tuxpaint-data"
STAMPS_PACKAGE = "tuxpaint-stamps-default"
PHOTO_PACKAGES = (*WALLPAPER_PACKAGES, GCOMPRIS_PACKAGE, TUXPAINT_PACKAGE, STAMPS_PACKAGE)
RESERVED_PACKAGES = ("mate-backgrounds", "libjxl-testdata")
# Only these folders of a package hold the pictures used (the rest: icons, themes, drawings).
PACKAGE_FOLDERS = {
    "lxqt-themes": ("/usr/share/lxqt/wallpapers/",),
    STAMPS_PACKAGE: ("/usr/share/tuxpaint/stamps/",),
    TUXPAINT_PACKAGE: ("/usr/share/tuxpaint/templates/",),
    GCOMPRIS_PACKAGE: ("/usr/share/gcompris-qt/rcc/",),
}
# GCompris activities whose pictures are whole photographs (checked by eye). Left out:
# drawings (lang, ...), puzzle pieces of paintings (paintings, details), pieces of one
# photo (babyshapes), sprites (clickgame), renders of planets (solar_system).
GCOMPRIS_PHOTO_ACTIVITIES = (
    "categorization",
    "erase",
    "explore_farm_animals",
    "explore_monuments",
    "explore_world_animals",
    "explore_world_music",
)
# Tux Paint stamps: only those at least this large (longer side), and not drawings.
MIN_STAMP_SIDE = 180
STAMP_EXCLUDED = ("cartoon", "/symbols/")
# skimage.data pictures that are photographs (shipped in the wheel).
SKIMAGE_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "horse", "clock",
    "brick", "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "retina",
    "motorcycle_left",
)  # fmt: skip
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# Sources larger than this (long side) are shrunk when loaded.
MAX_SOURCE_SIDE = 5120


class DataUnavailableError(RuntimeError):
    """The photo packages or the data set are not installed; the message says how to."""


@dataclass(frozen=True)
class Source:
    """One distinct source picture."""

    package: str
    key: str  # one name for every resolution or variant of the same picture
    kind: str  # "wallpaper", "photo" or "cutout"
    path: Path  # the file (for GCompris: its resource archive)
    member: str = ""  # the entry inside a resource archive
    size: tuple[int, int] = (0, 0)


def package_files(package: str) -> list[Path]:
    """The picture files (or resource archives) a package installs, in its usable folders."""
    if package in RESERVED_PACKAGES:
        raise ValueError(f"reserved package {package} must not be used")
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
    suffixes = (".rcc",) if package == GCOMPRIS_PACKAGE else IMAGE_SUFFIXES
    return [
        Path(line)
        for line in listed.stdout.splitlines()
        if line.lower().endswith(suffixes)
        and "screenshot" not in line.lower()
        and line.startswith(folders)
        and not (package == STAMPS_PACKAGE and any(x in line for x in STAMP_EXCLUDED))
    ]


def picture_key(package: str, path: Path) -> str:
    """One key per picture: resolutions (plasma, sway) and light/dark variants (gnome) merge."""
    text = str(path)
    if package == STAMPS_PACKAGE:
        return f"{package}/{path.parent.name}/{path.stem}"
    if "/contents/" in text:
        return f"{package}/{text.split('/contents/')[0].rsplit('/', 1)[-1]}"
    stem = re.sub(r"_\d+x\d+(_Portrait)?$", "", path.stem)
    stem = re.sub(r"-[dl]$", "", stem)
    return f"{package}/{stem}"


@functools.lru_cache(maxsize=4)
def _archive(path: Path) -> dict[str, bytes]:
    return read_rcc(path)


def _gcompris_sources() -> list[Source]:
    sources = []
    for archive in package_files(GCOMPRIS_PACKAGE):
        if archive.stem not in GCOMPRIS_PHOTO_ACTIVITIES:
            continue
        for member, blob in sorted(_archive(archive).items()):
            if not member.lower().endswith(IMAGE_SUFFIXES):
                continue
            with Image.open(io.BytesIO(blob)) as image:
                size = image.size
            if max(size) < 256:  # icons and buttons
                continue
            key = f"{GCOMPRIS_PACKAGE}/{archive.stem}/{Path(member).stem}"
            sources.append(Source(GCOMPRIS_PACKAGE, key, "photo", archive, member, size))
    return sources


def _file_sources(package: str) -> list[Source]:
    """The largest file of every distinct picture of a package of plain files."""
    kind = {STAMPS_PACKAGE: "cutout", TUXPAINT_PACKAGE: "photo"}.get(package, "wallpaper")
    best: dict[str, Source] = {}
    for path in package_files(package):
        if not path.is_file():
            continue
        with Image.open(path) as image:
            size = image.size
        if kind == "cutout" and max(size) < MIN_STAMP_SIDE:
            continue
        key = picture_key(package, path)
        held = best.get(key)
        # The largest wins; ties (light/dark variants of one size): the first name.
        rank = (-size[0] * size[1], str(path))
        if held is None or rank < (-held.size[0] * held.size[1], str(held.path)):
            best[key] = Source(package, key, kind, path, "", size)
    return list(best.values())


def find_sources(packages: Sequence[str] = PHOTO_PACKAGES) -> list[Source]:
    """Every distinct source picture of `packages`, sorted by key (skimage's are apart)."""
    reserved = set(packages) & set(RESERVED_PACKAGES)
    if reserved:
        raise ValueError(f"reserved packages must not be used: {sorted(reserved)}")
    found: list[Source] = []
    for package in packages:
        found.extend(_gcompris_sources() if package == GCOMPRIS_PACKAGE else _file_sources(package))
    return sorted(found, key=lambda source: source.key)


def shrink(image: Image.Image, max_side: int) -> Image.Image:
    """`image` scaled down (never up) so its longer side is at most `max_side`."""
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def load_source(source: Source) -> Image.Image:
    """The source picture as RGB (cut-outs onto white), at most MAX_SOURCE_SIDE."""
    if source.member:
        opened = Image.open(io.BytesIO(_archive(source.path)[source.member]))
    else:
        opened = Image.open(source.path)
    with opened:
        if opened.format == "JPEG":
            opened.draft("RGB", (MAX_SOURCE_SIDE, MAX_SOURCE_SIDE))
        image = opened
        if opened.mode in ("RGBA", "LA", "P"):  # cut-outs: onto white, as a product photo
            rgba = opened.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
        return shrink(image.convert("RGB"), MAX_SOURCE_SIDE)


def skimage_pictures(max_side: int) -> list[tuple[str, Image.Image]]:
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
            (f"skimage/{name}", shrink(Image.fromarray(array).convert("RGB"), max_side))
        )
    return pictures
