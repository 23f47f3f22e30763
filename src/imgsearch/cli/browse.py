"""`imgsearch list`: the stored items a page at a time (table, --json, --html contact sheet)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

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
from imgsearch.client import ItemPage, StoredItem
from imgsearch.common import errors


def write_contact_sheet(path: Path, title: str, items: list[StoredItem]) -> None:
    """An HTML page of the items' stored thumbnails (no access to the originals needed)."""
    tiles = [
        html_page.Tile(
            html_page.thumbnail_src(item.thumbnail, item.thumbnail_mime_type),
            html_page.item_caption(item.id, item.uri, item.labels, None),
        )
        for item in items
    ]
    page = html_page.render_galleries(title, [html_page.Gallery(f"{len(items)} items", tiles)])
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}", EXIT_USAGE)


def _print_table(items: list[StoredItem], title: str) -> None:
    table = compact_table(title, "id (uri and labels below)")
    for item in items:
        table.add_row(item_cell(item.id, item.uri, item.labels))
    _out.print(table)


@app.command("list")
def list_command(
    ctx: typer.Context,
    filter_expr: Annotated[
        str, typer.Option("--filter", help="Only items whose labels match, e.g. 'kind == \"cat\"'.")
    ] = "",
    page_size: Annotated[
        int, typer.Option("--page-size", min=1, max=1000, help="Items per page.")
    ] = 50,
    page_token: Annotated[
        str, typer.Option("--page-token", help="Continue after an earlier page (its next token).")
    ] = "",
    all_pages: Annotated[bool, typer.Option("--all", help="Every page, not just one.")] = False,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Also write a contact sheet of the thumbnails.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List stored items in id order, a page at a time."""
    check_output_file(html_file)
    items: list[StoredItem] = []
    with _client(ctx) as client:
        token = page_token
        try:
            while True:
                page: ItemPage = client.list_items(
                    filter=filter_expr,
                    page_size=page_size,
                    page_token=token,
                    include_thumbnails=html_file is not None,
                )
                items.extend(page.items)
                token = page.next_page_token
                if not (all_pages and token):
                    break
        except errors.ImgsearchError as exc:
            _fail_for(exc)
    if html_file is not None:
        write_contact_sheet(html_file, "imgsearch: stored items", items)
    if as_json:
        _print_json(
            {
                "items": [item.to_dict() for item in items],
                "next_page_token": token,
                "html": str(html_file) if html_file else None,
            }
        )
        return
    _print_table(items, f"{len(items)} items" + (f" matching {filter_expr}" if filter_expr else ""))
    if token:
        again = f" --filter {shlex.quote(filter_expr)}" if filter_expr else ""
        _err.print(f"more items: imgsearch list{again} --page-token {token}", markup=False)
    if html_file is not None:
        _out.print(f"wrote {html_file}", markup=False)
