"""Filters, cursors and time values of the operations layer (``relay.admin.ops``).

Shared by the management API and the dashboard so both page and filter the same way.
Listings run newest first over a Redis sorted set (events by received time, dead
letters by time of death). A cursor names the last position examined; the next page
starts strictly after it, so records added meanwhile never shift a page.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from relay.state.records import Records

CURSOR_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,9})?(-([0-9a-f]{2}){0,256}){1,2}$"
MAX_TIME = 1e11  # Unix seconds, year 5138: beyond it is a typo
BATCH = 200

_CURSOR = re.compile(CURSOR_PATTERN)
_NUMBER = re.compile(r"^[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$")
# The seconds field of a time of day, when it is 60 (RFC 3339 allows it at a leap second).
_LEAP_SECOND = re.compile(r"(?<=[T ][0-9]{2}:[0-9]{2}:)60(?=[.,Z+-]|$)")


@dataclass(frozen=True)
class Cursor:
    """A position in a newest-first listing: a score and member, and for listings of
    deliveries the last delivery id shown of that event (``sub``)."""

    score: float
    member: bytes
    sub: bytes | None = None

    def encode(self) -> str:
        parts = [repr(self.score), self.member.hex()]
        if self.sub is not None:
            parts.append(self.sub.hex())
        return "-".join(parts)

    def at(self, score: float, member: bytes) -> bool:
        """Whether (score, member) is the cursor's own position."""
        return score == self.score and member == self.member

    def admits(self, score: float, member: bytes) -> bool:
        """Whether a listing resumed at this cursor shows (score, member): it comes after
        the cursor, or it is the cursor's event and the cursor stopped inside it."""
        if self.at(score, member):
            return self.sub is not None
        return score < self.score or (score == self.score and member < self.member)

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """``ValueError`` unless ``text`` matches ``CURSOR_PATTERN``; any match is a position."""
        if not _CURSOR.fullmatch(text):
            raise ValueError("not a cursor returned by this API")
        score, member, *sub = text.split("-")
        return cls(float(score), bytes.fromhex(member), bytes.fromhex(sub[0]) if sub else None)


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None

    def public(self) -> dict[str, Any]:
        return {"items": self.items, "next_cursor": self.next_cursor}


def parse_time(text: str) -> float:
    """Unix seconds (``1718000000``, ``1718000000.5``) or ISO 8601 / RFC 3339
    (``2024-06-10``, ``2024-06-10T08:00:00Z``, ``...+02:00``; no offset means UTC).

    ``datetime.fromisoformat`` reads the ISO forms; around it this accepts what RFC 3339
    allows and it does not: a lower-case ``t``/``z`` and a leap second ``:60`` (read as
    the second after). Only ASCII is upper-cased: ``str.upper`` makes letters of others.
    """
    if not text.isascii():
        raise ValueError(f"{text!r} is neither Unix seconds nor an ISO 8601 time")
    if _NUMBER.fullmatch(text):
        value = float(text)
        if not math.isfinite(value) or value > MAX_TIME:
            raise ValueError(f"{text!r} is out of range for Unix seconds")
        return value
    iso, leap = _LEAP_SECOND.subn("59", text.upper())
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError as exc:
        raise ValueError(f"{text!r} is neither Unix seconds nor an ISO 8601 time ({exc})") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() + leap


@dataclass(frozen=True)
class EventFilter:
    """Events whose every given field matches; ``q`` is a case-insensitive substring
    of the event's text; ``since``/``until`` bound the time it was received."""

    source: str | None = None
    type: str | None = None
    group: str | None = None
    status: str | None = None
    since: float | None = None
    until: float | None = None
    q: str | None = None


@dataclass(frozen=True)
class DeliveryFilter:
    """Deliveries by source, target, status or event; times bound the event's receipt."""

    source: str | None = None
    target: str | None = None
    status: str | None = None
    event_id: str | None = None
    since: float | None = None
    until: float | None = None


@dataclass(frozen=True)
class DeadLetterFilter:
    """Dead letters by source and target; times bound the time of death; ``q`` searches
    the text of the event copy the dead letter keeps."""

    source: str | None = None
    target: str | None = None
    since: float | None = None
    until: float | None = None
    q: str | None = None

    def describe(self) -> str:
        given = {k: v for k, v in self.__dict__.items() if v is not None}
        return " ".join(f"{k}={v}" for k, v in given.items()) or "all"


def in_range(value: float, since: float | None, until: float | None) -> bool:
    return (since is None or value >= since) and (until is None or value <= until)


@dataclass
class Walk:
    """Newest-first iteration over a sorted set, starting after ``cursor``, with the
    position of the last member examined (for the next page's cursor); ``records``
    does the reading."""

    records: Records
    key: str
    cursor: Cursor | None = None
    until: float | None = None
    since: float | None = None
    examined: int = field(default=0, init=False)

    def batches(self) -> Iterator[list[tuple[bytes, float]]]:
        high: float = math.inf if self.until is None else self.until
        after: bytes | None = None
        if self.cursor is not None and self.cursor.score <= high:
            high, after = self.cursor.score, self.cursor.member
        start_score = high
        low = "-inf" if self.since is None else repr(self.since)
        offset = 0
        while True:
            batch = self.records.newest_first(
                self.key, "+inf" if high == math.inf else repr(high), low, start=offset, num=BATCH
            )
            if not batch:
                return
            self.examined += len(batch)
            yield [
                (member, score)
                for member, score in batch
                if after is None or score != start_score or member < after
            ]
            last = batch[-1][1]
            same = sum(1 for _, score in batch if score == last)
            offset = (offset if last == high else 0) + same
            high = last
