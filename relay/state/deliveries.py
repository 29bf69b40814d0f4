"""A delivery's life in Redis: claimed for a run, finished, parked, dead-lettered, purged.

Events, deliveries and attempts expire after the retention period; a dead letter
keeps its delivery, attempts and a copy of its event until it is replayed or purged.
Each step is one Lua script, so a crash never leaves a record half written. The reads
live in ``relay.state.records``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from relay.state import keys
from relay.state.lua import ScriptCall, run_together
from relay.state.records import Records
from relay.state.stats import LUA_COUNT_ATTEMPT, MINUTE_TTL, bucket_label, minute_of

_BEGIN = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', 0, ''} end
if status == 'delivered' or status == 'dead' then return {status, 0, ''} end
if status == 'scheduled' then
  local next_at = tonumber(redis.call('HGET', KEYS[1], 'next_at') or '0')
  if next_at > tonumber(ARGV[3]) + 1 then return {'not_due', 0, ''} end
end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'locked', 0, ''}
end
local fields = redis.call('HGETALL', KEYS[1])
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'updated_at', ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[4], 'deliver:' .. ARGV[5])
-- the event key is derived, not declared: the relay runs on one Redis, not a cluster
local event_id = redis.call('HGET', KEYS[1], 'event_id')
local data = event_id and redis.call('HGET', ARGV[6] .. event_id, 'data')
return {'run', attempts, status, fields, data or ''}
"""


# One reply to parse instead of a MULTI's: this runs after every attempt. It also counts
# (relay.state.stats): ARGV[5] is what to count for the delivery's target (delivered, retry,
# wait, or nothing), ARGV[6] the latency bucket (or the wait's reason), ARGV[7] the
# attempt's milliseconds, ARGV[8] the minute hash's TTL; the record's fields follow.
_FINISH = (
    LUA_COUNT_ATTEMPT
    + """
local target = redis.call('HGET', KEYS[1], 'target')
if ARGV[1] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[5], ARGV[4], ARGV[3]) end
redis.call('ZREM', KEYS[3], 'deliver:' .. ARGV[3])
redis.call('DEL', KEYS[4])
if target and ARGV[5] == 'wait' then
  redis.call('HINCRBY', KEYS[6], target .. '|wait|' .. ARGV[6], 1)
elseif target and ARGV[5] ~= '' then
  count_attempt(KEYS[6], KEYS[7], target, ARGV[5], ARGV[6], ARGV[7], ARGV[8])
end
return 1
"""
)

# Dead-letter: keep delivery, attempts and the event; count the death (and the last
# attempt, if there was one) for the target. ARGV: attempt JSON or '', now, delivery id,
# latency bucket or '', ms, minute TTL, then the record's fields.
_DEAD = (
    LUA_COUNT_ATTEMPT
    + """
local target = redis.call('HGET', KEYS[1], 'target')
if ARGV[1] ~= '' then redis.call('RPUSH', KEYS[2], ARGV[1]) end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
redis.call('ZREM', KEYS[4], 'deliver:' .. ARGV[3])
redis.call('ZREM', KEYS[5], ARGV[3])
redis.call('DEL', KEYS[6])
redis.call('HINCRBY', KEYS[8], 'dead', 1)
redis.call('EXPIRE', KEYS[8], ARGV[6])
if target then
  if ARGV[4] ~= '' then
    count_attempt(KEYS[7], KEYS[8], target, 'dead', ARGV[4], ARGV[5], ARGV[6])
  else
    redis.call('HINCRBY', KEYS[7], target .. '|outcome|dead', 1)
  end
end
return 1
"""
)


@dataclass(frozen=True)
class Begun:
    """The answer to "may this message run the delivery now?"."""

    verdict: str  # run | delivered | dead | missing | not_due | locked
    attempt: int
    previous_status: str
    delivery: dict[str, str] = field(default_factory=dict)  # as it was before this run
    event_json: str | None = None

    @property
    def attempt_since_replay(self) -> int:
        """This attempt's number counted from the last replay: what the retry policy
        (``max_attempts``, backoff) applies to. ``attempt`` itself keeps counting, so
        attempt records stay numbered across replays."""
        return self.attempt - int(self.delivery.get("attempt_base") or 0)


def _begun(reply: list[Any]) -> Begun:
    verdict, attempt, previous = reply[0].decode(), int(reply[1]), reply[2].decode()
    if verdict != "run":
        return Begun(verdict, attempt, previous)
    flat = [item.decode() for item in reply[3]]
    delivery = dict(zip(flat[::2], flat[1::2], strict=True))
    event_json = reply[4].decode() if reply[4] else delivery.get("event")
    return Begun(verdict, attempt, previous, delivery, event_json)


class Store(Records):
    """Reads and writes the relay's records."""

    def __init__(self, client: redis.Redis, *, retention: float) -> None:
        super().__init__(client)
        self.retention = int(retention)
        self._begin = client.register_script(_BEGIN)
        self._finish_script = client.register_script(_FINISH)
        self._dead_script = client.register_script(_DEAD)

    def begin(self, delivery_id: str, token: str, lock_ttl: float, deadline: float) -> Begun:
        """Claim the delivery for one run: bumps the attempt counter and takes its lock.

        One round trip also returns the delivery record and the event's JSON (from its
        record, else the copy a dead letter kept).
        """
        return self.begin_many([(delivery_id, token)], lock_ttl, deadline)[0]

    def begin_many(
        self, claims: Sequence[tuple[str, str]], lock_ttl: float, deadline: float
    ) -> list[Begun]:
        """``begin`` for each ``(delivery id, token)``, all in one round trip."""
        now = f"{time.time():.6f}"
        calls = [
            ScriptCall(
                self._begin,
                [keys.delivery(delivery_id), keys.lock(delivery_id), keys.INFLIGHT, keys.SCHEDULE],
                [token, int(lock_ttl * 1000), now, deadline, delivery_id, keys.event("")],
            )
            for delivery_id, token in claims
        ]
        return [_begun(reply) for reply in run_together(self.redis, calls)]

    def add_attempt(self, delivery_id: str, attempt: dict[str, Any]) -> None:
        pipe = self.redis.pipeline()
        pipe.rpush(keys.attempts(delivery_id), json.dumps(attempt))
        pipe.expire(keys.attempts(delivery_id), self.retention)
        pipe.execute()

    def _finish(
        self,
        delivery_id: str,
        attempt: dict[str, Any],
        fields: dict[str, str],
        due: float | None = None,
        *,
        count: str = "",
        wait_reason: str = "",
        also: Sequence[ScriptCall] = (),
    ) -> list[Any]:
        """One script: record the attempt and fields, leave in-flight, unlock, maybe
        schedule, and count ``count`` (delivered, retry or wait) for the target. The
        ``also`` calls (the breaker's record) go in the same round trip; their answers
        are returned."""
        flat = [item for pair in fields.items() for item in pair]
        ms = float(attempt.get("duration_ms") or 0) if attempt else 0.0
        label = wait_reason if count == "wait" else bucket_label(ms)
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
                json.dumps(attempt) if attempt else "",
                self.retention,
                delivery_id,
                "" if due is None else f"{due:.6f}",
                count,
                label,
                ms,
                MINUTE_TTL,
                *flat,
            ],
        )
        return run_together(self.redis, [*also, finish])[: len(also)]

    def finish_delivered(
        self, delivery_id: str, attempt: dict[str, Any], *, also: Sequence[ScriptCall] = ()
    ) -> list[Any]:
        now = f"{time.time():.6f}"
        return self._finish(
            delivery_id,
            attempt,
            {
                "status": "delivered",
                "delivered_at": now,
                "updated_at": now,
                "last_error": "",
                "waiting": "",
            },
            count="delivered",
            also=also,
        )

    def park(self, delivery_id: str, due: float, reason: str, *, attempts: int) -> None:
        """Put the delivery back in the schedule without spending an attempt: the target
        is paused, throttled, its breaker is open or its rate limit is reached."""
        fields = {
            "status": "scheduled",
            "next_at": f"{due:.6f}",
            "updated_at": f"{time.time():.6f}",
            "attempts": str(attempts),
            "waiting": reason,
        }
        self._finish(delivery_id, {}, fields, due, count="wait", wait_reason=reason)

    def finish_retry(
        self,
        delivery_id: str,
        attempt: dict[str, Any],
        due: float,
        *,
        also: Sequence[ScriptCall] = (),
    ) -> list[Any]:
        """Park the delivery in the durable schedule until ``due``."""
        fields = {
            "status": "scheduled",
            "next_at": f"{due:.6f}",
            "updated_at": f"{time.time():.6f}",
            "last_error": attempt.get("error") or "",
            "waiting": "",
        }
        return self._finish(delivery_id, attempt, fields, due, count="retry", also=also)

    def finish_dead(
        self,
        delivery_id: str,
        attempt: dict[str, Any] | None,
        reason: str,
        event_json: str,
        *,
        also: Sequence[ScriptCall] = (),
    ) -> list[Any]:
        """Dead-letter: keep delivery, attempts and a copy of the event until purged."""
        now = time.time()
        fields = {
            "status": "dead",
            "dead_at": f"{now:.6f}",
            "dead_reason": reason,
            "updated_at": f"{now:.6f}",
            "event": event_json,
            "last_error": (attempt or {}).get("error") or reason,
        }
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
                json.dumps(attempt) if attempt else "",
                f"{now:.6f}",
                delivery_id,
                bucket_label(ms) if attempt else "",
                ms,
                MINUTE_TTL,
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
