"""`imgsearch duplicates`: groups of near-duplicate items (table, --json, --html contact sheet)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from imgsearch.cli import html as html_page
from imgsearch.cli.main import (
    EXIT_USAGE,
    JsonOption,
    _client,
    _err,
    _fail_for,
    _out,
    _print_json,
    app,
    check_output_file,
    fail,
)
from imgsearch.cli.tables import compact_table, item_cell
from imgsearch.client import Client, Duplicates
from imgsearch.common import errors
from imgsearch.common.duplicates import DEFAULT_DUPLICATE_THRESHOLD

_THUMBNAIL_BATCH = 1000  # ids per Get


def write_contact_sheet(path: Path, client: Client, found: Duplicates, threshold: float) -> None:
    """An HTML page with one row of thumbnails per group."""
    ids = [member.id for group in found.groups for member in group.items]
    thumbnails: dict[str, tuple[bytes, str]] = {}
    for start in range(0, len(ids), _THUMBNAIL_BATCH):
        thumbnails.update(client.thumbnails(ids[start : start + _THUMBNAIL_BATCH]))
    galleries = []
    for number, group in enumerate(found.groups, start=1):
        tiles = [
            html_page.Tile(
                html_page.thumbnail_src(*thumbnails.get(member.id, (b"", ""))),
                html_page.item_caption(member.id, member.uri, member.labels, member.best_score),
            )
            for member in group.items
        ]
        galleries.append(
            html_page.Gallery(
                f"group {number}: {len(group.items)} items",
                tiles,
                note=f"weakest link {group.min_score:.4f}; scores are each item's best match",
            )
        )
    intro = (
        f"<p>{_count(len(found.groups), 'group')} of items with cosine similarity at least"
        f" {threshold:g}, among {found.items_scanned} items.</p>"
    )
    page = html_page.render_galleries("imgsearch: near-duplicates", galleries, intro)
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}", EXIT_USAGE)


def _count(number: int, noun: str) -> str:
    """`number` and `noun`, plural unless one: "1 group", "2 groups"."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _print_groups(found: Duplicates) -> None:
    """One section per group: a heading row, then each member's id (its uri below) and score."""
    title = f"{_count(len(found.groups), 'group')} of near-duplicates"
    table = compact_table(title, "id (uri below)")
    table.add_column("best", justify="right", no_wrap=True)
    for number, group in enumerate(found.groups, start=1):
        heading = f"group {number}: {len(group.items)} items, weakest link {group.min_score:.4f}"
        table.add_row(Text(heading, style="bold"), "")
        for index, member in enumerate(group.items):
            table.add_row(
                item_cell(member.id, member.uri),
                f"{member.best_score:.4f}",
                end_section=index == len(group.items) - 1,
            )
    _out.print(table)


def _scan(client: Client, threshold: float, filter_expr: str, neighbors: int) -> Duplicates:
    show_progress = _err.is_terminal
    with Progress(
        TextColumn("scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("items"),
        TimeElapsedColumn(),
        console=_err,
        disable=not show_progress,
    ) as bar:
        task = bar.add_task("scan", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return client.find_duplicates(
            threshold=threshold, filter=filter_expr, max_neighbors=neighbors, progress=advance
        )


@app.command("duplicates")
def duplicates_command(
    ctx: typer.Context,
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold",
            min=0.01,
            max=1.0,
            help="Cosine similarity at or above which items match.",
        ),
    ] = DEFAULT_DUPLICATE_THRESHOLD,
    filter_expr: Annotated[
        str, typer.Option("--filter", help="Only compare items whose labels match this.")
    ] = "",
    max_neighbors: Annotated[
        int, typer.Option("--max-neighbors", min=1, max=256, help="Neighbours examined per item.")
    ] = 16,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Also write a contact sheet of the groups.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Find groups of near-duplicate images in the collection (with a progress bar)."""
    check_output_file(html_file)
    with _client(ctx) as client:
        try:
            found = _scan(client, threshold, filter_expr, max_neighbors)
            if html_file is not None:
                write_contact_sheet(html_file, client, found, threshold)
        except errors.ImgsearchError as exc:
            _fail_for(exc)
    if as_json:
        _print_json({**found.to_dict(), "html": str(html_file) if html_file else None})
        return
    _print_groups(found)
    in_groups = sum(len(group.items) for group in found.groups)
    _out.print(
        f"{_count(len(found.groups), 'group')}, {_count(in_groups, 'item')} in groups"
        f" at cosine >= {threshold:g}; scanned {_count(found.items_scanned, 'item')}"
        f" in {found.elapsed_s:.1f} s",
        markup=False,
    )
    if html_file is not None:
        _out.print(f"wrote {html_file}", markup=False)
