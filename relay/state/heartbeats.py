"""Worker heartbeats and what each worker holds, so a dead worker's work runs again in seconds.

Without them, the work of a worker killed with ``kill -9`` waits for a deadline: a run it
had begun for its lock and in-flight deadline (the task time limit and a margin), a
message it had reserved but not begun for kombu's visibility timeout (an hour by
default). With them:

- every worker beats (``relay:workers``, by Redis's clock) from a thread of its own, so a
  long attempt or a busy CPU does not silence it;
- it notes what it holds in ``relay:worker:<id>:held``: each message it reserves (by
  kombu's delivery tag, when Celery receives it) and each run it begins (by the begin
  script, with the run's lock token);
- the scheduler declares a worker dead once its beat is ``DEAD_AFTER`` old, puts its
  reserved messages back at the front of their queues (what kombu's restore does, only
  sooner) and releases the locks its runs still hold, so a live worker runs them at once.

A worker that is alive is never declared dead for being slow: its beat does not wait
for its tasks. ``DEAD_AFTER`` is several beats, so one late beat changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from relay.state import keys
from relay.state.lua import load_script

BEAT_EVERY = 2.0  # seconds between a worker's beats
DEAD_AFTER = 10.0  # a worker silent this long is dead, and its work is given back
HELD_TTL = 86400  # a held hash no scheduler recovered outlives its usefulness by far


@dataclass(frozen=True)
class Holding:
    """Where one task message's runs are noted: its worker's held hash, by its delivery tag."""

    worker_id: str
    tag: str

    @property
    def key(self) -> str:
        return keys.worker_held(self.worker_id)

    def run_field(self, delivery_id: str) -> str:
        return f"{self.tag} deliver:{delivery_id}"


@dataclass(frozen=True)
class Recovered:
    """What giving back a dead worker's work did."""

    messages: int  # reserved messages put back in their queues
    released: int  # locks of begun runs released
    made_due: int  # begun runs whose message was gone, made due in the in-flight set


class Heartbeats:
    """The worker set and the held hashes on one Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._beat = load_script(client, "heartbeat.lua")
        self._dead = load_script(client, "dead_workers.lua")
        self._recover = load_script(client, "recover_worker.lua")

    def beat(self, worker_id: str, done: Sequence[str] = (), *, first: bool = False) -> bool:
        """Say the worker is alive and drop the held fields of work it finished; false if
        it had been declared dead meanwhile (its work was given back to others)."""
        answer = self._beat(
            keys=[keys.WORKERS, keys.worker_held(worker_id)],
            args=[worker_id, "0" if first else "1", HELD_TTL, *done],
        )
        return bool(answer)

    def hold_message(self, worker_id: str, tag: str) -> None:
        """Note a message the worker just reserved, before it may begin it."""
        self.redis.hset(keys.worker_held(worker_id), tag, "")

    def dead(self, dead_after: float = DEAD_AFTER, limit: int = 100) -> list[str]:
        """The ids of workers silent for ``dead_after`` seconds."""
        return [raw.decode() for raw in self._dead(keys=[keys.WORKERS], args=[dead_after, limit])]

    def recover(self, worker_id: str, dead_after: float = DEAD_AFTER) -> Recovered | None:
        """Give back a dead worker's work; ``None`` if it beat again meanwhile."""
        held = self.redis.hkeys(keys.worker_held(worker_id))
        tags = [field.decode() for field in held if b" " not in field]
        entries = self.redis.hmget(keys.KOMBU_UNACKED, tags) if tags else []
        args: list[str | float] = [worker_id, dead_after, keys.lock("")]
        for tag, entry in zip(tags, entries, strict=True):
            restored = _restorable(entry)
            if restored is not None and entry is not None:
                args += [tag, restored[0], entry.decode(), restored[1]]
        answer = self._recover(
            keys=[
                keys.WORKERS,
                keys.worker_held(worker_id),
                keys.KOMBU_UNACKED,
                keys.KOMBU_UNACKED_INDEX,
                keys.INFLIGHT,
            ],
            args=args,
        )
        if int(answer[0]) < 0:
            return None
        return Recovered(int(answer[0]), int(answer[1]), int(answer[2]))


def _restorable(entry: bytes | None) -> tuple[str, str] | None:
    """The queue and message kombu's restore would push for an unacked entry, marked
    redelivered as kombu marks it; ``None`` for one that is not a relay queue's (kombu's
    own restore still returns it after the visibility timeout)."""
    if entry is None:
        return None
    try:
        message, _exchange, routing_key = json.loads(entry)
        priority = message.get("properties", {}).get("priority")
    except (ValueError, TypeError, AttributeError):
        return None
    if routing_key not in keys.ALL_QUEUES or priority not in (None, 0):
        return None
    try:
        message["headers"]["redelivered"] = True
        message["properties"]["delivery_info"]["redelivered"] = True
    except (KeyError, TypeError):
        pass
    return routing_key, json.dumps(message)
