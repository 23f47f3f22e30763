"""`imgsearch ingest`: find image files, skip what is already indexed, insert the rest.

Resumable and idempotent: before sending a batch, the ids are looked up with
Get, and an item whose stored content hash equals the file's hash is skipped
without being re-embedded. A changed file under the same id (with
`--id-from path`) is inserted again, replacing the stored one.
"""

from __future__ import annotations

import glob
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from imgsearch.client import Client, ItemInput

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


def discover(paths: Sequence[str]) -> list[Path]:
    """Files named by `paths`: folders recursively, files, and glob patterns; sorted, unique."""
    found: dict[Path, None] = {}

    def add_tree(path: Path) -> None:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    found.setdefault(Path(root, name), None)
        elif path.is_file():
            found.setdefault(path, None)

    for arg in paths:
        path = Path(arg)
        if path.exists():
            add_tree(path)
        elif glob.has_magic(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                raise PathNotFoundError(f"no file matches {arg!r}")
            for match in matches:
                add_tree(Path(match))
        else:
            raise PathNotFoundError(f"no such file or folder: {arg}")
    return list(found)


def path_id(path: Path) -> str:
    """The id of a file under `--id-from path`: relative to the current folder when inside it."""
    absolute = path.resolve()
    try:
        return absolute.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return absolute.as_posix()


@dataclass(frozen=True)
class Failure:
    """A file that was not indexed, and why."""

    path: str
    reason: str
    id: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "id": self.id, "reason": self.reason}


@dataclass
class IngestReport:
    """What an ingest run did."""

    inserted: int = 0
    skipped: int = 0  # already indexed with the same content
    duplicates: int = 0  # same id as another file of this run
    not_images: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.inserted / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "inserted": self.inserted,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            "not_images": self.not_images,
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
    concurrency: int = 2


def _batches(
    files: Sequence[Path],
    options: IngestOptions,
    report: IngestReport,
    warn: Callable[[str], None],
) -> Iterator[tuple[list[Path], int]]:
    """Image files in groups bounded by count and bytes, each with the number of files consumed.

    Non-images and unreadable files are reported here and left out of the
    groups, but they count as consumed (for the progress bar).
    """
    batch: list[Path] = []
    batch_bytes = 0
    consumed = 0
    for path in files:
        consumed += 1
        try:
            size = path.stat().st_size
            with path.open("rb") as handle:
                header = handle.read(16)
        except OSError as exc:
            report.failed.append(Failure(str(path), f"unreadable: {exc.strerror or exc}"))
            continue
        if not looks_like_image(header):
            report.not_images.append(str(path))
            warn(f"skipping {path}: not an image")
            continue
        if size > options.max_file_bytes:
            limit_mib = options.max_file_bytes // (1024 * 1024)
            report.failed.append(Failure(str(path), f"file larger than {limit_mib} MiB"))
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


def _prepare(paths: list[Path], options: IngestOptions) -> tuple[list[_Pending], list[Failure]]:
    pending: list[_Pending] = []
    failures: list[Failure] = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            failures.append(Failure(str(path), f"unreadable: {exc.strerror or exc}"))
            continue
        sha256 = hashlib.sha256(data).hexdigest()
        labels = dict(options.labels)
        if options.folder_label:
            labels[options.folder_label] = path.resolve().parent.name
        item = ItemInput(
            image=data,
            id=sha256 if options.id_from == "hash" else path_id(path),
            uri=str(path.resolve()),
            labels=labels,
        )
        pending.append(_Pending(path, item, sha256))
    return pending, failures


@dataclass
class _BatchOutcome:
    inserted: int = 0
    skipped: int = 0
    failed: list[Failure] = field(default_factory=list)
    done: int = 0  # files accounted for, for the progress bar


def _run_batch(client: Client, pending: list[_Pending]) -> _BatchOutcome:
    outcome = _BatchOutcome(done=len(pending))
    stored = client.get([entry.item.id for entry in pending])
    stored_hash = {item.id: item.content_sha256 for item in stored.items}
    to_insert = [entry for entry in pending if stored_hash.get(entry.item.id) != entry.sha256]
    outcome.skipped = len(pending) - len(to_insert)
    if not to_insert:
        return outcome
    # One request: the batch is already bounded by count and bytes.
    results = client.insert([entry.item for entry in to_insert], batch_size=len(to_insert))
    for entry, result in zip(to_insert, results, strict=True):
        if result.ok:
            outcome.inserted += 1
        else:
            reason = f"{result.code.name}: {result.message}"
            outcome.failed.append(Failure(str(entry.path), reason, result.id))
    return outcome


def ingest(
    client: Client,
    files: Sequence[Path],
    options: IngestOptions,
    warn: Callable[[str], None] = lambda message: None,
    progress: Callable[[int, int], None] = lambda done, inserted: None,
) -> IngestReport:
    """Index `files`; batches run `options.concurrency` at a time.

    `progress(done, inserted)` is called on the caller's thread with the
    number of files handled (of `len(files)`) and inserted since the last
    call. Errors of a
    whole request (the service down) propagate after in-flight batches end.
    """
    report = IngestReport()
    started = time.perf_counter()
    seen_ids: set[str] = set()
    in_flight: set[Future[_BatchOutcome]] = set()

    def collect(done: set[Future[_BatchOutcome]]) -> None:
        for future in done:
            outcome = future.result()
            report.inserted += outcome.inserted
            report.skipped += outcome.skipped
            report.failed.extend(outcome.failed)
            progress(outcome.done, outcome.inserted)

    with ThreadPoolExecutor(max_workers=options.concurrency) as pool:
        try:
            for paths, consumed in _batches(files, options, report, warn):
                pending, failures = _prepare(paths, options)
                report.failed.extend(failures)
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
                    in_flight.add(pool.submit(_run_batch, client, unique))
                if len(in_flight) >= options.concurrency:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    collect(done)
            done, in_flight = wait(in_flight)
            collect(done)
        finally:
            for future in in_flight:
                future.cancel()
    report.elapsed_s = time.perf_counter() - started
    return report
