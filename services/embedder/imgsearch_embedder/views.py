"""Query views: what else an image query should be searched as, besides the whole image.

Two edits of a picture defeat one global descriptor, because most of the
query's pixels are not the picture's:

- `inset`: the picture pasted into another one, as in a screenshot of a web
  page or a chat. Found as an axis-aligned rectangle whose four sides are
  straight edges: on a probe of at most `_INSET_PROBE` px, edges are local
  maxima (non-maximum suppression across the line) of the colour difference
  over 2 px; candidate lines are the columns and rows with the most straight
  runs of `2 * _RUN + 1` edge pixels; every rectangle of candidate lines is
  scored by the share of its weakest side that is edge, in one vectorised
  pass. Textures (foliage, gravel, colonnades) have edges everywhere but not
  at one column in row after row, which the suppression tells apart. All four
  sides are needed: an inset touching the image's edge is not found.
- `straightened`: the picture rotated with its canvas grown, so flat
  triangles fill the corners. Found by fitting the canvas of a picture
  rotated by each angle (a 1-degree grid, then a finer one around the best)
  to the probe: the predicted corner triangles must be of the corners' flat
  colour, and a band just inside the picture's outline must not be. Within
  half a degree on photos; dark content along the outline reads as fill and
  can skew it by a few degrees, which the descriptor tolerates.

- `uncaptioned`: the picture with captions over it, in outlined letters (white
  with a dark outline, or the reverse, as on memes). Found when the fill of
  such strokes (light pixels with dark ones at most `_LIGHT_STROKE` px away on
  both sides, across or down, or dark ones with light ones `_DARK_STROKE` px
  away) is at least `MIN_CAPTION_SHARE` of a probe of at most `_CAPTION_PROBE`
  px; pixels of one extreme next to the
  other, grown a little, are then painted over from their surroundings
  (normalised box filtering at two scales, the finer where it has enough
  unmasked pixels).

Measured on the evaluation's sets (`make eval`, docs/evaluation.md): an inset
is found in 92% of screenshot queries at score 0.78, and in 4-11% of other
edits of whole photos; a rotation in 84% of rotated copies and in none of
2,300 whole pictures. A false view costs a forward pass, not a wrong answer:
Search scores an item by the best of its whole-image similarity and its views'
similarities less a margin.

The detectors cost about 5 ms a query on average on one core (mean over 540 of
the evaluation's queries, 30 per kind: inset 1.3 ms, rotation 1.8 ms,
captions 1.7 ms; the slowest, a rotation fitted and captions painted over,
about 20 ms), beside the query's forward pass (the whole image is queued for
the model first). Window sums are differences of running sums, painting reads
a summed-area table only where masked, and per-channel work is elementwise.

Each view is a picture (`View.image`) the Preprocessor then turns into model
input like any image. The work is bounded by the probes' sizes; the
straightened view is rotated from a copy of at most `_VIEW_SIDE` px.
`find_views` first shrinks a picture larger than `_WORK_SIDE` px a side once,
by a whole factor (the inset is cut from that), and no detector copies a
picture at full size:
measured under load on a 7000 x 5700 (40 MP, the Embedder's default limit)
noise PNG, each detector took 150-170 ms, most of it copying the picture
before shrinking it.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "MAX_VIEWS_PER_IMAGE",
    "MIN_VIEW_SIDE",
    "View",
    "detectors_identity",
    "find_captions",
    "find_inset",
    "find_rotation",
    "find_views",
]

_log = logging.getLogger(__name__)


def detectors_identity() -> str:
    """16 hex digits of the SHA-256 of this module's code (GetModelResponse.query_views).

    The detectors are all here (they import only numpy and Pillow), so any change to
    them (a threshold, a probe size, a new kind) changes the identity, and Search's
    cached views of the old detectors stop being read.
    """
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


# --- inset
_INSET_PROBE = 256
_EDGE_LEVEL = 16  # colour difference over 2 px (0-255, any channel) that can be an edge
_RUN = 6  # a candidate line has straight runs of 2 * _RUN + 1 edge pixels
_CANDIDATES = 14  # candidate columns and rows
MIN_INSET_SIDE = 0.2  # of the image's width / height
MAX_INSET_AREA = 0.8  # of the image's area: larger is the image itself, less its margins
# Share of the weakest side that is edge. 0.78, measured on the evaluation's queries (150
# per kind): screenshots' insets found 0.94 at 0.7, 0.92 at 0.78, 0.90 at 0.8; false
# insets in edited whole photos 15-32% at 0.7, 4-11% at 0.78 (each costs a forward pass).
MIN_INSET_SCORE = 0.78
# --- rotation
_ROTATION_PROBE = 160
_FLAT_TOLERANCE = 40  # per channel, from the corners' colour
MIN_ROTATION_DEGREES = 3.0  # below it a picture is upright for the descriptor
MIN_FILL = 0.9  # share of the predicted corner triangles in the corners' colour
MIN_BAND = 0.8  # share of the band inside the outline that is not
# --- captions
_CAPTION_PROBE = 384
_LIGHT, _DARK = 235, 40  # every channel at least / at most: a caption's fill and outline
_OUTLINE = 2  # px (on the probe): a light pixel this close to a dark one is lettering
_COVER = 4  # px the lettering is grown by before it is painted over
# px (on the probe): a letter's fill has its outline this close on both sides. White
# letters outlined in black (most memes, in bold fonts such as Impact) have strokes up to
# about 12 px wide on the probe; the reverse is rarer, and dark pixels between light ones
# are common in photos (branches against the sky), so it is held to thinner strokes.
_LIGHT_STROKE, _DARK_STROKE = 6, 3
# Share of the probe's pixels that are such strokes' fill. 0.005, measured on 960 of
# the evaluation's queries of edit kinds without captions, and on 26 photos (6 sample
# photos, 20 of the gallery's) captioned in 2 lines 1/6 to 1/14 of the height tall:
# false views 5.2% (silhouettes, black-and-white graphics); bold white-on-black captions
# (DejaVu Sans Bold, FreeSans Bold) found in 92-100%; Pillow's default font in 100% down
# to 1/10 of the height, 46% at 1/14; reversed colours 91%. With 3 px either way: false
# views 1.8%, but bold captions found in only 27-81%. The rule before (a light pixel
# merely next to a dark one, 1% of the probe): false views in 15-20% of edited plain
# photos (bright sky against dark branches, stars, coins' rims).
MIN_CAPTION_SHARE = 0.005
_VIEW_SIDE = 320  # the picture inside stays larger than the model input (224)
# The most views of one image (one per detector): a model input each, besides the image's.
MAX_VIEWS_PER_IMAGE = 3
# Smaller pictures have no views: an inset of MIN_INSET_SIDE of them would be under 13 px,
# captions would be illegible, and the thumbnail branch of the descriptor is what matches
# them. Measured: Fashion-MNIST's 28-px pictures (light garments on black) had caption
# views in 47% and straightened ones in 13%, the evaluation's 48-px thumbnails views in
# 7%: forward passes for nothing. The smallest pictures the evaluation finds through a
# view are 108 px (captioned) and 139 px (rotated) on their shorter side.
MIN_VIEW_SIDE = 64
# find_views works on a copy of at most this many px a side: an inset of
# MIN_INSET_SIDE of it still has more pixels than the model input.
_WORK_SIDE = 2048


@dataclass(frozen=True)
class View:
    """A view of an image: its kind, where it lies, the detector's confidence, its pixels.

    `box`: left, top, right, bottom as fractions (0-1) of the image's width and height.
    `angle_degrees`: for "straightened", the angle the picture had been rotated by
    (counter-clockwise positive, as Pillow's `rotate`); 0 otherwise. `score`: 0-1.
    """

    kind: str
    box: tuple[float, float, float, float]
    angle_degrees: float
    score: float
    image: Image.Image


def find_views(image: Image.Image) -> list[View]:
    """The views of an RGB image worth searching besides it, most confident first (0-3).

    Never raises for a picture: a view is an extra, so a detector that fails on
    one (a bug, an unforeseen shape) is logged and skipped, and the query is
    still answered with its whole-image vector and the other views. So is a
    view that breaks `View`'s contract (`_malformed`: a box outside 0-1 or
    empty, a score that is not a number in 0-1, an empty picture).
    An image less than MIN_VIEW_SIDE px on a side has none.
    """
    if min(image.size) < MIN_VIEW_SIDE:
        return []
    # By a whole factor: block averages, four times as fast as resampling (17 vs 75 ms
    # from 20 MP, under load), and any size under _WORK_SIDE will do.
    factor = math.ceil(max(image.size) / _WORK_SIDE)
    if factor > 1:
        image = image.reduce(factor)
    found = []
    for detector in (find_inset, find_rotation, find_captions):
        size = "x".join(map(str, image.size))
        try:
            view = detector(image)
        except Exception:  # noqa: BLE001 -- a failed detector costs its view, not the query
            _log.exception("query view detector %s failed on a %s image", detector.__name__, size)
            continue
        if view is None:
            continue
        problem = _malformed(view)
        if problem:
            _log.error("query view detector %s made a malformed view of a %s image (%s);"
                       " skipped", detector.__name__, size, problem)  # fmt: skip
            continue
        found.append(view)
    return sorted(found, key=lambda view: -view.score)


def _malformed(view: View) -> str:
    """What breaks `View`'s contract in `view` ("" when nothing)."""
    left, top, right, bottom = view.box
    if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):  # also False for NaN
        return f"box {view.box}"
    if not 0 <= view.score <= 1:
        return f"score {view.score}"
    if not math.isfinite(view.angle_degrees):
        return f"angle {view.angle_degrees}"
    if view.image.width < 1 or view.image.height < 1:
        return f"picture of {view.image.width}x{view.image.height} px"
    return ""


def _shrunk(image: Image.Image, side: int) -> Image.Image:
    """`image` shrunk (area average) to at most `side` px a side, sized as Pillow's
    `thumbnail` sizes it; `image` itself when it fits (never to be changed in place).

    Unlike `thumbnail`, it needs no copy of the picture first: on a 40 MP picture
    the copy took four times as long as the shrinking (111 vs 26 ms, under load).
    """
    width, height = image.size
    if width <= side and height <= side:
        return image
    aspect = width / height

    def closest(number: float, error: Callable[[int], float]) -> int:
        return max(min(math.floor(number), math.ceil(number), key=error), 1)

    if aspect <= 1:
        size = (closest(side * aspect, lambda n: abs(aspect - n / side)), side)
    else:
        size = (side, closest(side / aspect, lambda n: abs(aspect - side / n) if n else 0))
    return image.resize(size, Image.Resampling.BOX, reducing_gap=2.0)


def _probe(image: Image.Image, side: int) -> np.ndarray:
    """(h, w, 3) int16 pixels of `image` shrunk (area average) to at most `side` px a side."""
    return np.asarray(_shrunk(image, side).convert("RGB"), dtype=np.int16)


def _channel_max(values: np.ndarray) -> np.ndarray:
    """The largest of the three channels of (h, w, 3) `values`: (h, w). Elementwise, several
    times as fast as numpy's reduction over a last axis of 3."""
    return np.maximum(np.maximum(values[:, :, 0], values[:, :, 1]), values[:, :, 2])


def _window_sum(values: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Sum of `values` over a window of 2 * radius + 1 along `axis` (clipped at the ends).

    Differences of a running sum, padded so each window is two slices (no gathers):
    float64 sums for floats, int32 for integers and booleans.
    """
    n = values.shape[axis]
    dtype = np.float64 if values.dtype.kind == "f" else np.int32

    def along(start: int | None, stop: int | None) -> tuple[slice, ...]:
        return tuple(slice(start, stop) if a == axis else slice(None) for a in range(values.ndim))

    # total[radius + 1 + i] = sum of values[: i + 1]; zeros before it, the full sum after.
    shape = list(values.shape)
    shape[axis] = n + 1 + 2 * radius
    total = np.zeros(shape, dtype)
    np.cumsum(values, axis=axis, dtype=dtype, out=total[along(radius + 1, radius + 1 + n)])
    total[along(radius + 1 + n, None)] = total[along(radius + n, radius + n + 1)]
    return total[along(2 * radius + 1, None)] - total[along(0, n)]


def _line_edges(pixels: np.ndarray, axis: int) -> np.ndarray:
    """Edge pixels of lines across `axis` (axis 1: vertical lines), 1 px of wobble allowed."""
    diff = np.zeros(pixels.shape[:2], np.int16)
    if axis == 1:
        diff[:, 1:-1] = _channel_max(np.abs(pixels[:, 2:] - pixels[:, :-2]))
    else:
        diff[1:-1] = _channel_max(np.abs(pixels[2:] - pixels[:-2]))
    local_max = np.maximum(np.roll(diff, 1, axis=axis), np.roll(diff, -1, axis=axis))
    edges = (diff > _EDGE_LEVEL) & (diff >= local_max)
    wobble = edges.copy()
    if axis == 1:
        wobble[:, :-1] |= edges[:, 1:]
    else:
        wobble[:-1] |= edges[1:]
    return wobble


def _candidate_lines(strength: np.ndarray) -> np.ndarray:
    """Up to _CANDIDATES positions of the strongest lines, at least 3 px apart, sorted."""
    chosen: list[int] = []
    for position in np.argsort(-strength, kind="stable"):
        if strength[position] == 0 or len(chosen) == _CANDIDATES:
            break
        if all(abs(int(position) - other) > 2 for other in chosen):
            chosen.append(int(position))
    return np.array(sorted(chosen), dtype=np.int64)


def _side_cover(cumulative: np.ndarray, at: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Share of edge pixels along line `at[a]` between starts[s] and starts[e]: (A, S, S)."""
    values = cumulative[starts[None, :], at[:, None]]  # (A, S)
    span = starts[None, :] - starts[:, None]  # (S, S): end - start
    with np.errstate(divide="ignore", invalid="ignore"):
        return (values[:, None, :] - values[:, :, None]) / np.where(span > 0, span, 1)


def find_inset(image: Image.Image) -> View | None:
    """The rectangle of a picture pasted into `image` (four straight edges), or None."""
    pixels = _probe(image, _INSET_PROBE)
    height, width = pixels.shape[:2]
    if height < 32 or width < 32:
        return None
    vertical, horizontal = _line_edges(pixels, 1), _line_edges(pixels, 0)
    full = 2 * _RUN + 1
    xs = _candidate_lines((_window_sum(vertical, _RUN, 0) >= full).sum(axis=0))
    ys = _candidate_lines((_window_sum(horizontal, _RUN, 1) >= full).sum(axis=1))
    if len(xs) < 2 or len(ys) < 2:
        return None
    down = np.concatenate([np.zeros((1, width), np.int32), vertical.cumsum(0, dtype=np.int32)])
    across = np.concatenate(
        [np.zeros((height, 1), np.int32), horizontal.cumsum(1, dtype=np.int32)], axis=1
    )
    cols = _side_cover(down, xs, ys)  # (X, Y0, Y1): column x between rows y0 and y1
    rows = _side_cover(across.T, ys, xs)  # (Y, X0, X1): row y between columns x0 and x1
    # score[x0, x1, y0, y1]: the weakest of the four sides
    by_rows = rows.transpose(1, 2, 0)  # (X0, X1, Y)
    score = np.minimum(
        np.minimum(cols[:, None, :, :], cols[None, :, :, :]),
        np.minimum(by_rows[:, :, :, None], by_rows[:, :, None, :]),
    )
    w = (xs[None, :] - xs[:, None]).astype(np.float64)  # (X0, X1)
    h = (ys[None, :] - ys[:, None]).astype(np.float64)  # (Y0, Y1)
    valid = (
        (w[:, :, None, None] >= MIN_INSET_SIDE * width)
        & (h[None, None, :, :] >= MIN_INSET_SIDE * height)
        & (w[:, :, None, None] * h[None, None, :, :] <= MAX_INSET_AREA * width * height)
    )
    score = np.where(valid, score, -1.0)
    best = np.unravel_index(int(np.argmax(score)), score.shape)
    if score[best] < MIN_INSET_SCORE:
        return None
    i0, i1, j0, j1 = (int(v) for v in best)
    box = (
        float(xs[i0] / width),
        float(ys[j0] / height),
        float(xs[i1] / width),
        float(ys[j1] / height),
    )
    pixel_box = (
        round(box[0] * image.width),
        round(box[1] * image.height),
        round(box[2] * image.width),
        round(box[3] * image.height),
    )
    return View("inset", box, 0.0, float(score[best]), image.crop(pixel_box))


def _flat_corners(pixels: np.ndarray, size: int = 3) -> np.ndarray | None:
    """The colour shared by the four corners, or None when they differ or are not flat."""
    corners = [
        pixels[:size, :size],
        pixels[:size, -size:],
        pixels[-size:, :size],
        pixels[-size:, -size:],
    ]
    colour = np.mean([corner.reshape(-1, 3).mean(axis=0) for corner in corners], axis=0)
    spread = max(np.abs(corner.reshape(-1, 3) - colour).max() for corner in corners)
    return colour if spread <= _FLAT_TOLERANCE else None


def _best_angle(
    is_fill: np.ndarray, angles: np.ndarray, margin: float
) -> tuple[float, float, float, float] | None:
    """(fit, degrees, width, height) of the angle whose grown canvas best matches, or None.

    For each angle (vectorised over all of them): the size of the picture whose
    canvas, rotated by it, is the probe. An angle fits when at least MIN_FILL
    of the predicted corners is of the fill colour and at least MIN_BAND of a
    band inside the picture's outline is not; of those, the best explains the
    most pixels (fit: the share of fill outside plus picture inside, 0-1).
    Pixels within `margin` of the outline (blends of both) count for neither.
    Width and height are the picture's, as fractions of the canvas'. None when
    no angle fits.
    """
    angles = angles[np.abs(angles) >= MIN_ROTATION_DEGREES]
    height, width = is_fill.shape
    # float32 throughout: the (angles, h, w) arrays are most of the detector's time.
    t = np.radians(angles).astype(np.float32)[:, None, None]
    cos, sin = np.cos(t), np.sin(t)
    c, s = np.abs(cos), np.abs(sin)
    det = c * c - s * s
    safe = np.where(np.abs(det) < 0.05, np.float32(1), det)  # near 45 degrees: ill-defined size
    inner_w, inner_h = (width * c - height * s) / safe, (height * c - width * s) / safe
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xs -= (width - 1) / 2
    ys -= (height - 1) / 2
    du = np.abs(cos * xs - sin * ys) - inner_w / 2
    dv = np.abs(sin * xs + cos * ys) - inner_h / 2
    outside = (du > margin) | (dv > margin)
    inside = (du < -margin) & (dv < -margin)
    band = inside & ((du > -4) | (dv > -4))

    def count(mask: np.ndarray) -> np.ndarray:
        return np.count_nonzero(mask, axis=(1, 2))

    n_out, n_in, n_band = count(outside), count(inside), count(band)
    fill_out = count(outside & is_fill)
    picture_in = n_in - count(inside & is_fill)
    with np.errstate(divide="ignore", invalid="ignore"):
        fill = fill_out / n_out
        edge = 1.0 - count(band & is_fill) / n_band
        # The share of the probe the angle's canvas explains: chooses between angles.
        agreement = (fill_out + picture_in) / (n_out + n_in)
    usable = (
        (np.abs(det[:, 0, 0]) >= 0.05)
        & (inner_w[:, 0, 0] >= 0.2 * width)
        & (inner_h[:, 0, 0] >= 0.2 * height)
        & (n_out >= 0.02 * height * width)
        & (n_band > 0)
        & (fill >= MIN_FILL)
        & (edge >= MIN_BAND)
    )
    if not usable.any():
        return None
    fit = np.where(usable, agreement, -1.0)
    best = int(np.argmax(fit))
    return (
        float(fit[best]),
        float(angles[best]),
        float(inner_w[best, 0, 0] / width),
        float(inner_h[best, 0, 0] / height),
    )


def find_rotation(image: Image.Image) -> View | None:
    """The picture inside `image` when it is a rotated copy with its canvas grown, or None."""
    coarse = _probe(image, _ROTATION_PROBE // 2)
    if min(coarse.shape[:2]) < 16:
        return None
    colour = _flat_corners(coarse)
    if colour is None:
        return None
    is_fill = _channel_max(np.abs(coarse - colour)) <= _FLAT_TOLERANCE
    found = _best_angle(is_fill, np.arange(-45.0, 45.5, 1.0), margin=1.5)
    if found is None:
        return None
    fine = _probe(image, _ROTATION_PROBE)
    is_fill = _channel_max(np.abs(fine - colour)) <= _FLAT_TOLERANCE
    refined = _best_angle(is_fill, found[1] + np.arange(-2.0, 2.1, 0.25), margin=0.75)
    fit, degrees, inner_w, inner_h = refined or found
    return View("straightened", (0.0, 0.0, 1.0, 1.0), degrees, fit, _straighten(
        image, degrees, inner_w, inner_h
    ))  # fmt: skip


def _straighten(image: Image.Image, degrees: float, inner_w: float, inner_h: float) -> Image.Image:
    """`image` rotated back by `degrees` and cropped to the picture (sizes: canvas fractions)."""
    small = _shrunk(image, _VIEW_SIDE)
    turned = small.rotate(-degrees, Image.Resampling.BILINEAR, expand=True)
    width, height = inner_w * small.width, inner_h * small.height
    left, top = (turned.width - width) / 2, (turned.height - height) / 2
    # One pixel in from the outline: the edge pixels are a blend with the fill.
    return turned.crop(
        (round(left + 1), round(top + 1), round(left + width - 1), round(top + height - 1))
    )


def _integral(values: np.ndarray) -> np.ndarray:
    """Summed-area table of integer `values` (h, w, ...): (h + 1, w + 1, ...) int64, zeros first."""
    height, width = values.shape[:2]
    total = np.zeros((height + 1, width + 1, *values.shape[2:]), np.int64)
    np.cumsum(values, axis=0, dtype=np.int64, out=total[1:, 1:])
    np.cumsum(total[1:, 1:], axis=1, out=total[1:, 1:])
    return total


def _box_sums_at(
    integral: np.ndarray, rows: np.ndarray, cols: np.ndarray, radius: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sums over the (2 radius + 1)^2 window around pixels (rows[i], cols[i]), clipped at
    the edges, from their summed-area table (`_integral`); and each window's pixel count."""
    height, width = integral.shape[0] - 1, integral.shape[1] - 1
    top, bottom = np.maximum(rows - radius, 0), np.minimum(rows + radius + 1, height)
    left, right = np.maximum(cols - radius, 0), np.minimum(cols + radius + 1, width)
    sums = integral[bottom, right] - integral[bottom, left]
    sums -= integral[top, right] - integral[top, left]
    return sums, (bottom - top) * (right - left)


def _near(mask: np.ndarray, radius: int, axis: int, step: int) -> np.ndarray:
    """Pixels with a `mask` pixel at most `radius` px away in one direction: along `axis`,
    towards higher indices (step 1) or lower ones (step -1)."""
    near = np.zeros_like(mask)
    for shift in range(1, radius + 1):
        ahead = [slice(None), slice(None)]
        behind = [slice(None), slice(None)]
        ahead[axis], behind[axis] = (
            (slice(None, -shift), slice(shift, None))
            if step > 0
            else (slice(shift, None), slice(None, -shift))
        )
        near[tuple(ahead)] |= mask[tuple(behind)]
    return near


def _enclosed(inner: np.ndarray, outer: np.ndarray, radius: int) -> np.ndarray:
    """`inner` pixels with an `outer` pixel at most `radius` px away on both sides, across
    or down: the fill of a stroke drawn inside an outline."""
    across = _near(outer, radius, 1, 1) & _near(outer, radius, 1, -1)
    down = _near(outer, radius, 0, 1) & _near(outer, radius, 0, -1)
    return inner & (across | down)


def _grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """`mask` dilated by a square of 2 radius + 1 (separable: a band across, then down)."""
    across = mask | _near(mask, radius, 1, 1) | _near(mask, radius, 1, -1)
    return across | _near(across, radius, 0, 1) | _near(across, radius, 0, -1)


def _paint_over(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`pixels` (h, w, 3) with `mask`ed ones replaced by the mean of unmasked ones around.

    Normalised box filtering at a fine and a coarse radius: each masked pixel
    takes the finest whose window is at least 15% unmasked. Window sums come from
    summed-area tables of the kept pixels and of the mask, read only where masked.
    """
    height, width = mask.shape
    keep = ~mask
    weights, sums = _integral(keep), _integral(pixels * keep[:, :, None])
    out = pixels.copy()
    rows, cols = np.nonzero(mask)
    for radius in (max(3, width // 40), max(6, height // 6)):
        weight, area = _box_sums_at(weights, rows, cols, radius)
        usable = weight > 0.15 * area
        total, _ = _box_sums_at(sums, rows[usable], cols[usable], radius)
        mean = total / weight[usable][:, None]
        out[rows[usable], cols[usable]] = np.clip(mean, 0, 255).astype(np.int16)
        rows, cols = rows[~usable], cols[~usable]
    return np.clip(out, 0, 255).astype(np.uint8)


def find_captions(image: Image.Image) -> View | None:
    """`image` with outlined caption lettering painted over, or None when it has none."""
    pixels = _probe(image, _CAPTION_PROBE)
    if min(pixels.shape[:2]) < 16:
        return None
    red, green, blue = pixels[:, :, 0], pixels[:, :, 1], pixels[:, :, 2]
    light = (red >= _LIGHT) & (green >= _LIGHT) & (blue >= _LIGHT)
    dark = (red <= _DARK) & (green <= _DARK) & (blue <= _DARK)
    fill = _enclosed(light, dark, _LIGHT_STROKE) | _enclosed(dark, light, _DARK_STROKE)
    strokes = float(fill.mean())
    if strokes < MIN_CAPTION_SHARE:
        return None
    lettering = (light & _grow(dark, _OUTLINE)) | (dark & _grow(light, _OUTLINE))
    mask = _grow(lettering, _COVER)
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:  # strokes' fill with no extreme within _OUTLINE px: nothing to paint
        return None
    height, width = mask.shape
    box = (
        float(cols.min() / width),
        float(rows.min() / height),
        float((cols.max() + 1) / width),
        float((rows.max() + 1) / height),
    )
    score = min(1.0, strokes / (2 * MIN_CAPTION_SHARE))
    return View("uncaptioned", box, 0.0, score, Image.fromarray(_paint_over(pixels, mask)))
