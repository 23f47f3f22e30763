"""Finding near-duplicate pictures without the descriptor under test: perceptual hashes.

The pHash of a picture (Zauner, "Implementation and benchmarking of perceptual
image hash functions", 2010): the picture in grayscale at 32x32, its 2-D DCT,
the 8x8 lowest frequencies but the constant one, one bit each: above their
median or not. Recompressed, resized, slightly recoloured copies of a picture
differ in a few of the 64 bits; unrelated pictures in about half.

`NearDuplicateFilter` keeps pictures one by one and refuses any that repeats
one kept before, as it is or mirrored, whole or by its central square (which
matches the same picture shipped at another aspect ratio, cropped to it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

_SIDE = 32
_LOW = 8
# Hash bits (of 63) and thumbnail correlation within which two pictures are one.
MAX_DISTANCE = 12
MIN_CORRELATION = 0.85


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


_DCT = _dct_matrix(_SIDE)


def phash(image: Image.Image) -> int:
    """The perceptual hash of `image`: 63 bits (the DC coefficient left out) in an int."""
    gray = np.asarray(
        image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.BOX), dtype=np.float64
    )
    low = (_DCT @ gray @ _DCT.T)[:_LOW, :_LOW].ravel()[1:]
    bits = low > np.median(low)
    return int(np.packbits(np.concatenate([[False], bits])).view(">u8")[0])


def distance(a: int, b: int) -> int:
    """Hamming distance of two hashes, in bits."""
    return (a ^ b).bit_count()


def _centre_square(image: Image.Image) -> Image.Image:
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


def _thumbnail(image: Image.Image) -> np.ndarray:
    """The picture in grayscale at 32x32, zero-mean and unit-norm (for correlation)."""
    gray = np.asarray(image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.BOX), np.float32)
    centred = gray.ravel() - gray.mean()
    return centred / max(float(np.linalg.norm(centred)), 1e-6)


@dataclass(frozen=True)
class Signature:
    """A picture's hashes and thumbnails: as it is, mirrored, and its central square (both)."""

    hashes: tuple[int, int, int, int]
    thumbnails: np.ndarray  # (4, 1024)

    @classmethod
    def of(cls, image: Image.Image) -> Signature:
        square = _centre_square(image)
        shown = (image, ImageOps.mirror(image), square, ImageOps.mirror(square))
        return cls(
            tuple(phash(v) for v in shown),  # type: ignore[arg-type]
            np.stack([_thumbnail(v) for v in shown]),
        )


def same_picture(a: Signature, b: Signature, max_distance: int = MAX_DISTANCE) -> bool:
    """Whether two signatures are of one picture (see `NearDuplicateFilter`)."""
    for mine, theirs in ((0, 0), (1, 0), (2, 2), (3, 2)):
        near = distance(a.hashes[mine], b.hashes[theirs]) <= max_distance
        if near and float(a.thumbnails[mine] @ b.thumbnails[theirs]) >= MIN_CORRELATION:
            return True
    return False


@dataclass
class NearDuplicateFilter:
    """Keeps pictures that are not near-duplicates of any kept before.

    Two pictures are one when, as they are (or one mirrored), or by their
    central squares, their hashes differ in at most `max_distance` bits AND
    their 32x32 grayscale thumbnails correlate at least MIN_CORRELATION. The
    hash alone confuses unrelated pictures of one layout (two objects cut out
    on white: 6 to 10 bits apart); the correlation alone, two smooth skies.
    Measured on the sources: copies of one picture (another package's, a
    mirror image, a colour variant) are 0 to 8 bits apart and correlate 0.91
    to 1.0; the closest unrelated pairs correlate at most 0.69.
    """

    max_distance: int = MAX_DISTANCE
    _hashes: list[np.ndarray] = field(default_factory=list)  # (4,) uint64 each
    _thumbnails: list[np.ndarray] = field(default_factory=list)  # (4, 1024) each
    _names: list[str] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (dropped, kept one)

    def offer(self, name: str, image: Image.Image) -> bool:
        """True (and remembered) when `image` is new; False when it repeats a kept one."""
        signature = Signature.of(image)
        ours = np.array(signature.hashes, dtype=np.uint64)
        if self._names:
            hashes = np.stack(self._hashes)  # (K, 4)
            thumbnails = np.stack(self._thumbnails)  # (K, 4, 1024)
            for mine, theirs in ((0, 0), (1, 0), (2, 2), (3, 2)):
                bits = np.bitwise_count(hashes[:, theirs] ^ ours[mine])
                near = np.flatnonzero(bits <= self.max_distance)
                if near.size == 0:
                    continue
                correlation = thumbnails[near, theirs] @ signature.thumbnails[mine]
                if correlation.max() >= MIN_CORRELATION:
                    self.dropped.append((name, self._names[int(near[np.argmax(correlation)])]))
                    return False
        self._hashes.append(ours)
        self._thumbnails.append(signature.thumbnails)
        self._names.append(name)
        return True
