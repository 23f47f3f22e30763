"""Item tables that stay readable in an 80-column terminal.

Ids come first and whole, on a line of their own (a SHA-256 id is 64
characters: it must stay copyable), with the uri and labels on the lines
below it in the same cell, folded when long, rather than in side-by-side
columns that a narrow terminal squeezes to one character each.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich import box
from rich.table import Table
from rich.text import Text


def compact_table(title: str, first_header: str) -> Table:
    """A borderless table whose first column holds the item cells (`item_cell`)."""
    table = Table(
        title=Text(title),
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        title_justify="left",
    )
    table.add_column(first_header, overflow="fold", ratio=1)
    return table


def item_cell(item_id: str, uri: str, labels: Mapping[str, str] | None = None) -> Text:
    """The id, then (indented, dimmed) the uri and the labels. Text: data, never markup."""
    cell = Text(item_id)
    if uri:
        cell.append("\n  ")
        cell.append(uri, style="dim")
    if labels:
        cell.append("\n  ")
        cell.append(", ".join(f"{key}={value}" for key, value in sorted(labels.items())), "dim")
    return cell
