"""`imgsearch ingest`: find image files, skip what is already indexed, insert the rest.

Resumable and idempotent: before sending a batch, the ids are looked up with
Get, and an item whose stored content hash equals the file's hash is skipped
without being re-embedded. A changed file under the same id (with
`--id-from path`) is inserted again, replacing the stored one. A skipped item
keeps its stored labels and uri; with `update` (`--update`), an item whose
stored labels or uri differ from this run's is inserted again (an upsert) so
the new ones apply. The report counts the skipped items whose labels or uri
differ (`stale`), so the command can say so.

What is opened: only regular files (and links to them). FIFOs, sockets,
devices, broken links and link loops are reported as skipped without being
opened, so none can block a run or touch a device. Symbolic links to folders
are followed; each folder is walked once, so a loop (or a second link to a
folder already included) is cut with a warning.

Names: uris, `--id-from path` ids and `--folder-label` values are derived
from file names with the reversible encoding of `imgsearch.filenames` (a
`file:` URI with percent-encoded bytes; ids and labels with `%`, control
characters and non-UTF-8 bytes percent-encoded), so any file name can be
indexed and printed. One bad file never stops a run: it is listed with its
reason, and a request the service refuses as a whole is retried file by file.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from imgsearch.client import Client, ItemInput
from imgsearch.common import errors
from imgsearch.filenames import (
    MAX_ID_BYTES,
    MAX_LABEL_VALUE_BYTES,
    MAX_URI_BYTES,
    escape_name,
    file_uri,
    utf8_len,
)

IdFrom = Literal["hash", "path"]

# Signatures of the formats the Embedder decodes (see embedder.proto).
_MAGIC: tuple[tuple[int, bytes], ...] = (
    (0, b"\xff\xd8\xff"),  # JPEG
    (0, b"\x89PNG\r\n\x1a\n"),  # PNG
    (0, b"GIF87a"),
    (0, b"GIF89a"),
    (0, b"BM"),  # BMP
    (0, b"II*\x00"),  # TIFF, little-endian
    (0, b"MM\x00*"),  # TIFF, big-endian
    (8, b"WEBP"),  # RIFF....WEBP
)


def looks_like_image(header: bytes) -> bool:
    """True when the first bytes of a file are those of a supported image format."""
    if header[8:12] == b"WEBP" and not header.startswith(b"RIFF"):
        return False
    return any(header[offset : offset + len(magic)] == magic for offset, magic in _MAGIC)


class PathNotFoundError(Exception):
    """A path argument names nothing (no file, no folder, no glob match)."""


class _Walk:
    """Walks folders, each (device, inode) once; real folders before symbolic links to folders.

    Links to folders are followed after the real trees of every argument, so
    a folder reachable both ways is named by its real path, and a link to a
    folder already walked (a loop, or a second way in) is cut with a warning.
    """

    def __init__(self, warn: Callable[[str], None]) -> None:
        self.warn = warn
        self.found: dict[Path, None] = {}
        self.visited: dict[tuple[int, int], Path] = {}
        self.links: deque[Path] = deque()

    def add(self, path: Path) -> None:
        if path.is_dir():
            self.enter(path)
        else:
            self.found.setdefault(path, None)

    def follow_links(self) -> None:
        while self.links:
            self.enter(self.links.popleft())

    def enter(self, folder: Path) -> None:
        """Walk `folder` unless the same folder was walked already."""
        try:
            info = folder.stat()
        except OSError as exc:
            self.warn(f"skipping folder {escape_name(folder)}: {exc.strerror or exc}")
            return
        key = (info.st_dev, info.st_ino)
        first = self.visited.get(key)
        if first is not None:
            if folder.is_symlink():
                self.warn(
                    f"not following link {escape_name(folder)}: it leads to"
                    f" {escape_name(first)}, which is already included"
                )
            return
        self.visited[key] = folder
        self._walk(folder)

    def _walk(self, folder: Path) -> None:
        """Add the files of `folder` (sorted), then walk its real sub-folders; queue links."""
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda entry: os.fsencode(entry.name))
        except OSError as exc:
            self.warn(f"skipping folder {escape_name(folder)}: {exc.strerror or exc}")
            return
        subfolders: list[Path] = []
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows symbolic links
                is_link = entry.is_symlink()
            except OSError:
                is_dir = is_link = False
            if not is_dir:
                self.found.setdefault(path, None)
            elif is_link:
                self.links.append(path)
            else:
                subfolders.append(path)
        for path in subfolders:
            self.enter(path)


def discover(
    paths: Sequence[str], warn: Callable[[str], None] = lambda message: None
) -> list[Path]:
    """Files named by `paths`: folders recursively, files, and glob patterns; unique, in order.

    Folders are walked in sorted order (files first, then sub-folders);
    symbolic links to folders are followed once the real trees are walked,
    each folder once (see `_Walk`). Every non-folder is returned, special
    files and broken links included: ingest reports them as skipped without
    opening them.
    """
    walk = _Walk(warn)
    for arg in paths:
        path = Path(arg)
        if os.path.lexists(path):
            walk.add(path)
        elif glob.has_magic(arg):
            matches = sorted(glob.glob(arg, recursive=True), key=os.fsencode)
            if not matches:
                raise PathNotFoundError(f"no file matches {escape_name(arg)!r}")
            for match in matches:
                walk.add(Path(match))
        else:
            raise PathNotFoundError(f"no such file or folder: {escape_name(arg)}")
    walk.follow_links()
    return list(walk.found)


def path_id(path: Path) -> str:
    """The id of a file under `--id-from path`, encoded by `escape_name`.

    The path relative to the current folder when inside it, else the absolute
    path; symbolic links are not resolved (the path as walked).
    """
    absolute = Path(os.path.abspath(path))
    try:
        return escape_name(absolute.relative_to(Path.cwd()).as_posix())
    except ValueError:
        return escape_name(absolute.as_posix())


class NotRegularFileError(OSError):
    """The path is not a regular file (FIFO, socket, device, folder): it is never opened."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
    )
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def check_regular(path: Path) -> int:
    """The size of `path` when it is (a link to) a regular file.

    Raises NotRegularFileError for anything else, broken links and link loops
    included, and OSError when it cannot be examined (permissions...).
    """
    try:
        info = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFileError("a symbolic link loop") from None
        if exc.errno == errno.ENOENT and path.is_symlink():
            raise NotRegularFileError("a broken symbolic link") from None
        raise
    if not stat.S_ISREG(info.st_mode):
        raise NotRegularFileError(_file_kind(info.st_mode))
    return info.st_size


def read_regular(path: Path, limit: int = -1) -> bytes:
    """The bytes of a regular file (at most `limit`), never opening anything else.

    Checked before opening, and again on the open file (O_NONBLOCK, so a FIFO
    swapped in between cannot block): a FIFO, socket or device raises
    NotRegularFileError instead of hanging or touching a device.
    """
    check_regular(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(_file_kind(mode))
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        return handle.read(limit)


@dataclass(frozen=True)
class Failure:
    """A file that was not indexed, and why (`path` encoded by `escape_name`)."""

    path: str
    reason: str
    id: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "id": self.id, "reason": self.reason}


@dataclass(frozen=True)
class Skipped:
    """A path that is not a regular file (FIFO, socket, device, broken link): never opened."""

    path: str
    kind: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "kind": self.kind}


@dataclass
class IngestReport:
    """What an ingest run did. Paths are encoded by `imgsearch.filenames.escape_name`."""

    inserted: int = 0
    skipped: int = 0  # already indexed with the same content
    # Skipped items whose stored labels or uri differ from this run's (kept as stored).
    stale: int = 0
    # Already indexed with the same content, inserted again for new labels/uri (`update`).
    updated: int = 0
    duplicates: int = 0  # same id as another file of this run
    not_images: list[str] = field(default_factory=list)
    not_regular: list[Skipped] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.inserted / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "inserted": self.inserted,
            "skipped": self.skipped,
            "stale": self.stale,
            "updated": self.updated,
            "duplicates": self.duplicates,
            "not_images": self.not_images,
            "not_regular_files": [skipped.to_dict() for skipped in self.not_regular],
            "failed": [failure.to_dict() for failure in self.failed],
            "elapsed_s": round(self.elapsed_s, 3),
            "images_per_s": round(self.images_per_s, 2),
        }


@dataclass(frozen=True)
class _Pending:
    path: Path
    item: ItemInput
    sha256: str


@dataclass
class IngestOptions:
    id_from: IdFrom = "hash"
    labels: dict[str, str] = field(default_factory=dict)
    # Label key set to the name of each file's folder (e.g. class folders).
    folder_label: str | None = None
    batch_size: int = 32
    max_batch_bytes: int = 16 * 1024 * 1024
    max_file_bytes: int = 32 * 1024 * 1024
    # Requests in flight: while some wait on their Get or Milvus upsert, the
    # others keep the Embedder's queue full (the benchmark's Embedder-alone
    # figure has 4 calls of 32 in flight). Measured with 2 under load: the
    # Embedder had an Embed call in flight 99.9% of the ingest (2+ for 95%);
    # Search, the CLI and Redis used 1.1 CPU-s per 256 images against the
    # Embedder's 28.7 (docs/search.md, Ingest throughput).
    concurrency: int = 4
    # Re-insert already indexed items whose stored labels or uri differ (upsert).
    update: bool = False


def _sniff(path: Path, report: IngestReport, warn: Callable[[str], None]) -> int | None:
    """The size of `path` when it is a regular file that looks like an image, else None.

    What it is not is reported here: not a regular file (never opened), not
    an image, unreadable.
    """
    name = escape_name(path)
    try:
        size = check_regular(path)
        header = read_regular(path, 16)
    except NotRegularFileError as exc:
        report.not_regular.append(Skipped(name, exc.kind))
        warn(f"skipping {name}: {exc.kind}, not a regular file")
        return None
    except OSError as exc:
        report.failed.append(Failure(name, f"unreadable: {exc.strerror or exc}"))
        return None
    if not looks_like_image(header):
        report.not_images.append(name)
        warn(f"skipping {name}: not an image")
        return None
    return size


def _batches(
    files: Sequence[Path],
    options: IngestOptions,
    report: IngestReport,
    warn: Callable[[str], None],
) -> Iterator[tuple[list[Path], int]]:
    """Image files in groups bounded by count and bytes, each with the number of files consumed.

    Non-images, special files and unreadable files are reported here and left
    out of the groups, but they count as consumed (for the progress bar).
    """
    batch: list[Path] = []
    batch_bytes = 0
    consumed = 0
    for path in files:
        consumed += 1
        size = _sniff(path, report, warn)
        if size is None:
            continue
        if size > options.max_file_bytes:
            limit_mib = options.max_file_bytes // (1024 * 1024)
            report.failed.append(Failure(escape_name(path), f"file larger than {limit_mib} MiB"))
            continue
        if batch and (
            len(batch) >= options.batch_size or batch_bytes + size > options.max_batch_bytes
        ):
            # The current file belongs to the next batch.
            yield batch, consumed - 1
            batch, batch_bytes, consumed = [], 0, 1
        batch.append(path)
        batch_bytes += size
    if batch or consumed:
        yield batch, consumed


def _item_fields(
    path: Path, options: IngestOptions, sha256: str, warn: Callable[[str], None]
) -> tuple[str, str, dict[str, str]]:
    """The id, uri and labels of a file, from its name (see `imgsearch.filenames`).

    The uri is left empty, with a warning, when longer than the service
    stores; an id or folder label too long for the service raises ValueError
    (the user asked for them: the file fails rather than being stored otherwise).
    """
    uri = file_uri(path)
    if utf8_len(uri) > MAX_URI_BYTES:
        warn(
            f"{escape_name(path)}: indexed without a uri: its file: URI is {utf8_len(uri)} bytes,"
            f" over the limit of {MAX_URI_BYTES}"
        )
        uri = ""
    item_id = sha256 if options.id_from == "hash" else path_id(path)
    if utf8_len(item_id) > MAX_ID_BYTES:
        raise ValueError(
            f"its path id is {utf8_len(item_id)} bytes, over the limit of {MAX_ID_BYTES}"
            " (use --id-from hash)"
        )
    labels = dict(options.labels)
    if options.folder_label:
        folder = escape_name(Path(os.path.abspath(path)).parent.name)
        if utf8_len(folder) > MAX_LABEL_VALUE_BYTES:
            raise ValueError(
                f"its folder name is {utf8_len(folder)} bytes as a label value, over the limit"
                f" of {MAX_LABEL_VALUE_BYTES}"
            )
        labels[options.folder_label] = folder
    return item_id, uri, labels


def _prepare(
    paths: list[Path], options: IngestOptions, report: IngestReport, warn: Callable[[str], None]
) -> list[_Pending]:
    """Read the files of a batch; what cannot be read or named is reported failed."""
    pending: list[_Pending] = []
    for path in paths:
        try:
            data = read_regular(path)
        except OSError as exc:  # NotRegularFileError included: it changed since _sniff
            report.failed.append(Failure(escape_name(path), f"unreadable: {exc.strerror or exc}"))
            continue
        sha256 = hashlib.sha256(data).hexdigest()
        try:
            item_id, uri, labels = _item_fields(path, options, sha256, warn)
        except ValueError as exc:
            report.failed.append(Failure(escape_name(path), str(exc)))
            continue
        pending.append(
            _Pending(path, ItemInput(image=data, id=item_id, uri=uri, labels=labels), sha256)
        )
    return pending


@dataclass
class _BatchOutcome:
    inserted: int = 0
    skipped: int = 0
    stale: int = 0
    updated: int = 0
    failed: list[Failure] = field(default_factory=list)
    done: int = 0  # files accounted for, for the progress bar


def _run_batch(client: Client, pending: list[_Pending], update: bool = False) -> _BatchOutcome:
    """Insert a batch; a request refused as a whole (INVALID_ARGUMENT) is retried file by file.

    So one bad file fails alone, whatever the service objects to. Outages
    (UNAVAILABLE, DEADLINE_EXCEEDED...) propagate: they stop the run.
    """
    try:
        return _insert_new(client, pending, update)
    except errors.InvalidArgumentError as exc:
        if len(pending) == 1:
            entry = pending[0]
            reason = f"INVALID_ARGUMENT: {exc.message}"
            return _BatchOutcome(
                done=1, failed=[Failure(escape_name(entry.path), reason, entry.item.id)]
            )
    outcome = _BatchOutcome()
    for entry in pending:
        single = _run_batch(client, [entry], update)
        outcome.inserted += single.inserted
        outcome.skipped += single.skipped
        outcome.stale += single.stale
        outcome.updated += single.updated
        outcome.failed.extend(single.failed)
        outcome.done += single.done
    return outcome


def _insert_new(client: Client, pending: list[_Pending], update: bool = False) -> _BatchOutcome:
    """Insert the files of a batch whose id is not stored with the same content hash.

    With `update`, also those stored with the same content but other labels or uri.
    """
    outcome = _BatchOutcome(done=len(pending))
    stored = {item.id: item for item in client.get([entry.item.id for entry in pending]).items}
    to_insert: list[_Pending] = []
    refreshed: set[str] = set()
    for entry in pending:
        known = stored.get(entry.item.id)
        if known is None or known.content_sha256 != entry.sha256:
            to_insert.append(entry)
        elif known.labels == entry.item.labels and known.uri == entry.item.uri:
            outcome.skipped += 1
        elif update:
            to_insert.append(entry)
            refreshed.add(entry.item.id)
        else:
            outcome.skipped += 1
            outcome.stale += 1
    if not to_insert:
        return outcome
    # One request: the batch is already bounded by count and bytes.
    results = client.insert([entry.item for entry in to_insert], batch_size=len(to_insert))
    for entry, result in zip(to_insert, results, strict=True):
        if result.ok and entry.item.id in refreshed:
            outcome.updated += 1
        elif result.ok:
            outcome.inserted += 1
        else:
            reason = f"{result.code.name}: {result.message}"
            outcome.failed.append(Failure(escape_name(entry.path), reason, result.id))
    return outcome


def ingest(
    client: Client,
    files: Sequence[Path],
    options: IngestOptions,
    warn: Callable[[str], None] = lambda message: None,
    progress: Callable[[int, int], None] = lambda done, inserted: None,
    report: IngestReport | None = None,
) -> IngestReport:
    """Index `files`; batches run `options.concurrency` at a time.

    `progress(done, inserted)` is called on the caller's thread with the
    number of files handled (of `len(files)`) and inserted since the last
    call. Errors of a
    whole request (the service down) propagate after in-flight batches end;
    pass `report` to keep what the run did until then (it is filled in place,
    the batches that finished included).
    """
    report = report if report is not None else IngestReport()
    started = time.perf_counter()
    seen_ids: set[str] = set()
    in_flight: set[Future[_BatchOutcome]] = set()

    def collect(done: set[Future[_BatchOutcome]]) -> None:
        """Count every finished batch; then raise the first batch's error, if any."""
        error: BaseException | None = None
        for future in done:
            if future.cancelled():
                continue
            if future.exception() is not None:
                error = error or future.exception()
                continue
            outcome = future.result()
            report.inserted += outcome.inserted
            report.skipped += outcome.skipped
            report.stale += outcome.stale
            report.updated += outcome.updated
            report.failed.extend(outcome.failed)
            progress(outcome.done, outcome.inserted)
        if error is not None:
            raise error

    with ThreadPoolExecutor(max_workers=options.concurrency) as pool:
        try:
            for paths, consumed in _batches(files, options, report, warn):
                pending = _prepare(paths, options, report, warn)
                unique = []
                for entry in pending:
                    if entry.item.id in seen_ids:
                        report.duplicates += 1
                        continue
                    seen_ids.add(entry.item.id)
                    unique.append(entry)
                # Files not sent (non-images, unreadable, duplicates) are done now.
                progress(consumed - len(unique), 0)
                if unique:
                    in_flight.add(pool.submit(_run_batch, client, unique, options.update))
                if len(in_flight) >= options.concurrency:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    collect(done)
            done, in_flight = wait(in_flight)
            collect(done)
        except BaseException:
            for future in in_flight:
                future.cancel()
            wait(in_flight)
            # What the batches still in flight did counts too; the first error wins.
            with contextlib.suppress(BaseException):
                collect(in_flight)
            raise
        finally:
            report.elapsed_s = time.perf_counter() - started
    return report
