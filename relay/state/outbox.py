"""Atomic record-and-enqueue steps, each one Redis script (``relay/state/lua/``:
``intake``, ``fanout``, ``release_due``, ``requeue_inflight``, ``replay``).

Every place a task enters a Celery queue also writes the record that explains it and
an entry in the in-flight set (``relay:inflight``, member → deadline). The scheduler
re-enqueues any entry whose deadline passes, so a message lost by the broker (a worker
killed between ``BRPOP`` and kombu's unacked bookkeeping, a flushed queue) is redone,
not lost. Duplicates that this may cause are dropped by the delivery's status check.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import redis

from relay.errors import Unauthorized
from relay.state import keys, stats
from relay.state.celery_message import encode_task_message
from relay.state.lua import ScriptCall, load_script
from relay.state.replicas import Replicas
from relay.state.sealing import PLAIN, Sealer


class Outbox:
    """Enqueue operations against one Redis; ``lease`` is how long a task may stay in flight.
    ``sealer`` seals a chained delivery's variables (the event is sealed by its caller)."""

    def __init__(
        self, client: redis.Redis, *, lease: float, retention: float, sealer: Sealer = PLAIN
    ) -> None:
        self.sealer = sealer
        self.redis = client
        self.lease = lease
        self.retention = int(retention)
        self._intake = load_script(client, "intake.lua")
        self._fanout = load_script(client, "fanout.lua")
        self._release_due = load_script(client, "release_due.lua")
        self._requeue_inflight = load_script(client, "requeue_inflight.lua")
        self._replay = load_script(client, "replay.lua")

    def accept_event(
        self,
        source_id: str,
        event_id: str,
        event_json: str,
        *,
        dedupe_key: str | None,
        dedupe_ttl: float,
        single_use: str | None = None,
        single_use_ttl: float = 0,
        replicas: Replicas | None = None,
    ) -> str | None:
        """Record and enqueue an event; return the earlier event id if it is a resend.

        Dedupe key, record and queue entry are written by one script: a crash or a lost
        connection leaves either all of them or none, so a sender's retry is never
        mistaken for a duplicate of an event that was not queued.

        ``single_use`` is a credential that may carry one message only (DingTalk's
        robot signature covers the timestamp, not the body): a second request with it
        is a resend if it has the same dedupe key, else a replay, refused with
        ``Unauthorized``.

        The same script counts the source's accepted events and resends, and this
        minute's received events (``relay.state.stats``): no round trip of its own.

        ``replicas``: how many replicas must confirm the write (or, for a resend, the
        write it repeats) before this returns; ``NotReplicated`` if fewer do in time.
        """
        now = time.time()
        message = encode_task_message(keys.FANOUT_TASK, [event_id], keys.FANOUT_QUEUE)
        call = ScriptCall(
            self._intake,
            [
                keys.dedupe(source_id, dedupe_key or "-"),
                keys.event(event_id),
                keys.FANOUT_QUEUE,
                keys.INFLIGHT,
                keys.EVENTS,
                keys.single_use(source_id, single_use or "-"),
                keys.STATS_SOURCES,
                keys.stats_minute(stats.minute_of(now)),
            ],
            [
                event_id,
                event_json,
                max(1, int(dedupe_ttl)),
                self.retention,
                message,
                now + self.lease,
                f"{now:.6f}",
                "1" if dedupe_key else "0",
                max(1, int(single_use_ttl)) if single_use else 0,
                dedupe_key or event_id,
                source_id,
                stats.MINUTE_TTL,
            ],
        )
        result = (replicas or Replicas()).run(self.redis, call)
        if result == -1:
            raise Unauthorized(
                "this signature was already used for another message", code="replayed_signature"
            )
        return result.decode() if isinstance(result, bytes) else None

    def fan_out(self, event_id: str, batch: Sequence[tuple[Mapping[str, str | int], str]]) -> int:
        """Record each ``(fields, queue)`` delivery not recorded yet (a fan-out rerun
        creates nothing twice), enqueue them, and mark the event routed; one script, one
        round trip. Returns how many deliveries were new.

        The deliveries bound for one queue travel in one task message, run side by side
        by one worker: an event for three webhook targets costs the broker one message,
        not three. Each keeps its own in-flight entry, so the watchdog redoes them one
        by one if the message is lost."""
        groups: dict[str, list[str]] = {}
        for fields, queue in batch:
            groups.setdefault(queue, []).append(str(fields["id"]))
        group_number = {queue: n for n, queue in enumerate(groups, start=1)}
        script_keys = [keys.INFLIGHT, keys.event_deliveries(event_id), keys.event(event_id)]
        args: list[str | int | float] = [
            time.time() + self.lease,
            self.retention,
            event_id,
            "routed" if batch else "unrouted",
            len(batch),
            len(groups),
        ]
        for fields, queue in batch:
            flat: list[str | int] = []
            for name, value in self.sealer.seal_fields(str(fields["id"]), fields).items():
                flat += [name, value]
            script_keys.append(keys.delivery(str(fields["id"])))
            args += [str(fields["id"]), group_number[queue], len(flat), *flat]
        for queue, ids in groups.items():
            script_keys.append(queue)
            args.append(encode_task_message(keys.DELIVER_TASK, ids, queue))
        return int(self._fanout(keys=script_keys, args=args))

    def release_due(self, delivery_id: str, queue: str, now: float) -> bool:
        """Move one due delivery from the schedule to its queue; false if another did."""
        message = encode_task_message(keys.DELIVER_TASK, [delivery_id], queue)
        return bool(
            self._release_due(
                keys=[keys.SCHEDULE, queue, keys.INFLIGHT, keys.delivery(delivery_id)],
                args=[delivery_id, message, now + self.lease, now],
            )
        )

    def requeue_inflight(self, member: str, queue: str, now: float) -> bool:
        """Push again a task whose in-flight deadline passed; false if it moved on."""
        kind, _, ident = member.partition(":")
        task = keys.FANOUT_TASK if kind == "fanout" else keys.DELIVER_TASK
        message = encode_task_message(task, [ident], queue)
        return bool(
            self._requeue_inflight(
                keys=[keys.INFLIGHT, queue], args=[member, message, now + self.lease, now]
            )
        )

    def replay(self, delivery_id: str, queue: str, *, replicas: Replicas | None = None) -> bool:
        """Send a dead letter again under the same delivery id; false if not dead (any more).

        The retry policy starts over from here (``attempt_base``, a fresh ``max_age``
        window); the attempt counter does not, so attempt records stay numbered.
        ``replicas`` as for ``accept_event``."""
        now = time.time()
        message = encode_task_message(keys.DELIVER_TASK, [delivery_id], queue)
        call = ScriptCall(
            self._replay,
            [
                keys.DLQ,
                keys.delivery(delivery_id),
                keys.INFLIGHT,
                queue,
                keys.attempts(delivery_id),
            ],
            [delivery_id, message, now + self.lease, f"{now:.6f}", self.retention],
        )
        return bool((replicas or Replicas()).run(self.redis, call))
