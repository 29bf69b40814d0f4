"""A delivery's life in Redis: claimed for a run, finished, parked, dead-lettered, purged.

Events, deliveries and attempts expire after the retention period; a dead letter
keeps its delivery, attempts and a copy of its event until it is replayed or purged.
Each step is one Lua script, so a crash never leaves a record half written. The reads
live in ``relay.state.records``. With a ``Sealer`` that has keys, what people wrote or a
target answered is sealed here before a script stores it (``relay.state.sealing``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from relay.state import keys
from relay.state.heartbeats import Holding
from relay.state.lifecycle import AttemptOutcome, ClaimVerdict, DeliveryRecord, DeliveryStatus
from relay.state.lua import ScriptCall, load_script, run_together
from relay.state.records import Records
from relay.state.sealing import PLAIN, Sealer, Unreadable
from relay.state.stats import MINUTE_TTL, bucket_label, minute_of


@dataclass(frozen=True)
class Begun:
    """The answer to "may this message run the delivery now?"."""

    verdict: ClaimVerdict
    attempt: int
    previous_status: DeliveryStatus | None  # set when the verdict is ``run``
    delivery: DeliveryRecord = field(default_factory=DeliveryRecord)  # before this run
    event_json: str | None = None
    token: str = ""  # this claim's lock token (the lock is its own if the verdict is run)
    # why the event (or the delivery's variables) did not open, with ``event_json`` None;
    # ``stored_event`` is then the event as stored, for the dead letter to keep
    unreadable: str | None = None
    stored_event: str | None = None

    @property
    def attempt_since_replay(self) -> int:
        """This attempt's number counted from the last replay: what the retry policy
        (``max_attempts``, backoff) applies to. ``attempt`` itself keeps counting, so
        attempt records stay numbered across replays."""
        return self.attempt - (self.delivery.attempt_base or 0)


def _begun(reply: list[Any], delivery_id: str, sealer: Sealer) -> Begun:
    verdict, attempt = ClaimVerdict(reply[0].decode()), int(reply[1])
    if verdict is not ClaimVerdict.RUN:
        return Begun(verdict, attempt, None)
    previous = DeliveryRecord.from_fields({"status": reply[2].decode()}).status
    flat = reply[3]
    fields = {
        k.decode(errors="replace"): v.decode(errors="replace")
        for k, v in zip(flat[::2], flat[1::2], strict=True)
    }
    stored = reply[4].decode() if reply[4] else fields.get("event")
    try:
        delivery = DeliveryRecord.from_fields(sealer.open_fields(delivery_id, fields, strict=True))
        event_json = sealer.open_event(stored) if stored is not None else None
    except Unreadable as exc:  # the worker dead-letters it, keeping the event as stored
        rest = {k: v for k, v in fields.items() if k not in ("event", "vars")}
        delivery = DeliveryRecord.from_fields(sealer.open_fields(delivery_id, rest))
        why = str(exc)
        return Begun(verdict, attempt, previous, delivery, unreadable=why, stored_event=stored)
    return Begun(verdict, attempt, previous, delivery, event_json)


class Store(Records):
    """Reads and writes the relay's records."""

    def __init__(self, client: redis.Redis, *, retention: float, sealer: Sealer = PLAIN) -> None:
        super().__init__(client, sealer=sealer)
        self.retention = int(retention)
        self._begin = load_script(client, "begin.lua")
        self._finish_script = load_script(client, "finish.lua")
        self._dead_script = load_script(client, "dead.lua")

    def begin(self, delivery_id: str, token: str, lock_ttl: float, deadline: float) -> Begun:
        """Claim the delivery for one run: bumps the attempt counter and takes its lock.

        The lock holds ``token``; the run passes it to its ``finish_*`` or ``park``, which
        release the lock only if it still holds that token: a run that outlived its lock
        must not free the lock of the run that took over.

        One round trip also returns the delivery record and the event's JSON (from its
        record, else the copy a dead letter kept).
        """
        return self.begin_many([(delivery_id, token)], lock_ttl, deadline)[0]

    def begin_many(
        self,
        claims: Sequence[tuple[str, str]],
        lock_ttl: float,
        deadline: float,
        *,
        holding: Holding | None = None,
    ) -> list[Begun]:
        """``begin`` for each ``(delivery id, token)``, all in one round trip. With a
        ``holding``, each run is noted in its worker's held hash in the same script, so
        the run is given back at once if that worker dies (``relay.state.heartbeats``)."""
        now = f"{time.time():.6f}"
        calls = [
            ScriptCall(
                self._begin,
                [keys.delivery(delivery_id), keys.lock(delivery_id), keys.INFLIGHT, keys.SCHEDULE]
                + ([holding.key] if holding else []),
                [token, int(lock_ttl * 1000), now, deadline, delivery_id, keys.event("")]
                + ([holding.run_field(delivery_id)] if holding else []),
            )
            for delivery_id, token in claims
        ]
        replies = run_together(self.redis, calls)
        return [
            replace(_begun(reply, delivery_id, self.sealer), token=token)
            for reply, (delivery_id, token) in zip(replies, claims, strict=True)
        ]

    def _attempt_json(self, delivery_id: str, attempt: dict[str, Any] | None) -> str:
        """The attempt as stored (its answer and error sealed), or '' for none."""
        return json.dumps(self.sealer.seal_attempt(delivery_id, attempt)) if attempt else ""

    def add_attempt(self, delivery_id: str, attempt: dict[str, Any]) -> None:
        pipe = self.redis.pipeline()
        pipe.rpush(keys.attempts(delivery_id), self._attempt_json(delivery_id, attempt))
        pipe.expire(keys.attempts(delivery_id), self.retention)
        pipe.execute()

    def _finish(
        self,
        delivery_id: str,
        attempt: dict[str, Any],
        fields: dict[str, str],
        due: float | None = None,
        *,
        count: AttemptOutcome | None = None,
        wait_reason: str = "",
        token: str,
        also: Sequence[ScriptCall] = (),
    ) -> list[Any]:
        """One script: record the attempt and fields, leave in-flight, release the lock
        if ``token`` still holds it, maybe schedule, and count ``count`` (delivered,
        retry or wait) for the target. The ``also`` calls (the breaker's record) go in
        the same round trip; their answers are returned."""
        stored = self.sealer.seal_fields(delivery_id, fields)
        flat = [item for pair in stored.items() for item in pair]
        ms = float(attempt.get("duration_ms") or 0) if attempt else 0.0
        label = wait_reason if count == AttemptOutcome.WAIT else bucket_label(ms)
        finish = ScriptCall(
            self._finish_script,
            [
                keys.delivery(delivery_id),
                keys.attempts(delivery_id),
                keys.INFLIGHT,
                keys.lock(delivery_id),
                keys.SCHEDULE,
                keys.STATS_TARGETS,
                keys.stats_minute(minute_of(time.time())),
            ],
            [
                self._attempt_json(delivery_id, attempt),
                self.retention,
                delivery_id,
                "" if due is None else f"{due:.6f}",
                count or "",
                label,
                ms,
                MINUTE_TTL,
                token,
                *flat,
            ],
        )
        return run_together(self.redis, [*also, finish])[: len(also)]

    def finish_delivered(
        self,
        delivery_id: str,
        attempt: dict[str, Any],
        *,
        token: str,
        also: Sequence[ScriptCall] = (),
    ) -> list[Any]:
        """Mark the delivery delivered; ``token`` (as for ``begin``) releases its lock."""
        now = time.time()
        return self._finish(
            delivery_id,
            attempt,
            DeliveryRecord(
                status=DeliveryStatus.DELIVERED,
                delivered_at=now,
                updated_at=now,
                last_error="",
                waiting="",
            ).to_fields(),
            count=AttemptOutcome.DELIVERED,
            token=token,
            also=also,
        )

    def park(self, delivery_id: str, due: float, reason: str, *, attempts: int, token: str) -> None:
        """Put the delivery back in the schedule without spending an attempt: the target
        is paused, throttled, its breaker is open or its rate limit is reached."""
        fields = DeliveryRecord(
            status=DeliveryStatus.SCHEDULED,
            next_at=due,
            updated_at=time.time(),
            attempts=attempts,
            waiting=reason,
        ).to_fields()
        self._finish(
            delivery_id, {}, fields, due, count=AttemptOutcome.WAIT, wait_reason=reason, token=token
        )

    def finish_retry(
        self,
        delivery_id: str,
        attempt: dict[str, Any],
        due: float,
        *,
        token: str,
        also: Sequence[ScriptCall] = (),
    ) -> list[Any]:
        """Park the delivery in the durable schedule until ``due``."""
        fields = DeliveryRecord(
            status=DeliveryStatus.SCHEDULED,
            next_at=due,
            updated_at=time.time(),
            last_error=attempt.get("error") or "",
            waiting="",
        ).to_fields()
        return self._finish(
            delivery_id, attempt, fields, due, count=AttemptOutcome.RETRY, token=token, also=also
        )

    def finish_dead(
        self,
        delivery_id: str,
        attempt: dict[str, Any] | None,
        reason: str,
        event_json: str,
        *,
        token: str,
        also: Sequence[ScriptCall] = (),
    ) -> list[Any]:
        """Dead-letter: keep delivery, attempts and a copy of the event until purged.
        ``event_json`` is the event's JSON, or the stored form of one that did not open
        (kept as it is, for the day its key is configured again)."""
        now = time.time()
        fields = DeliveryRecord(
            status=DeliveryStatus.DEAD,
            dead_at=now,
            dead_reason=reason,
            updated_at=now,
            event=event_json,
            last_error=(attempt or {}).get("error") or reason,
        ).to_fields()
        fields = self.sealer.seal_fields(delivery_id, fields)
        ms = float(attempt.get("duration_ms") or 0) if attempt else 0.0
        dead = ScriptCall(
            self._dead_script,
            [
                keys.delivery(delivery_id),
                keys.attempts(delivery_id),
                keys.DLQ,
                keys.INFLIGHT,
                keys.SCHEDULE,
                keys.lock(delivery_id),
                keys.STATS_TARGETS,
                keys.stats_minute(minute_of(now)),
            ],
            [
                self._attempt_json(delivery_id, attempt),
                f"{now:.6f}",
                delivery_id,
                bucket_label(ms) if attempt else "",
                ms,
                MINUTE_TTL,
                token,
                *(item for pair in fields.items() for item in pair),
            ],
        )
        return run_together(self.redis, [*also, dead])[: len(also)]

    # dead letters ---------------------------------------------------------------------
    def purge(self, delivery_id: str) -> bool:
        """Forget a dead letter for good; false if it is not in the dead-letter queue."""
        if not self.redis.zrem(keys.DLQ, delivery_id):
            return False
        self.redis.delete(keys.delivery(delivery_id), keys.attempts(delivery_id))
        return True
