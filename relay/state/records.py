"""Reading the relay's records: events, deliveries, attempts, dead letters, queue depths.

``relay.state.deliveries.Store`` extends ``Records`` with the writes: claiming, finishing and
dead-lettering a delivery.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from relay.state import keys


@dataclass(frozen=True)
class DeadLetter:
    delivery: dict[str, str]
    dead_at: float

    @property
    def id(self) -> str:
        return self.delivery["id"]


def _decode(mapping: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in mapping.items()}


class Records:
    """Reads the relay's records."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    # events ---------------------------------------------------------------------------
    def event(self, event_id: str) -> dict[str, Any] | None:
        raw = _decode(self.redis.hgetall(keys.event(event_id)))
        if not raw:
            return None
        return {
            "event": json.loads(raw["data"]),
            "received_at": float(raw.get("received_at", 0)),
            "status": raw.get("status", "unknown"),
        }

    def recent_events(self, limit: int = 50) -> list[str]:
        return [m.decode() for m in self.redis.zrevrange(keys.EVENTS, 0, limit - 1)]

    def event_delivery_ids(self, event_id: str) -> list[str]:
        return sorted(m.decode() for m in self.redis.smembers(keys.event_deliveries(event_id)))

    # deliveries -----------------------------------------------------------------------
    def delivery(self, delivery_id: str) -> dict[str, str] | None:
        raw = _decode(self.redis.hgetall(keys.delivery(delivery_id)))
        return raw or None

    def attempts(self, delivery_id: str) -> list[dict[str, Any]]:
        return [json.loads(a) for a in self.redis.lrange(keys.attempts(delivery_id), 0, -1)]

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
            if target and delivery.get("target") != target:
                continue
            if source and delivery.get("source") != source:
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
