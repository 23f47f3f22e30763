"""Self-contained HTML pages of search results: the query and its hits as thumbnails.

Thumbnails of local files are embedded as JPEG data URIs, so a page can be
moved or mailed; hits whose uri is an http(s) URL are linked as they are.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from imgsearch.client import Hit
from imgsearch.common.query_views import describe_view
from imgsearch.filenames import path_from_uri

THUMBNAIL_SIDE = 160


def thumbnail(image: Image.Image, side: int = THUMBNAIL_SIDE) -> Image.Image:
    """An RGB copy that fits in side x side, small images enlarged (Fashion-MNIST is 28 px)."""
    image = ImageOps.exif_transpose(image)
    if image.mode not in ("RGB", "L"):
        background = Image.new("RGB", image.size, "white")
        rgba = image.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        image = background
    image = image.convert("RGB")
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 3 else Image.Resampling.LANCZOS
    return image.resize(size, resample)


def open_image(source: bytes | str | Path) -> Image.Image | None:
    """A decoded image from bytes, a local path or a `file:` URI; None when it cannot be read."""
    try:
        if isinstance(source, bytes):
            image = Image.open(io.BytesIO(source))
        else:
            image = Image.open(path_from_uri(str(source)) if isinstance(source, str) else source)
        image.load()
        return image
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


def data_uri(source: bytes | str | Path) -> str | None:
    """A JPEG data URI of the thumbnail of `source`, or None when it cannot be read."""
    image = open_image(source)
    if image is None:
        return None
    buffer = io.BytesIO()
    thumbnail(image).save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def hit_image_src(uri: str) -> str | None:
    """What an <img> should show for a hit: the URL itself, or a data URI of a local file."""
    if uri.startswith(("http://", "https://")):
        return uri
    if not uri:
        return None
    return data_uri(uri)


@dataclass(frozen=True)
class ResultSection:
    """One query and its hits."""

    title: str
    query_src: str | None  # an <img> src (data URI or URL)
    hits: Sequence[Hit]
    note: str = ""


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; background: #fafafa; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin: 2rem 0 .5rem; }
.row { display: flex; gap: 12px; flex-wrap: wrap; align-items: flex-start; }
figure { margin: 0; width: 164px; background: #fff; border: 1px solid #ddd; padding: 4px; }
figure.query { border: 2px solid #2a6fdb; }
figure img, .missing { width: 160px; height: 160px; object-fit: contain; background: #eee; }
.missing { display: flex; align-items: center; justify-content: center; color: #888; }
figcaption { font-size: .8rem; overflow-wrap: anywhere; }
.score { font-weight: 600; font-variant-numeric: tabular-nums; }
.note { color: #555; font-size: .9rem; }
"""


def _figure(src: str | None, caption: str, css_class: str = "") -> str:
    image = (
        f'<img src="{html.escape(src)}" alt="">' if src else '<div class="missing">no preview</div>'
    )
    class_attr = f' class="{css_class}"' if css_class else ""
    return f"<figure{class_attr}>{image}<figcaption>{caption}</figcaption></figure>"


def render_page(title: str, sections: Sequence[ResultSection], intro_html: str = "") -> str:
    """The whole HTML document."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        intro_html,
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.note:
            parts.append(f'<p class="note">{html.escape(section.note)}</p>')
        figures = [_figure(section.query_src, "query", "query")]
        for rank, hit in enumerate(section.hits, start=1):
            labels = ", ".join(f"{key}={value}" for key, value in sorted(hit.labels.items()))
            view = describe_view(hit.matched_view)
            caption = (
                f'#{rank} <span class="score">{hit.score:.4f}</span><br>'
                f"{html.escape(hit.id[:40])}"
                + (f"<br>{html.escape(labels)}" if labels else "")
                + (f'<br><em class="view">{html.escape(view)}</em>' if view else "")
            )
            figures.append(_figure(hit_image_src(hit.uri), caption))
        if not section.hits:
            figures.append('<p class="note">no hits</p>')
        parts.append(f'<div class="row">{"".join(figures)}</div>')
    parts.append("</body></html>")
    return "\n".join(parts)


@dataclass(frozen=True)
class Tile:
    """One picture of a gallery: an <img> src (None: no preview) and an HTML caption."""

    src: str | None
    caption_html: str


@dataclass(frozen=True)
class Gallery:
    """A titled row of tiles (a page of items, a group of duplicates)."""

    title: str
    tiles: Sequence[Tile]
    note: str = ""


def thumbnail_src(data: bytes, mime_type: str) -> str | None:
    """A data URI of a thumbnail stored by Search; None when there is none."""
    if not data or not mime_type:
        return None
    return f"data:{mime_type};base64," + base64.b64encode(data).decode("ascii")


def item_caption(item_id: str, uri: str, labels: dict[str, str], score: float | None) -> str:
    """The caption of a stored item: score (when given), id, labels."""
    text = ", ".join(f"{key}={value}" for key, value in sorted(labels.items()))
    head = f'<span class="score">{score:.4f}</span><br>' if score is not None else ""
    return (
        head
        + html.escape(item_id[:60])
        + (f"<br>{html.escape(uri[-60:])}" if uri else "")
        + (f"<br>{html.escape(text)}" if text else "")
    )


def render_galleries(title: str, galleries: Sequence[Gallery], intro_html: str = "") -> str:
    """A whole HTML document of galleries (contact sheets of items or duplicate groups)."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        intro_html,
    ]
    for gallery in galleries:
        parts.append(f"<h2>{html.escape(gallery.title)}</h2>")
        if gallery.note:
            parts.append(f'<p class="note">{html.escape(gallery.note)}</p>')
        figures = "".join(_figure(tile.src, tile.caption_html) for tile in gallery.tiles)
        parts.append(f'<div class="row">{figures}</div>')
    parts.append("</body></html>")
    return "\n".join(parts)
