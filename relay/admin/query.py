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
from typing import Any

import redis

CURSOR_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,9})?(-([0-9a-f]{2}){0,256}){1,2}$"
MAX_TIME = 1e11  # Unix seconds, year 5138: beyond it is a typo
BATCH = 200

_CURSOR = re.compile(CURSOR_PATTERN)
_NUMBER = re.compile(r"^[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$")
_ISO = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(\.[0-9]+)?)?"
    r"([Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?)?$"
)


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


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (any year, unlike datetime)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _month_days(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def parse_time(text: str) -> float:
    """Unix seconds (``1718000000``, ``1718000000.5``) or ISO 8601 / RFC 3339
    (``2024-06-10``, ``2024-06-10T08:00:00Z``, ``...+02:00``; no offset means UTC)."""
    if _NUMBER.fullmatch(text):
        value = float(text)
        if not math.isfinite(value) or value > MAX_TIME:
            raise ValueError(f"{text!r} is out of range for Unix seconds")
        return value
    match = _ISO.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is neither Unix seconds nor an ISO 8601 time")
    year, month, day, hour, minute, second = (int(g or 0) for g in match.groups()[:6])
    fraction, offset = match.group(7), match.group(8)
    if not 1 <= month <= 12 or not 1 <= day <= _month_days(year, month):
        raise ValueError(f"{text!r} is not a calendar date")
    if hour > 23 or minute > 59 or second > 60:  # 60: a leap second
        raise ValueError(f"{text!r} is not a time of day")
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    if offset and offset not in "Zz":
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        off_h, off_m = int(digits[:2]), int(digits[2:] or 0)
        if off_h > 23 or off_m > 59:
            raise ValueError(f"{text!r} has an invalid UTC offset")
        seconds -= sign * (off_h * 3600 + off_m * 60)
    return seconds + (float(fraction) if fraction else 0.0)


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
    position of the last member examined (for the next page's cursor)."""

    client: redis.Redis
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
            batch = self.client.zrevrangebyscore(
                self.key,
                "+inf" if high == math.inf else repr(high),
                low,
                start=offset,
                num=BATCH,
                withscores=True,
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
