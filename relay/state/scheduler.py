"""``relay scheduler``: moves due deliveries into their queues and redoes lost tasks.

Two sweeps per tick, both safe to run in several processes at once because each
item moves in one Redis script that first checks it is still due:

- the schedule (retry backoff and other waits) → the delivery's Celery queue, unless the
  delivery's target would refuse it now (paused, throttled, breaker open or probing, its
  cap on attempts in flight reached): then it stays scheduled, due again when the block
  may end, with no task message. Waiters behind a hung target would otherwise come back
  as messages in the healthy targets' queue, each a claim and a gate call in a worker,
  only to be parked again. The look only reads the target's state and spares messages:
  the worker's gate stays the authority. A sweep releases at most as many deliveries to
  a target as it has free slots, and one while its breaker waits for a probe;
- the in-flight set: a task whose deadline passed (its message was lost, or its
  worker died) is pushed again; the delivery's own status check drops duplicates.

It also moves the fan-out mark of ordered delivery (``relay.state.lanes``) over the events
fanned out since the last tick, so an ordered delivery seldom waits for the look itself.

And one watch: a worker whose heartbeat stopped (``relay.state.heartbeats``) has its
reserved messages put back in their queues and the locks of its begun runs released,
seconds after it died instead of at those deadlines. The watch waits until this
scheduler has seen Redis answer for ``DEAD_AFTER`` without a break: after a Redis outage
every worker's beat is old, and none of them is dead for that.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import redis
import structlog

from relay.liveness import LivenessFile
from relay.state import keys
from relay.state.celery_message import encode_task_message
from relay.state.gate import FULL_WAIT, PAUSE_RECHECK, PROBE_BUSY_WAIT
from relay.state.heartbeats import DEAD_AFTER, Heartbeats
from relay.state.lanes import Lanes
from relay.state.lua import load_script
from relay.state.outbox import Outbox

log = structlog.get_logger("relay.scheduler")


class Scheduler:
    def __init__(
        self,
        client: redis.Redis,
        outbox: Outbox,
        *,
        interval: float,
        retention: float,
        batch: int = 500,
    ) -> None:
        self.redis = client
        self.outbox = outbox
        self.interval = interval
        self.retention = retention
        self.batch = batch
        self._last_trim = 0.0
        self.heartbeats = Heartbeats(client)
        self.dead_after = DEAD_AFTER
        self._watching_since: float | None = None  # monotonic; None after a Redis error
        self._release = load_script(client, "release_due.lua")
        self.lanes = Lanes(client)
        self.held = 0  # due deliveries the last sweep kept scheduled: their target is blocked

    def _queue_of(self, delivery_id: str) -> str | None:
        name = self.redis.hget(keys.delivery(delivery_id), "queue")
        return name.decode() if name else None

    def release_due(self, now: float) -> int:
        """Queue the due deliveries whose target may take them; how many were queued. Those
        it would refuse are moved to when they may go (``held``, counted per sweep)."""
        released = 0
        self.held = 0
        taken: Counter[str] = Counter()  # per target: released in this sweep
        due = self.redis.zrangebyscore(keys.SCHEDULE, "-inf", now, start=0, num=self.batch)
        for raw in due:
            delivery_id = raw.decode()
            queue, target = self.redis.hmget(keys.delivery(delivery_id), "queue", "target")
            if queue is None:  # record expired or purged: nothing left to send
                self.redis.zrem(keys.SCHEDULE, delivery_id)
                continue
            answer = self._release_one(
                delivery_id, queue.decode(), target.decode() if target else None, now, taken
            )
            if isinstance(answer, list):
                self.held += 1
            elif answer == 1:
                released += 1
                if target:
                    taken[target.decode()] += 1
        return released

    def _release_one(
        self, delivery_id: str, queue: str, target: str | None, now: float, taken: Counter[str]
    ) -> int | list[bytes]:
        """``release_due.lua``'s answer for one delivery: 1 queued, 0 not (any more) due,
        or ``[reason, due]`` if its target would refuse it now."""
        script_keys = [keys.SCHEDULE, queue, keys.INFLIGHT, keys.delivery(delivery_id)]
        args: list[str | int | float] = [
            delivery_id,
            encode_task_message(keys.DELIVER_TASK, [delivery_id], queue),
            now + self.outbox.lease,
            now,
        ]
        if target is not None:
            script_keys += [
                keys.target_state(target),
                keys.target_throttle(target),
                keys.target_running(target),
                keys.target_slow(target),
            ]
            args += [
                int(PAUSE_RECHECK * 1000),
                int(PROBE_BUSY_WAIT * 1000),
                int(FULL_WAIT * 1000),
                taken[target],
                random.random(),
            ]
        answer: int | list[bytes] = self._release(keys=script_keys, args=args)
        return answer

    def requeue_lost(self, now: float) -> int:
        requeued = 0
        expired = self.redis.zrangebyscore(keys.INFLIGHT, "-inf", now, start=0, num=self.batch)
        for raw in expired:
            member = raw.decode()
            kind, _, ident = member.partition(":")
            queue = keys.FANOUT_QUEUE if kind == "fanout" else self._queue_of(ident)
            if queue is None:
                self.redis.zrem(keys.INFLIGHT, member)
                continue
            if self.outbox.requeue_inflight(member, queue, now):
                requeued += 1
                log.warning("scheduler.requeued_lost_task", task=member)
        return requeued

    def recover_dead_workers(self) -> int:
        """Give back the work of each worker whose heartbeat stopped; how many workers."""
        recovered = 0
        for worker_id in self.heartbeats.dead(self.dead_after, self.batch):
            done = self.heartbeats.recover(worker_id, self.dead_after)
            if done is None:  # it beat again meanwhile: alive after all
                continue
            recovered += 1
            log.warning(
                "scheduler.recovered_dead_worker",
                worker=worker_id,
                messages=done.messages,
                runs=done.released,
                made_due=done.made_due,
            )
        return recovered

    def _watching(self) -> bool:
        """Whether Redis has answered this scheduler for ``dead_after`` without a break."""
        if self._watching_since is None:
            self._watching_since = time.monotonic()
        return time.monotonic() - self._watching_since >= self.dead_after

    def trim(self, now: float) -> None:
        """Drop index entries of events older than the retention period (once a minute)."""
        if now - self._last_trim >= 60:
            self.redis.zremrangebyscore(keys.EVENTS, "-inf", now - self.retention)
            self._last_trim = now

    def tick(self) -> tuple[int, int]:
        now = time.time()
        if self._watching():
            self.recover_dead_workers()
        released = self.release_due(now)
        requeued = self.requeue_lost(now)
        self.lanes.advance_mark(self.batch)
        self.trim(now)
        self.redis.set(keys.SCHEDULER_HEARTBEAT, f"{now:.6f}", ex=3600)
        return released, requeued

    def run(self, stop: threading.Event, alive: LivenessFile | None = None) -> None:
        """Tick until ``stop``; ``alive`` is touched every turn, also while Redis is away."""
        log.info("scheduler.started", interval=self.interval)
        while not stop.is_set():
            if alive is not None:
                alive.touch()
            try:
                released, requeued = self.tick()
            except redis.RedisError as exc:
                self._watching_since = None
                log.error("scheduler.redis_error", error=type(exc).__name__)
                stop.wait(min(5.0, max(self.interval, 1.0)))
                continue
            if released or self.held:
                log.info("scheduler.released", count=released, held=self.held)
            if released + self.held < self.batch:
                stop.wait(self.interval)
        log.info("scheduler.stopped")
