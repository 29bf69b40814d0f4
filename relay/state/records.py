"""Reading the relay's records: events, deliveries, attempts, dead letters, queue depths.

``Records`` is the one reader of these Redis structures: the CLI uses it directly, the
operations layer (``relay.admin.listings``) pages and filters through its batched reads,
and ``relay.state.deliveries.Store`` extends it with the writes: claiming, finishing and
dead-lettering a delivery. Reads never fail on a malformed value (a record written by
an older version, a hand-edited key): bytes decode with replacement characters.

Sealed values (``relay.state.sealing``) are opened here, so every reader sees plain
text; one sealed with a key no longer configured reads as a note of why (an event: its
clear fields, the note as its text, and ``unreadable`` beside it), never as an error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from relay.state import keys
from relay.state.lifecycle import DeliveryRecord, DeliveryStatus
from relay.state.sealing import PLAIN, Sealer
from relay.state.tasks import TaskLinks


class EventStatus(StrEnum):
    """What became of an event, from its deliveries: computed when read, because the
    stored ``status`` (``queued``, ``routed``, ``unrouted``) is written once at fan-out
    and an operator asks whether the event got through."""

    DELIVERED = "delivered"  # every delivery delivered
    PARTLY_DELIVERED = "partly_delivered"  # some delivered, the others dead
    FAILED = "failed"  # every delivery dead
    WAITING = "waiting"  # not fanned out yet, or a delivery queued, running or scheduled
    UNROUTED = "unrouted"  # no route matched
    UNKNOWN = "unknown"  # its delivery records are gone (retention, purge)

    @property
    def label(self) -> str:
        """How people read it (``partly delivered``)."""
        return self.value.replace("_", " ")


_STATUSES = {s.value for s in DeliveryStatus}
_PENDING = {DeliveryStatus.QUEUED, DeliveryStatus.RUNNING, DeliveryStatus.SCHEDULED}


def event_status(stored: str | None, deliveries: Iterable[str | None]) -> EventStatus:
    """The event's ``EventStatus`` from its stored status and its deliveries' statuses
    (``None`` or an unknown string for a record that is gone or foreign)."""
    if stored == "unrouted":
        return EventStatus.UNROUTED
    known = [DeliveryStatus(s) for s in deliveries if s in _STATUSES]
    if stored == "queued" or any(s in _PENDING for s in known):
        return EventStatus.WAITING
    if not known:
        return EventStatus.UNKNOWN
    if all(s is DeliveryStatus.DELIVERED for s in known):
        return EventStatus.DELIVERED
    if all(s is DeliveryStatus.DEAD for s in known):
        return EventStatus.FAILED
    return EventStatus.PARTLY_DELIVERED


@dataclass(frozen=True)
class DeadLetter:
    delivery: DeliveryRecord
    dead_at: float

    @property
    def id(self) -> str:
        return self.delivery.id or ""


def _decode(mapping: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in mapping.items()}


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        found = json.loads(raw.decode(errors="replace"))
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


class Records:
    """Reads the relay's records."""

    def __init__(self, client: redis.Redis, *, sealer: Sealer = PLAIN) -> None:
        self.redis = client
        self.sealer = sealer

    # events ---------------------------------------------------------------------------
    def event_tasks(self, event_id: str) -> list[dict[str, Any]]:
        """The tasks an event created or acted on, by target (``relay.state.tasks``)."""
        links = TaskLinks(self.redis, retention=0).of_event(event_id)
        return [
            {
                "target": target,
                "key": str(task.get("key")),
                "url": task.get("url") if isinstance(task.get("url"), str) else None,
                "title": task.get("title") if isinstance(task.get("title"), str) else None,
                "created": task.get("created") is not False,
            }
            for target, task in sorted(links.items())
        ]

    def event(self, event_id: str) -> dict[str, Any] | None:
        """The event, when it was received and its stored status; ``unreadable`` says
        why an event that does not open holds only its clear fields."""
        [raw] = self.event_fields([event_id])
        if not raw:
            return None
        found = {
            "event": json.loads(raw["data"]),
            "received_at": float(raw.get("received_at", 0)),
            "status": raw.get("status", "unknown"),
        }
        if "unreadable" in raw:
            found["unreadable"] = raw["unreadable"]
        return found

    def event_fields(self, event_ids: Sequence[str]) -> list[dict[str, str]]:
        """Each event's hash (``data`` opened, ``received_at``, ``status``, and
        ``unreadable`` if it does not open; empty if gone), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.hgetall(keys.event(event_id))
        found = [_decode(raw) for raw in pipe.execute()]
        for record in found:
            if "data" in record:
                record["data"], why = self.sealer.shown_event(record["data"])
                if why is not None:
                    record["unreadable"] = why
        return found

    def event_data(self, event_id: str) -> str | None:
        """The event's JSON, if its record has not expired."""
        data = self.redis.hget(keys.event(event_id), "data")
        return self.sealer.shown_event(data.decode(errors="replace"))[0] if data else None

    def received_at(self, event_id: str | bytes) -> float | None:
        """When the event was received, from the events index; ``None`` if not in it."""
        score = self.redis.zscore(keys.EVENTS, event_id)
        return None if score is None else float(score)

    def event_statuses(
        self, event_ids: Sequence[str], stored: Sequence[str | None]
    ) -> list[EventStatus]:
        """Each event's ``EventStatus`` (``stored``: its stored status), in two round trips."""
        ids_of = self.delivery_ids_of(event_ids)
        pipe = self.redis.pipeline(transaction=False)
        for ids in ids_of:
            for delivery_id in ids:
                pipe.hget(keys.delivery(delivery_id.decode(errors="replace")), "status")
        found = iter(pipe.execute() if any(ids_of) else [])
        statuses = []
        for status, ids in zip(stored, ids_of, strict=True):
            mine = [next(found) for _ in ids]
            statuses.append(
                event_status(status, (s.decode(errors="replace") if s else None for s in mine))
            )
        return statuses

    def event_count(self) -> int:
        """Events in the index (received within the retention)."""
        return int(self.redis.zcard(keys.EVENTS))

    def recent_events(self, limit: int = 50) -> list[str]:
        return [m.decode() for m in self.redis.zrevrange(keys.EVENTS, 0, limit - 1)]

    def newest_first(
        self, index: str, high: str, low: str, *, start: int, num: int
    ) -> list[tuple[bytes, float]]:
        """One batch of an index (``keys.EVENTS``, ``keys.DLQ``) from ``high`` down to
        ``low``: the read that ``relay.admin.query.Walk`` pages with."""
        found: list[tuple[bytes, float]] = self.redis.zrevrangebyscore(
            index, high, low, start=start, num=num, withscores=True
        )
        return found

    def event_delivery_ids(self, event_id: str) -> list[str]:
        return sorted(m.decode() for m in self.redis.smembers(keys.event_deliveries(event_id)))

    def delivery_ids_of(self, event_ids: Sequence[str]) -> list[list[bytes]]:
        """Each event's delivery ids, sorted, in one round trip (bytes: listing cursors
        compare them as stored)."""
        pipe = self.redis.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.smembers(keys.event_deliveries(event_id))
        return [sorted(found) for found in pipe.execute()]

    # deliveries -----------------------------------------------------------------------
    def delivery(self, delivery_id: str) -> DeliveryRecord | None:
        return self.deliveries([delivery_id])[0]

    def deliveries(self, delivery_ids: Sequence[str]) -> list[DeliveryRecord | None]:
        """Each delivery's record (``None`` if gone), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for delivery_id in delivery_ids:
            pipe.hgetall(keys.delivery(delivery_id))
        return [
            DeliveryRecord.from_fields(self.sealer.open_fields(delivery_id, _decode(raw)))
            if raw
            else None
            for delivery_id, raw in zip(delivery_ids, pipe.execute(), strict=True)
        ]

    def attempts(self, delivery_id: str) -> list[dict[str, Any]]:
        """The attempt records, oldest first; an entry that is not a JSON object is skipped."""
        found = (_json_object(a) for a in self.redis.lrange(keys.attempts(delivery_id), 0, -1))
        return [self.sealer.open_attempt(delivery_id, a) for a in found if a is not None]

    # dead letters ---------------------------------------------------------------------
    def dead_letters(
        self,
        *,
        target: str | None = None,
        source: str | None = None,
        older_than: float | None = None,
        newer_than: float | None = None,
        limit: int | None = None,
    ) -> Iterator[DeadLetter]:
        """Dead letters, oldest first, matching every given filter (ages in seconds)."""
        now = time.time()
        low = now - newer_than if newer_than is not None else "-inf"
        high = now - older_than if older_than is not None else "+inf"
        found = 0
        for member, score in self.redis.zrangebyscore(keys.DLQ, low, high, withscores=True):
            delivery = self.delivery(member.decode())
            if delivery is None:
                continue
            if target and delivery.target != target:
                continue
            if source and delivery.source != source:
                continue
            yield DeadLetter(delivery, score)
            found += 1
            if limit is not None and found >= limit:
                return

    # queues ---------------------------------------------------------------------------
    def queue_stats(self) -> dict[str, Any]:
        pipe = self.redis.pipeline()
        for name in keys.ALL_QUEUES:
            pipe.llen(name)
        pipe.zcard(keys.SCHEDULE)
        pipe.zcount(keys.SCHEDULE, "-inf", time.time())
        pipe.zrange(keys.SCHEDULE, 0, 0, withscores=True)
        pipe.zcard(keys.INFLIGHT)
        pipe.zcard(keys.DLQ)
        results = pipe.execute()
        depths = dict(zip(keys.ALL_QUEUES, results[: len(keys.ALL_QUEUES)], strict=True))
        scheduled, due, oldest, inflight, dead = results[len(keys.ALL_QUEUES) :]
        lag = max(0.0, time.time() - oldest[0][1]) if oldest and due else 0.0
        return {
            "queues": depths,
            "scheduled": scheduled,
            "scheduled_due": due,
            "schedule_lag_seconds": round(lag, 3),
            "in_flight": inflight,
            "dead_letters": dead,
        }
