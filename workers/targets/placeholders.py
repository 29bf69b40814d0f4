"""Mention placeholders for chat targets whose markup a message could forge.

A template gets ``at`` as placeholders (two private-use characters around the
mention's index) instead of real markup. After rendering, every markup look-alike that
came from user content is escaped (``defuse``), and only then are the placeholders
replaced by the platform's real mention tags: a chat message that contains
``<at user_id="all">`` or ``<@U123>`` cannot notify anyone. ``fit`` shortens a message
to the platform's size limit without splitting a placeholder or losing a mention.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from relay.config.people import Mention

OPEN, CLOSE = "\ue000", "\ue001"  # private-use characters delimiting a mention placeholder
TOKEN = re.compile(f"{OPEN}(\\d+){CLOSE}")
_PLACEHOLDER = re.compile(f"{OPEN}(\\d+){CLOSE}|[{OPEN}{CLOSE}]")


def placeholders(mentions: Sequence[Mention], platform: str) -> tuple[list[str], set[int]]:
    """``at`` for templates: a placeholder per mention with an id on ``platform``, else
    ``@name``; and the indexes that got a placeholder."""
    at = [
        f"{OPEN}{i}{CLOSE}" if m.id_on(platform) else f"@{m.name}" for i, m in enumerate(mentions)
    ]
    return at, {i for i, m in enumerate(mentions) if m.id_on(platform)}


def defuse(text: str, valid: set[int], escape: Callable[[str], str]) -> str:
    """Escape markup the template did not get from ``at``; keep only the placeholders
    of mentions that have an id (anything else in the private-use range is dropped)."""

    def keep(match: re.Match[str]) -> str:
        index = match.group(1)
        return match.group(0) if index is not None and int(index) in valid else ""

    return _PLACEHOLDER.sub(keep, escape(text))


def fit(text: str, fits: Callable[[str], bool]) -> str:
    """``text`` if it fits, else its longest head that does, ending in "…". Mentions
    cut off with the tail are appended on a last line, so their people are notified."""
    if fits(text):
        return text
    best, low, high = _cut(text, 0), 0, len(text)
    while low <= high:
        middle = (low + high) // 2
        candidate = _cut(text, middle)
        if fits(candidate):
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    return best


def _cut(text: str, n: int) -> str:
    """Cutting a ``str`` (never bytes) keeps every UTF-8 sequence whole."""
    head = text[:n]
    if head.rfind(OPEN) > head.rfind(CLOSE):  # never split a placeholder
        head = head[: head.rfind(OPEN)]
    kept = {m.group(0) for m in TOKEN.finditer(head)}
    lost = [m.group(0) for m in TOKEN.finditer(text, len(head)) if m.group(0) not in kept]
    return head.rstrip() + "…" + ("\n" + " ".join(dict.fromkeys(lost)) if lost else "")
