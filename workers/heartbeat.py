"""This worker's heartbeat and its note of what it holds (``relay.state.heartbeats``).

The beat runs in a native thread with its own Redis client. Under ``-P gevent`` a
greenlet would fall silent whenever a task keeps the CPU (the hub runs only between
greenlets), and a worker that is merely busy would be declared dead and its work run
twice; a native thread gets the interpreter every few milliseconds whatever the
greenlets do. The same thread drops the held fields of finished work, a batch per beat,
so finishing a task costs no round trip of its own.

What the worker holds is noted where it happens: a reserved message when Celery
receives it (``task_received``, before any greenlet may begin it), a run by the begin
script itself.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis
import structlog

from relay.settings import Settings
from relay.state import keys
from relay.state.connection import redis_client
from relay.state.heartbeats import BEAT_EVERY, Heartbeats, Holding

log = structlog.get_logger("relay.worker")


@dataclass
class _Beating:
    """The heartbeat of this process, once started."""

    worker_id: str
    pid: int
    notes: Heartbeats  # on the worker's shared client: notes reserved messages
    done: deque[str]  # held fields of finished work, dropped at the next beat
    stopped: bool = False


_beating: _Beating | None = None


def start(settings: Settings, nodename: str, client: redis.Redis) -> str:
    """Register this worker with a first beat, then beat from a native thread; the id.

    ``client`` is the worker's own (greenlet-safe) client; the beat thread opens its own.
    """
    global _beating
    worker_id = f"{nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    notes = Heartbeats(client)
    notes.beat(worker_id, first=True)
    beating = _beating = _Beating(worker_id, os.getpid(), notes, deque())
    _native_thread(lambda: _beat_forever(settings, beating))
    log.info("worker.heartbeat_started", worker=worker_id, every=BEAT_EVERY)
    return worker_id


def hold_message(tag: str | None) -> None:
    """Note a message this worker just reserved (Celery's ``task_received``)."""
    beating = _beating
    if beating is None or not tag:
        return
    try:
        beating.notes.hold_message(beating.worker_id, tag)
    except redis.RedisError as exc:  # the visibility timeout still brings it back
        log.warning("worker.hold_failed", error=type(exc).__name__)


def holding(tag: str | None) -> Holding | None:
    """Where the runs of the message with this delivery tag are noted, if anywhere."""
    beating = _beating
    return Holding(beating.worker_id, tag) if beating is not None and tag else None


def finished(held: Holding | None, delivery_ids: Iterable[str] = ()) -> None:
    """The message and its runs are done: their held fields go at the next beat."""
    if held is None or _beating is None:
        return
    fields = [held.tag, *(held.run_field(d) for d in delivery_ids)]
    if os.getpid() == _beating.pid:
        _beating.done.extend(fields)
    else:  # a forked pool child: no beat thread of its own here
        _beating.notes.redis.hdel(keys.worker_held(_beating.worker_id), *fields)


def stop() -> None:
    """Stop beating (tests; a worker simply exits): the scheduler then gives back what
    this worker still holds once the silence is long enough."""
    global _beating
    if _beating is not None:
        _beating.stopped = True
        _beating = None


def _beat_forever(settings: Settings, beating: _Beating) -> None:
    beats = Heartbeats(redis_client(settings))
    sleep = _real_sleep()
    while True:
        sleep(BEAT_EVERY)
        if beating.stopped:
            return
        done = [beating.done.popleft() for _ in range(len(beating.done))]
        try:
            alive = beats.beat(beating.worker_id, done)
        except Exception as exc:  # never let the beat stop while the worker lives
            beating.done.extend(done)
            log.warning("worker.heartbeat_failed", error=type(exc).__name__)
            continue
        if not alive:
            log.error(
                "worker.declared_dead",
                worker=beating.worker_id,
                detail="this worker was silent too long; its work was given to others",
            )


def _gevent_monkey() -> Any:
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return None
    return monkey if monkey.is_module_patched("threading") else None


def _native_thread(target: Callable[[], None]) -> None:
    """Run ``target`` in an OS thread, even where gevent patched ``threading``."""
    monkey = _gevent_monkey()
    if monkey is None:
        threading.Thread(target=target, name="relay-heartbeat", daemon=True).start()
    else:
        monkey.get_original("_thread", "start_new_thread")(target, ())


def _real_sleep() -> Callable[[float], None]:
    monkey = _gevent_monkey()
    return time.sleep if monkey is None else monkey.get_original("time", "sleep")
