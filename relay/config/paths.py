"""Config paths in the file's own notation (``routes[2].targets[0]``), for error messages."""

from __future__ import annotations

import re
from collections.abc import Iterable


def path_of(loc: Iterable[object]) -> str:
    """``("routes", 2, "targets", 0)`` → ``routes[2].targets[0]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def split_path(prefix: str) -> list[object]:
    parts: list[object] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", prefix):
        parts.append(int(index) if index else name)
    return parts
