"""How listing commands print: a header row and aligned columns, as kubectl and docker
do, so a reader knows what each column is and ``awk`` can pick one: only the last column
(free text: a reason, a name) holds spaces. A "showing N of M" line goes to stderr, so
stdout stays the table (or the JSON lines of ``--json``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import click

GAP = "   "  # between columns, as kubectl prints them


def echo_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """The header in upper case, then each row, every column as wide as its widest cell;
    the last column is not padded (it may be long free text)."""
    cells = [[str(h).upper() for h in header]]
    cells += [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        click.echo(GAP.join([*padded, row[-1]]).rstrip())


def _cell(value: object) -> str:
    if value is None or value == "":
        return "-"
    return " ".join(str(value).split()) if isinstance(value, str) else str(value)


def echo_json_lines(items: Iterable[Any]) -> None:
    """One JSON object per line (``jq -c`` and ``while read`` take them as they come)."""
    for item in items:
        click.echo(json.dumps(item, ensure_ascii=False))


def echo_shown(shown: int, total: int, noun: str, *, always: bool = True) -> None:
    """``showing 20 of 134 events (newest first; --limit 0 for all)`` on stderr; with
    ``always=False`` only when some were left out."""
    if shown < total:
        click.echo(
            f"showing {shown} of {total} {noun} (newest first; --limit N for more, "
            "--limit 0 for all)",
            err=True,
        )
    elif always and total:
        click.echo(f"showing all {total} {noun}", err=True)


def age(since: float | None, now: float | None = None) -> str:
    """``45s``, ``12m``, ``3h``, ``2d``: how long ago, in the largest whole unit."""
    if not since:
        return "-"
    seconds = max(0.0, (time.time() if now is None else now) - since)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
