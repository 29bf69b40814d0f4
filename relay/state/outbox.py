"""Atomic record-and-enqueue steps, each one Redis script.

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

# KEYS: dedupe, event, fan-out queue, inflight, events index, single-use credential,
# source counters, this minute's counters (relay.state.stats). ARGV: event id, event JSON,
# dedupe ttl, retention, message, deadline, now, dedupe on, single-use ttl, dedupe
# key, source id, minute TTL.
_INTAKE = """
if ARGV[9] ~= '0' then
  local seen = redis.call('GET', KEYS[6])
  if seen and seen ~= ARGV[10] then return -1 end
  redis.call('SET', KEYS[6], ARGV[10], 'EX', ARGV[9])
end
if ARGV[8] == '1' then
  local existing = redis.call('GET', KEYS[1])
  if existing then
    redis.call('HINCRBY', KEYS[7], ARGV[11] .. '|duplicates', 1)
    return existing
  end
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
end
redis.call('HSET', KEYS[2], 'data', ARGV[2], 'received_at', ARGV[7], 'status', 'queued')
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[5], ARGV[7], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[6], 'fanout:' .. ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[5])
redis.call('HINCRBY', KEYS[7], ARGV[11] .. '|accepted', 1)
redis.call('HINCRBY', KEYS[8], 'received', 1)
redis.call('EXPIRE', KEYS[8], ARGV[12])
return false
"""

# KEYS: inflight, event's delivery set, event record, one per delivery, one queue per
# group. ARGV: deadline, retention, event id, event status, deliveries, groups, then per
# delivery: id, group number, number of field args, field args...; then one message per
# group (its deliveries' ids, pushed once if any of them is new).
_FANOUT = """
local deadline, retention = ARGV[1], ARGV[2]
local count, groups = tonumber(ARGV[5]), tonumber(ARGV[6])
local created, new_in, a = 0, {}, 7
for k = 4, 3 + count do
  local id, group, n = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  if redis.call('EXISTS', KEYS[k]) == 0 then
    redis.call('HSET', KEYS[k], unpack(ARGV, a + 3, a + 2 + n))
    redis.call('EXPIRE', KEYS[k], retention)
    redis.call('SADD', KEYS[2], id)
    redis.call('ZADD', KEYS[1], deadline, 'deliver:' .. id)
    new_in[group] = true
    created = created + 1
  end
  a = a + 3 + n
end
for g = 1, groups do
  if new_in[g] then redis.call('LPUSH', KEYS[3 + count + g], ARGV[a + g - 1]) end
end
redis.call('EXPIRE', KEYS[2], retention)
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], 'status', ARGV[4])
  redis.call('EXPIRE', KEYS[3], retention)
end
redis.call('ZREM', KEYS[1], 'fanout:' .. ARGV[3])
return created
"""

_RELEASE_DUE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[4]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[4]) == 0 then return 0 end
redis.call('HSET', KEYS[4], 'status', 'queued')
redis.call('ZADD', KEYS[3], ARGV[3], 'deliver:' .. ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
"""

_REQUEUE_INFLIGHT = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
"""

_REPLAY = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local spent = redis.call('HGET', KEYS[2], 'attempts') or '0'
redis.call('HSET', KEYS[2], 'status', 'queued', 'attempt_base', spent, 'window_start', ARGV[4],
           'replayed_at', ARGV[4], 'updated_at', ARGV[4])
redis.call('HDEL', KEYS[2], 'dead_at', 'dead_reason')
redis.call('HINCRBY', KEYS[2], 'replays', 1)
for i = 5, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[3], 'deliver:' .. ARGV[1])
redis.call('LPUSH', KEYS[4], ARGV[2])
return 1
"""


class Outbox:
    """Enqueue operations against one Redis; ``lease`` is how long a task may stay in flight."""

    def __init__(self, client: redis.Redis, *, lease: float, retention: float) -> None:
        self.redis = client
        self.lease = lease
        self.retention = int(retention)
        self._intake = client.register_script(_INTAKE)
        self._fanout = client.register_script(_FANOUT)
        self._release_due = client.register_script(_RELEASE_DUE)
        self._requeue_inflight = client.register_script(_REQUEUE_INFLIGHT)
        self._replay = client.register_script(_REPLAY)

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
        """
        now = time.time()
        message = encode_task_message(keys.FANOUT_TASK, [event_id], keys.FANOUT_QUEUE)
        result = self._intake(
            keys=[
                keys.dedupe(source_id, dedupe_key or "-"),
                keys.event(event_id),
                keys.FANOUT_QUEUE,
                keys.INFLIGHT,
                keys.EVENTS,
                keys.single_use(source_id, single_use or "-"),
                keys.STATS_SOURCES,
                keys.stats_minute(stats.minute_of(now)),
            ],
            args=[
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
            for name, value in fields.items():
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

    def replay(self, delivery_id: str, queue: str) -> bool:
        """Send a dead letter again under the same delivery id; false if not dead (any more).

        The retry policy starts over from here (``attempt_base``, a fresh ``max_age``
        window); the attempt counter does not, so attempt records stay numbered."""
        now = time.time()
        message = encode_task_message(keys.DELIVER_TASK, [delivery_id], queue)
        return bool(
            self._replay(
                keys=[
                    keys.DLQ,
                    keys.delivery(delivery_id),
                    keys.INFLIGHT,
                    queue,
                    keys.attempts(delivery_id),
                ],
                args=[delivery_id, message, now + self.lease, f"{now:.6f}", self.retention],
            )
        )
