"""`make demo`: the local stack on sample data that exists offline, with visual results.

1. Starts the local stack as `imgsearch up` does (Milvus standalone, Redis,
   Embedder, Search) under `.imgsearch/demo/`, wiped first so every run
   starts from the same state.
2. Writes the sample collection to `demo/images/`: the photos shipped with
   scikit-image (`skimage.data`) and a class-balanced sample of the
   Fashion-MNIST training set (Debian's `dataset-fashion-mnist`), and ingests
   it with the same code as `imgsearch ingest`.
3. Runs example queries: edited copies of photos (cropped, rotated,
   recompressed, mirrored; and hard edits as `imgsearch eval` makes them:
   corner crop, 48-px thumbnail, pasted into another picture, captions,
   letterbox), unseen Fashion-MNIST test images, a label filter
   and "more like this" by id; measures how often the top hit is the
   original photo and the class precision of Fashion-MNIST hits.
4. Writes `demo/results.html` and `demo/contact_sheet.png` and prints the
   address of the web page. Run from a terminal (or with `--keep-running`),
   the stack stays up so the page can be opened, until Ctrl-C; otherwise (or
   with `--no-keep-running`) it stops the stack.
"""

from __future__ import annotations

import argparse
import gzip
import html
import io
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from imgsearch.cli import html as html_page
from imgsearch.cli.ingest import IngestOptions, IngestReport, discover, ingest
from imgsearch.client import Client, Hit, content_id
from imgsearch.common import errors
from imgsearch.common.query_views import describe_view
from imgsearch.datadir import DataDirError, DataDirLock
from imgsearch.stack import LocalStack, StackConfig, StackError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)
# skimage.data images that ship with scikit-image (no download needed).
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "logo",
    "camera",
    "coins",
    "moon",
    "page",
    "text",
    "clock",
    "brick",
    "grass",
    "gravel",
    "cell",
    "horse",
    "checkerboard",
    "microaneurysms",
)
TOP_K = 5


def say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- sample data


def _to_image(array: np.ndarray) -> Image.Image:
    if array.dtype == bool:
        array = np.where(array, 255, 0).astype(np.uint8)
    elif array.dtype != np.uint8:
        low, high = float(array.min()), float(array.max())
        array = ((array - low) / max(high - low, 1e-9) * 255).astype(np.uint8)
    return Image.fromarray(array)


def write_photos(folder: Path) -> list[Path]:
    """The skimage.data photos as PNG files; those that need a download are left out."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PHOTOS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                array = getattr(skimage.data, name)()
        except (AttributeError, ModuleNotFoundError, OSError, ValueError) as exc:
            say(f"  skipping skimage.data.{name}: {exc}")
            continue
        path = folder / f"{name}.png"
        _to_image(array).save(path)
        written.append(path)
    return written


def read_idx(path: Path) -> np.ndarray:
    """A gzip'd IDX file (the MNIST format) as an array."""
    data = gzip.decompress(path.read_bytes())
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fashion(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz")
    return images, labels


def balanced_indices(labels: np.ndarray, per_class: int) -> list[int]:
    """The first `per_class` indices of every class, in dataset order."""
    chosen: list[int] = []
    for cls in range(len(FASHION_CLASSES)):
        chosen.extend(np.flatnonzero(labels == cls)[:per_class].tolist())
    return sorted(chosen)


def write_fashion(folder: Path, per_class: int) -> int:
    """Fashion-MNIST training images as PNGs in one folder per class."""
    images, labels = load_fashion("train")
    for name in FASHION_CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
    indices = balanced_indices(labels, per_class)
    for index in indices:
        Image.fromarray(images[index]).save(
            folder / FASHION_CLASSES[labels[index]] / f"train-{index:05d}.png"
        )
    return len(indices)


# --- queries


def encode(image: Image.Image, fmt: str = "PNG", quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB" if fmt == "JPEG" else image.mode).save(buffer, format=fmt, quality=quality)
    return buffer.getvalue()


@dataclass
class Query:
    """One example query and what came back."""

    title: str
    data: bytes | None  # the encoded query image; None for a search by id
    expect: Callable[[Hit], bool] | None = None  # what a correct hit looks like
    # False when only one hit can be right (the original photo): the others
    # are not mistakes, just the nearest of what remains.
    misses_are_wrong: bool = True
    filter: str = ""
    by_id: str | None = None
    hits: list[Hit] = field(default_factory=list)
    latency_ms: float = 0.0

    @property
    def image(self) -> Image.Image | None:
        return html_page.open_image(self.data) if self.data is not None else None

    @property
    def top_hit_correct(self) -> bool | None:
        if self.expect is None or not self.hits:
            return None
        return self.expect(self.hits[0])


def _crop(image: Image.Image, keep: float) -> Image.Image:
    width, height = image.size
    dx, dy = int(width * (1 - keep) / 2), int(height * (1 - keep) / 2)
    return image.crop((dx, dy, width - dx, height - dy))


def photo_queries(photo_dir: Path) -> list[Query]:
    """Edited copies of indexed photos: the top hit should be the original."""

    def original(name: str) -> Callable[[Hit], bool]:
        return lambda hit: Path(hit.uri).stem == name

    def query(title: str, data: bytes, name: str) -> Query:
        return Query(title, data, original(name), misses_are_wrong=False)

    def load(name: str) -> Image.Image:
        return Image.open(photo_dir / f"{name}.png").convert("RGB")

    return [
        query(
            "astronaut, centre crop keeping 60%",
            encode(_crop(load("astronaut"), 0.6)),
            "astronaut",
        ),
        query(
            "coffee, rotated 20 degrees",
            encode(load("coffee").rotate(20, expand=True, fillcolor="white")),
            "coffee",
        ),
        query(
            "chelsea the cat, JPEG quality 10",
            encode(load("chelsea"), "JPEG", 10),
            "chelsea",
        ),
        query(
            "rocket, mirrored, half size",
            encode(load("rocket").transpose(Image.Transpose.FLIP_LEFT_RIGHT).reduce(2)),
            "rocket",
        ),
        query(
            "camera, crop 75%, rotated 10 degrees, JPEG quality 30",
            encode(_crop(load("camera"), 0.75).rotate(10), "JPEG", 30),
            "camera",
        ),
        query(
            "coins, 40% brighter",
            encode(Image.eval(load("coins"), lambda v: min(255, int(v * 1.4)))),
            "coins",
        ),
    ]


def hard_photo_queries(photo_dir: Path) -> list[Query]:
    """Hard edits (as `imgsearch eval` makes them): the top hit should still be the original."""
    from imgsearch.evaluation import edits

    def load(name: str) -> Image.Image:
        return Image.open(photo_dir / f"{name}.png").convert("RGB")

    backdrop = (
        [load("hubble_deep_field")] if (photo_dir / "hubble_deep_field.png").is_file() else []
    )
    chosen = (
        ("astronaut", "corner_crop_55"),
        ("coffee", "thumbnail_48"),
        ("rocket", "pasted_small"),
        ("chelsea", "text_overlay"),
        ("camera", "letterbox"),
    )
    queries = []
    for index, (name, kind_name) in enumerate(chosen):
        kind = edits.KINDS_BY_NAME[kind_name]
        data = edits.edited_query(load(name), kind, 0, index, backdrop)
        queries.append(
            Query(
                f"{name}, hard edit: {kind.description}",
                data,
                lambda hit, name=name: Path(hit.uri).stem == name,
                misses_are_wrong=False,
            )
        )
    return queries


def fashion_queries(test_images: np.ndarray, test_labels: np.ndarray) -> list[Query]:
    """Unseen Fashion-MNIST test images: hits should be of the same class."""
    queries = []
    for cls in (7, 8, 1, 9):  # sneaker, bag, trouser, ankle boot
        index = int(np.flatnonzero(test_labels == cls)[0])
        name = FASHION_CLASSES[cls]
        queries.append(
            Query(
                f"unseen Fashion-MNIST test image #{index} ({name})",
                encode(Image.fromarray(test_images[index])),
                lambda hit, name=name: hit.labels.get("category") == name,
            )
        )
    index = int(np.flatnonzero(test_labels == 5)[1])
    queries.append(
        Query(
            f'test image #{index} (sandal) with filter category == "sneaker"',
            encode(Image.fromarray(test_images[index])),
            lambda hit: hit.labels.get("category") == "sneaker",
            filter='category == "sneaker"',
        )
    )
    return queries


def class_precision(
    client: Client,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    per_class: int,
    k: int,
) -> tuple[float, int, float]:
    """Mean fraction of the k hits sharing the query's class, over unseen test images.

    Returns (precision, number of queries, mean latency in ms).
    """
    indices = balanced_indices(test_labels, per_class)
    correct = 0
    latency = 0.0
    for index in indices:
        buffer = io.BytesIO()
        Image.fromarray(test_images[index]).save(buffer, format="PNG")
        started = time.perf_counter()
        # No filter: the whole collection (photos too) competes.
        result = client.search(buffer.getvalue(), k=k)
        latency += time.perf_counter() - started
        expected = FASHION_CLASSES[test_labels[index]]
        correct += sum(hit.labels.get("category") == expected for hit in result.hits)
    return correct / (len(indices) * k), len(indices), latency / len(indices) * 1000


# --- outputs


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def contact_sheet(queries: Sequence[Query], path: Path, cell: int = 150) -> None:
    """A PNG grid: one row per query, the query (blue frame) then its hits with scores.

    Green frames mark hits that are the expected result (the original photo,
    or the same Fashion-MNIST class), red frames the others.
    """
    pad, caption_h, title_h = 10, 38, 26
    columns = 1 + TOP_K
    width = pad + columns * (cell + pad)
    row_h = title_h + cell + caption_h + pad
    header_h = 64
    sheet = Image.new("RGB", (width, header_h + len(queries) * row_h + pad), "white")
    draw = ImageDraw.Draw(sheet)
    title_font, text_font, small_font = _font(22), _font(15), _font(13)
    draw.text(
        (pad, 8),
        "imgsearch demo: each row is a query (blue) and its top hits, best first",
        fill="black",
        font=title_font,
    )
    draw.text(
        (pad, 38),
        "green: the expected hit (the original photo, or the query's class);"
        " red: another class; grey: not judged. Numbers are cosine similarities.",
        fill="#444",
        font=small_font,
    )
    for row, query in enumerate(queries):
        top = header_h + row * row_h
        draw.text((pad, top + 4), query.title, fill="#222", font=text_font)
        y = top + title_h
        tiles: list[tuple[Image.Image | None, str, str, str]] = []
        query_image = query.image
        if query_image is None and query.hits:
            query_image = html_page.open_image(query.hits[0].uri)
        tiles.append((query_image, "#2a6fdb", "query", query.filter))
        for rank, hit in enumerate(query.hits[:TOP_K], start=1):
            expected = query.expect(hit) if query.expect else None
            if expected is False and not query.misses_are_wrong:
                expected = None
            color = {True: "#2e9e44", False: "#d23c3c", None: "#999999"}[expected]
            label = hit.labels.get("category") or Path(hit.uri).stem or hit.id[:12]
            tiles.append((html_page.open_image(hit.uri), color, f"#{rank}  {hit.score:.3f}", label))
        for column, (image, color, line1, line2) in enumerate(tiles):
            x = pad + column * (cell + pad)
            draw.rectangle((x - 3, y - 3, x + cell + 2, y + cell + 2), outline=color, width=3)
            if image is not None:
                thumb = html_page.thumbnail(image, cell)
                sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
            draw.text((x, y + cell + 5), line1, fill="#111", font=text_font)
            draw.text((x, y + cell + 21), line2[:24], fill="#555", font=small_font)
    sheet.save(path, optimize=True)


def results_page(
    queries: Sequence[Query], path: Path, summary_lines: Sequence[str], sheet_name: str
) -> None:
    sections = []
    for query in queries:
        if query.data is not None:
            src = html_page.data_uri(query.data)
        else:  # by id: the stored item is the first hit
            src = html_page.hit_image_src(query.hits[0].uri) if query.hits else None
        note = f"{query.latency_ms:.0f} ms"
        if query.filter:
            note += f"; filter: {query.filter}"
        if query.top_hit_correct is not None:
            note += "; top hit is " + (
                "the expected one" if query.top_hit_correct else "NOT the expected one"
            )
        sections.append(html_page.ResultSection(query.title, src, query.hits, note))
    intro = "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in summary_lines) + "</ul>"
    intro += f'<p><img src="{sheet_name}" alt="contact sheet" style="max-width:100%"></p>'
    path.write_text(html_page.render_page("imgsearch demo", sections, intro), encoding="utf-8")


# --- main


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    out = args.out.resolve()
    data_dir = args.data_dir.resolve()
    # Locked before anything is wiped: a second demo must not delete a running one's data.
    try:
        data_lock = DataDirLock.acquire(data_dir)
    except DataDirError as exc:
        say(f"error: {exc}")
        return 2
    try:
        return _run_locked(args, started, out, data_dir, data_lock)
    finally:
        data_lock.release()


def _run_locked(
    args: argparse.Namespace, started: float, out: Path, data_dir: Path, data_lock: DataDirLock
) -> int:
    with_fashion = FASHION_DIR.is_dir()
    if not with_fashion:
        say(
            f"warning: {FASHION_DIR} is missing (install Debian's dataset-fashion-mnist,"
            " as root: `make setup`); going on with the photos alone"
        )
    shutil.rmtree(out, ignore_errors=True)
    _empty_folder(data_dir, keep=data_lock.path)
    images_dir = out / "images"

    say("writing the sample collection to demo/images/")
    photos = write_photos(images_dir / "photos")
    fashion_count = (
        write_fashion(images_dir / "fashion-mnist", args.per_class) if with_fashion else 0
    )
    say(f"  {len(photos)} skimage.data photos, {fashion_count} Fashion-MNIST images")

    say(f"starting the local stack (Milvus, Redis, Embedder, Search) in {data_dir}")
    stack = LocalStack(
        StackConfig(data_dir=data_dir, startup_timeout_s=240),
        announce=lambda message: say(f"  {message}"),
        data_lock=data_lock,
    )
    try:
        addresses = stack.start()
    except StackError as exc:
        say(f"error: the stack did not start: {' '.join(str(exc).split())}")
        return 1
    step = _Step()
    try:
        say(f"  search listening on {addresses.search}; logs in {addresses.log_dir}")
        try:
            with Client(addresses.search, timeout=60) as client:
                code = _run_queries(client, args, images_dir, out, with_fashion, step)
        except Exception as exc:  # noqa: BLE001 -- the demo ends any failure with one line
            say(_failure_line(step.name, exc, addresses.log_dir))
            return 1
        if code == 0 and _keep_running(args):
            say(f"web page: {addresses.web}/ (search by photo, browse, duplicates, upload)")
            say(f"the stack stays up: open {addresses.web}/ in a browser; Ctrl-C stops it")
            _wait_for_ctrl_c()
        else:
            say(
                "the stack stops now, and its web page with it; to keep it up and browse it,"
                " run the demo from a terminal or with --keep-running (DEMO_ARGS=--keep-running)"
            )
        return code
    finally:
        say("stopping the stack")
        stack.stop()
        say(f"done in {time.perf_counter() - started:.0f} s")


@dataclass
class _Step:
    """What the demo is doing now, for the one line that reports a failure."""

    name: str = "connecting to Search"


def _failure_line(step: str, exc: Exception, log_dir: Path) -> str:
    """One line: what failed, why, and what to try."""
    if isinstance(exc, errors.DeadlineExceededError | errors.UnavailableError):
        hint = (
            "the machine may be overloaded or a service stopped: try again when it is"
            f" quieter, and see the logs in {log_dir}"
        )
    elif isinstance(exc, errors.ImgsearchError):
        hint = f"see the logs in {log_dir}"
    else:
        hint = f"this is a bug: please report it with the logs in {log_dir}"
    reason = (
        exc.message if isinstance(exc, errors.ImgsearchError) else f"{type(exc).__name__}: {exc}"
    )
    return f"error: the demo failed while {step}: {' '.join(reason.split())}; {hint}"


def _empty_folder(folder: Path, keep: Path) -> None:
    """Delete everything in `folder` but `keep` (the lock file, which must stay put)."""
    for entry in folder.iterdir():
        if entry == keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _ingest(
    client: Client, folder: Path, labels: dict[str, str], folder_label: str | None
) -> IngestReport:
    report = ingest(
        client,
        discover([str(folder)]),
        IngestOptions(labels=labels, folder_label=folder_label, batch_size=32, concurrency=2),
        warn=lambda message: say(f"  warning: {message}"),
    )
    say(
        f"  {folder.name}: inserted {report.inserted}, skipped {report.skipped},"
        f" failed {len(report.failed)} in {report.elapsed_s:.1f} s"
        f" ({report.images_per_s:.1f} images/s)"
    )
    for failure in report.failed:
        say(f"    failed {failure.path}: {failure.reason}")
    return report


def _run_queries(
    client: Client,
    args: argparse.Namespace,
    images_dir: Path,
    out: Path,
    with_fashion: bool,
    step: _Step,
) -> int:
    step.name = "ingesting the sample collection"
    say("ingesting (the same code as `imgsearch ingest`)")
    reports = {"the photos": _ingest(client, images_dir / "photos", {"source": "skimage"}, None)}
    if with_fashion:
        reports["Fashion-MNIST"] = _ingest(
            client, images_dir / "fashion-mnist", {"source": "fashion-mnist"}, "category"
        )
    stats = client.stats()
    say(
        f"  collection {stats.collection!r}: {stats.item_count} items,"
        f" {stats.dimension}-d {stats.model}, {stats.index_type}/{stats.metric_type}"
    )

    photo_query_list = photo_queries(images_dir / "photos")
    hard_query_list = hard_photo_queries(images_dir / "photos")
    queries = [*photo_query_list, *hard_query_list]
    if with_fashion:
        test_images, test_labels = load_fashion("test")
        queries.extend(fashion_queries(test_images, test_labels))
    queries.append(
        Query(
            "more like this: the stored photo 'chelsea', by id",
            None,
            by_id=_photo_id(images_dir, "chelsea"),
        )
    )
    step.name = "running the example queries"
    say(f"running {len(queries)} example queries")
    for query in queries:
        begin = time.perf_counter()
        if query.by_id is not None:
            result = client.search(id=query.by_id, k=TOP_K)
        else:
            result = client.search(query.data, k=TOP_K, filter=query.filter)
        query.latency_ms = (time.perf_counter() - begin) * 1000
        query.hits = result.hits
        top = query.hits[0] if query.hits else None
        verdict = {True: "expected", False: "UNEXPECTED", None: ""}[query.top_hit_correct]
        if top is None:
            described = "no hits"
        else:
            category = top.labels.get("category")
            label = f" ({category})" if category else ""
            described = f"{Path(top.uri).stem}{label} {top.score:.3f}"
            if top.matched_view:  # found through a view of the query (inset, straightened)
                described += f" ({describe_view(top.matched_view)})"
        say(f"  {query.title}: top hit {described} {verdict}")

    photo_checks = [query.top_hit_correct for query in photo_query_list]
    hard_checks = [query.top_hit_correct for query in hard_query_list]
    inserted = sum(report.inserted for report in reports.values())
    elapsed = sum(report.elapsed_s for report in reports.values())
    largest, largest_report = list(reports.items())[-1]
    summary = [
        f"Collection: {stats.item_count} images, model {stats.model} ({stats.dimension}-d),"
        f" index {stats.index_type}, metric {stats.metric_type}.",
        f"Ingest: {inserted} images in {elapsed:.1f} s"
        f" ({largest_report.images_per_s:.1f} images/s for {largest}).",
        f"Edited photos: the original is the top hit for"
        f" {sum(bool(check) for check in photo_checks)} of {len(photo_checks)} easy edits and"
        f" {sum(bool(check) for check in hard_checks)} of {len(hard_checks)} hard edits"
        " (cropped to a corner, a 48-px thumbnail, pasted into another picture, captioned,"
        " letterboxed).",
    ]
    if with_fashion:
        step.name = "measuring Fashion-MNIST class precision"
        say(
            f"measuring Fashion-MNIST class precision@{TOP_K}"
            f" on {args.precision_per_class * 10} unseen test images"
        )
        precision, query_count, latency_ms = class_precision(
            client, test_images, test_labels, args.precision_per_class, TOP_K
        )
        summary.append(
            f"Fashion-MNIST: {precision:.1%} of the top-{TOP_K} hits share the class of the"
            f" query, over {query_count} unseen test images"
            f" ({latency_ms:.0f} ms mean search latency, end to end)."
        )
    for line in summary:
        say(line)

    step.name = "writing the results page"
    sheet_path = out / "contact_sheet.png"
    html_path = out / "results.html"
    contact_sheet(queries, sheet_path)
    results_page(queries, html_path, summary, sheet_path.name)
    say(f"wrote {html_path}")
    say(f"wrote {sheet_path}")
    return 0


def _keep_running(args: argparse.Namespace) -> bool:
    """--keep-running / --no-keep-running, else: only when run from a terminal."""
    if args.keep_running is not None:
        return bool(args.keep_running)
    return sys.stdin.isatty() and sys.stdout.isatty()


def _wait_for_ctrl_c() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print(flush=True)


def _photo_id(images_dir: Path, name: str) -> str:
    """The id of a stored photo (its content hash, as `imgsearch ingest` assigns)."""
    return content_id((images_dir / "photos" / f"{name}.png").read_bytes())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imgsearch.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=Path("demo"), help="where results go")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(".imgsearch/demo"), help="the stack's data (wiped)"
    )
    parser.add_argument(
        "--per-class", type=int, default=250, help="Fashion-MNIST training images per class"
    )
    parser.add_argument(
        "--precision-per-class", type=int, default=10, help="test images per class for precision"
    )
    parser.add_argument(
        "--keep-running",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the stack (and its web page) up until Ctrl-C; default: when run in a terminal",
    )
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        say("interrupted: the stack was stopped")
        return 130
    except Exception as exc:  # noqa: BLE001 -- one line, never a traceback (make demo)
        hint = (
            "check that --out and --data-dir are writable folders"
            if isinstance(exc, OSError)
            else "please report it, with this line"
        )
        say(f"error: the demo failed: {type(exc).__name__}: {' '.join(str(exc).split())}; {hint}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
