"""A delivery's states, the answers of its steps, and the one record of it in Redis.

The Lua scripts (``outbox``, ``deliveries``) write these same strings; the enums name
them once for Python, so a comparison is never a misspelt literal. ``DeliveryRecord``
is the delivery hash (``relay:delivery:<id>``) field by field: every write builds its
fields through it and every read parses them with it, so the stored form (names,
number formatting) is spelled in one place and records written before a field
existed still read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from relay.config.models import RouteMode


class DeliveryStatus(StrEnum):
    """The ``status`` field of a delivery record."""

    QUEUED = "queued"  # in a Celery queue, waiting for a worker
    RUNNING = "running"  # a worker claimed it for an attempt
    SCHEDULED = "scheduled"  # waiting in the schedule for a retry or a free target
    DELIVERED = "delivered"
    DEAD = "dead"  # in the dead-letter queue until replayed or purged


class ClaimVerdict(StrEnum):
    """What the claim script answered to "may this message run the delivery now?"."""

    RUN = "run"
    DELIVERED = "delivered"  # already done: a duplicate message
    DEAD = "dead"  # dead-lettered: a stale message
    MISSING = "missing"  # no record (expired, purged)
    NOT_DUE = "not_due"  # scheduled for later: the message came early
    LOCKED = "locked"  # another worker runs it now


class AttemptOutcome(StrEnum):
    """The ``outcome`` of an attempt record, and what the stats count per target.

    Attempt records hold ``delivered``, ``retry``, ``failed`` (the last, dead-lettering
    attempt) and ``lost`` (a worker stopped during it); the target counters
    (``relay.state.stats``) count ``delivered``, ``retry`` and ``dead`` and, apart,
    ``wait`` (a delivery parked without spending an attempt).
    """

    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"
    LOST = "lost"
    DEAD = "dead"
    WAIT = "wait"


class Kind(StrEnum):
    """How a field is stored, and so how it reads and how the API shows it."""

    NAME = "name"  # an id or name, stored as is
    TEXT = "text"  # free text that may quote a secret (errors, reasons)
    REASON = "reason"  # a short code, empty when there is none
    COUNT = "count"  # an integer counter (``HINCRBY``)
    INDEX = "index"  # an integer position
    TIME = "time"  # Unix seconds, stored with six decimals
    STATUS = "status"  # a ``DeliveryStatus``
    MODE = "mode"  # a ``RouteMode``; absent reads as ``live`` (records before modes)
    JSON = "json"  # a JSON document, stored as is


def _field(kind: Kind, doc: str = "", *, public: bool = True) -> Any:
    """A record field: absent (``None``) unless the hash holds it."""
    return field(default=None, metadata={"kind": kind, "doc": doc, "public": public})


def number(value: Any) -> float | None:
    """A finite float, or ``None`` for anything else (a hand-edited or foreign value)."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def integer(value: Any) -> int | None:
    result = number(value)
    return int(result) if result is not None else None


def _parse(kind: Kind, text: str) -> Any:
    if kind in (Kind.COUNT, Kind.INDEX):
        return integer(text)
    if kind is Kind.TIME:
        return number(text)
    if kind is Kind.STATUS:
        try:
            return DeliveryStatus(text)
        except ValueError:
            return None
    if kind is Kind.MODE:
        try:
            return RouteMode(text)
        except ValueError:
            return None
    return text


def _format(kind: Kind, value: Any) -> str:
    if kind is Kind.TIME:
        return f"{value:.6f}"
    if kind in (Kind.COUNT, Kind.INDEX):
        return str(int(value))
    return str(value)  # a StrEnum's str() is its value


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@dataclass(frozen=True)
class DeliveryRecord:
    """The delivery hash. A field is ``None`` when the hash does not hold it: a record
    written before the field existed, or a step that has not happened (``dead_at``).

    Field order is the API's order; ``public=False`` fields are kept from it.
    """

    id: str | None = _field(Kind.NAME)
    event_id: str | None = _field(Kind.NAME)
    source: str | None = _field(Kind.NAME)
    target: str | None = _field(Kind.NAME)
    route: int | None = _field(Kind.INDEX)  # the route's index in the config
    queue: str | None = _field(Kind.NAME)
    status: DeliveryStatus | None = _field(
        Kind.STATUS, "`queued`, `running`, `scheduled`, `delivered` or `dead`."
    )
    attempts: int | None = _field(Kind.COUNT, "Attempts made, counted across replays.")
    replays: int | None = _field(Kind.COUNT)
    created_at: float | None = _field(Kind.TIME)
    updated_at: float | None = _field(Kind.TIME)
    next_at: float | None = _field(Kind.TIME)
    delivered_at: float | None = _field(Kind.TIME)
    dead_at: float | None = _field(Kind.TIME)
    replayed_at: float | None = _field(Kind.TIME)
    waiting: str | None = _field(Kind.REASON, "Why a scheduled delivery waits (`paused`, ...).")
    last_error: str | None = _field(Kind.TEXT)
    dead_reason: str | None = _field(Kind.TEXT)
    parent: str | None = _field(
        Kind.NAME, "The delivery this one follows (a confirmation of a task it created)."
    )
    # the route's mode at fan-out, kept so a promotion never turns a queued rehearsal
    # into a real send
    mode: RouteMode | None = _field(
        Kind.MODE,
        "`live`, `shadow` (rendered and recorded, never sent) or `test` (sent to the "
        "route's test_targets): the route's mode when the event was fanned out.",
    )
    # the attempt counter at the last replay: the retry policy counts from it
    attempt_base: int | None = _field(Kind.COUNT, public=False)
    # when the retry policy's ``max_age`` started counting (fan-out, or the last replay)
    window_start: float | None = _field(Kind.TIME, public=False)
    # the event's JSON, copied by dead-lettering so a replay outlives the event record
    event: str | None = _field(Kind.JSON, public=False)
    # a chained delivery's template variables (the task, the stored files), as JSON
    vars: str | None = _field(Kind.JSON, public=False)
    # a shadow delivery's last attempt: the requests it would have sent, secrets redacted
    # (a JSON list written by ``workers.net.dryrun``); the API shows it on one delivery
    captured: str | None = _field(Kind.JSON, public=False)

    @classmethod
    def new(
        cls,
        *,
        id: str,
        event_id: str,
        source: str,
        target: str,
        route: int,
        queue: str,
        now: float,
        parent: str | None = None,
        vars: str | None = None,
        mode: RouteMode | None = None,
    ) -> DeliveryRecord:
        """A delivery as fan-out creates it: queued, no attempt yet, its ``max_age``
        window starting now."""
        return cls(
            id=id,
            event_id=event_id,
            source=source,
            target=target,
            route=route,
            queue=queue,
            status=DeliveryStatus.QUEUED,
            attempts=0,
            created_at=now,
            updated_at=now,
            window_start=now,
            parent=parent,
            vars=vars,
            mode=mode,
        )

    @classmethod
    def from_fields(cls, stored: Mapping[bytes, bytes] | Mapping[str, str]) -> DeliveryRecord:
        """The record from a hash as ``HGETALL`` returns it; unknown fields are ignored,
        unreadable values read as absent."""
        text = {_text(k): _text(v) for k, v in stored.items()}
        return cls(
            **{
                f.name: _parse(f.metadata["kind"], text[f.name])
                for f in fields(cls)
                if f.name in text
            }
        )

    def to_fields(self) -> dict[str, str]:
        """The stored form of every field that is set, for ``HSET``: a whole record, or
        the fields one step changes."""
        return {
            f.name: _format(f.metadata["kind"], value)
            for f in fields(self)
            if (value := getattr(self, f.name)) is not None
        }


PUBLIC_FIELDS: tuple[tuple[str, Kind, str], ...] = tuple(
    (f.name, f.metadata["kind"], f.metadata["doc"])
    for f in fields(DeliveryRecord)
    if f.metadata["public"]
)
"""(name, kind, description) of each field the API and the dashboard show, in order."""
