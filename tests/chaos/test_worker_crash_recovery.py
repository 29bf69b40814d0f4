"""With the default settings, the work of a ``kill -9``'d worker runs again within seconds,
and the work of a worker that is only slow runs once.

Default visibility timeout (1 h) and task time limit (300 s): without worker heartbeats a
begun attempt waits for its lock and in-flight deadline (305 s) and a reserved message
for kombu's visibility timeout (an hour).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.state import keys
from tests.conftest import RelayProcesses, ops_config, wait_for
from tests.pipeline_support import EVENT, signed_post

# The defaults, for the web process, the workers and the scheduler alike.
DEFAULTS = {
    "RELAY_VISIBILITY_TIMEOUT": "3600",
    "RELAY_TASK_TIME_LIMIT": "300",
    "RELAY_HTTP_TIMEOUT": "15",
    "RELAY_SCHEDULER_INTERVAL": "0.2",
}
CONCURRENCY = 20  # conftest's workers: -c 20, prefetch multiplier 1
RECOVERY_BOUND = 30.0


@dataclass
class HoldingSink:
    """Holds every request until ``release`` is set (a slow target), then answers at once;
    records each arrival by delivery id."""

    server: HTTPServer
    hold_for: float = 120.0
    release: threading.Event = field(default_factory=threading.Event)
    arrivals: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.server.expect_request("/in", method="POST").respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.arrivals.append((time.time(), request.headers["webhook-id"]))
        self.release.wait(self.hold_for)
        return Response("ok")

    def count(self, since: float = 0.0) -> dict[str, int]:
        with self.lock:
            seen: dict[str, int] = {}
            for at, delivery_id in self.arrivals:
                if at >= since:
                    seen[delivery_id] = seen.get(delivery_id, 0) + 1
            return seen

    def first_after(self, since: float) -> dict[str, float]:
        with self.lock:
            first: dict[str, float] = {}
            for at, delivery_id in self.arrivals:
                if at >= since:
                    first.setdefault(delivery_id, at)
            return first


@pytest.fixture
def sink(threaded_httpserver: HTTPServer) -> Iterator[HoldingSink]:
    held = HoldingSink(threaded_httpserver)
    yield held
    held.release.set()  # let the server's handler threads end


def start(
    sink: HoldingSink,
    write_config: Callable[..., Path],
    make_app: Callable[..., Flask],
    relay_processes: Callable[..., RelayProcesses],
    **target: Any,
) -> tuple[Any, RelayProcesses]:
    path = write_config(ops_config(sink.server.url_for("/in"), timeout="60s", **target))
    app = make_app(path, visibility_timeout=3600, task_time_limit=300, http_timeout=15)
    procs = relay_processes(path, worker=False, **DEFAULTS)
    return app.test_client(), procs


def deliveries(client: redis.Redis, events: list[str]) -> set[str]:
    return {m.decode() for e in events for m in client.smembers(keys.event_deliveries(e))}


def all_delivered(client: redis.Redis, events: list[str]) -> bool:
    ids = deliveries(client, events)
    statuses = {client.hget(keys.delivery(d), "status") for d in ids}
    return len(ids) == len(events) and statuses == {b"delivered"}


def held_by(client: redis.Redis, worker_id: str) -> tuple[set[str], set[str]]:
    """What a worker holds: the deliveries it has begun, and the delivery tags of messages
    it reserved and has not begun (still unacked, no run noted)."""
    fields = [f.decode() for f in client.hkeys(keys.worker_held(worker_id))]
    runs = [f.split(" ", 1) for f in fields if " " in f]
    begun_tags = {tag for tag, _ in runs}
    reserved = {
        f
        for f in fields
        if " " not in f and f not in begun_tags and client.hexists(keys.KOMBU_UNACKED, f)
    }
    return {member.removeprefix("deliver:") for _, member in runs}, reserved


def test_kill_9_of_a_worker_its_begun_and_reserved_work_runs_again_within_30s(
    sink: HoldingSink,
    write_config: Callable[..., Path],
    make_app: Callable[..., Flask],
    relay_processes: Callable[..., RelayProcesses],
    redis_client: redis.Redis,
) -> None:
    client, procs = start(sink, write_config, make_app, relay_processes)
    # A prefetch above 1 so worker A also reserves a message it cannot start yet (with
    # the default of 1 that happens only for a moment, between receiving and beginning).
    procs.start_worker("worker-a", "--prefetch-multiplier", "2")
    events = [signed_post(client, EVENT).get_json()["event_id"] for _ in range(CONCURRENCY + 3)]

    # Worker A: every green thread in an attempt the sink holds, and a message reserved
    # behind them, waiting for a free green thread.
    wait_for(lambda: len(sink.count()) >= CONCURRENCY, timeout=60)
    worker_a = wait_for(lambda: redis_client.zrange(keys.WORKERS, 0, -1), timeout=10)[0].decode()

    def a_holds_both() -> tuple[set[str], set[str]] | None:
        begun, reserved = held_by(redis_client, worker_a)
        return (begun, reserved) if len(begun) == CONCURRENCY and reserved else None

    begun, reserved = wait_for(a_holds_both, timeout=30, interval=0.2)
    procs.start_worker("worker-b")  # the live worker that takes over
    wait_for(lambda: redis_client.zcard(keys.WORKERS) == 2, timeout=60)

    killed_at = time.time()
    procs.kill("worker-a")
    sink.release.set()  # the target is fast again: what remains is recovery time
    pending = {d for d in deliveries(redis_client, events) if sink.count().get(d, 0) <= 1}
    wait_for(lambda: all_delivered(redis_client, events), timeout=90, interval=0.2)

    again = sink.first_after(killed_at)
    assert begun <= set(again), "every attempt A had begun ran again"
    recovery = max(again[d] for d in begun | (pending & set(again))) - killed_at
    print(
        f"\nkill -9 of a worker holding {len(begun)} begun attempts and {len(reserved)} "
        f"reserved message(s): the last held delivery ran again {recovery:.1f}s after the kill"
    )
    assert recovery < RECOVERY_BOUND
    assert redis_client.zcard(keys.DLQ) == 0
    assert [w.decode() for w in redis_client.zrange(keys.WORKERS, 0, -1)] != [worker_a]
    assert "scheduler.recovered_dead_worker" in procs.log("scheduler")
    lost = [
        json.loads(a)
        for d in begun
        for a in redis_client.lrange(keys.attempts(d), 0, -1)
        if json.loads(a)["outcome"] == "lost"
    ]
    assert len(lost) == len(begun), "each interrupted attempt is recorded as lost, once"


def test_a_slow_but_alive_workers_deliveries_are_attempted_once(
    sink: HoldingSink,
    write_config: Callable[..., Path],
    make_app: Callable[..., Flask],
    relay_processes: Callable[..., RelayProcesses],
    redis_client: redis.Redis,
) -> None:
    sink.hold_for = 15.0  # longer than a dead worker's silence (10 s), within the timeout
    client, procs = start(sink, write_config, make_app, relay_processes)
    procs.start_worker("worker-a")
    procs.start_worker("worker-b")
    wait_for(lambda: redis_client.zcard(keys.WORKERS) == 2, timeout=60)
    events = [signed_post(client, EVENT).get_json()["event_id"] for _ in range(8)]

    wait_for(lambda: all_delivered(redis_client, events), timeout=120, interval=0.5)
    counts = sink.count()
    assert set(counts) == deliveries(redis_client, events)
    assert set(counts.values()) == {1}, f"some delivery was attempted twice: {counts}"
    attempts = [
        json.loads(a)["outcome"]
        for d in counts
        for a in redis_client.lrange(keys.attempts(d), 0, -1)
    ]
    assert attempts == ["delivered"] * len(counts)
    assert "recovered_dead_worker" not in procs.log("scheduler")
    assert redis_client.zcard(keys.WORKERS) == 2
