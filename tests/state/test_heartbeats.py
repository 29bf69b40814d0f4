"""A dead worker's work is given back at once; a live worker's is left alone.

Messages are reserved by kombu's own Redis transport (``SimpleQueue.get`` pops the
message and writes kombu's unacked entry, as a Celery worker's consumer does), runs are
begun by the begin script, and the scheduler's watch gives back what a silent worker held.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from kombu import Connection
from kombu.simple import SimpleQueue

from relay.settings import Settings
from relay.state import keys
from relay.state.deliveries import Store
from relay.state.heartbeats import Heartbeats, Holding
from relay.state.lifecycle import ClaimVerdict, DeliveryStatus
from relay.state.outbox import Outbox
from relay.state.scheduler import Scheduler
from workers import heartbeat

QUEUE = "relay.deliver.webhook"


@pytest.fixture
def kombu_queue(redis_url: str) -> Iterator[SimpleQueue]:
    """The webhook queue as a Celery worker's consumer reads it (acks emulated in Redis)."""
    with Connection(redis_url) as conn:
        queue = conn.SimpleQueue(QUEUE)
        yield queue
        queue.close()


def make_delivery(outbox: Outbox, delivery_id: str) -> None:
    """A queued delivery of ``evt_1`` to the webhook queue, pushed by the fan-out script."""
    now = time.time()
    fields = {
        "id": delivery_id,
        "event_id": "evt_1",
        "source": "ops",
        "target": "sink",
        "route": 0,
        "queue": QUEUE,
        "status": "queued",
        "attempts": 0,
        "created_at": now,
        "window_start": now,
        "updated_at": now,
    }
    outbox.fan_out("evt_1", [(fields, QUEUE)])


def queued_ids(client: redis.Redis) -> list[str]:
    """Delivery ids of the messages in the queue, in the order BRPOP takes them."""
    messages = [json.loads(m) for m in reversed(client.lrange(QUEUE, 0, -1))]
    return [json.loads(base64.b64decode(m["body"]))[0][0] for m in messages]


def reserve(client: redis.Redis, outbox: Outbox, queue: SimpleQueue, delivery_id: str) -> str:
    """Queue a delivery, reserve its message through kombu; its delivery tag."""
    make_delivery(outbox, delivery_id)
    client.delete(keys.event_deliveries("evt_1"))  # the next make_delivery is new again
    message = queue.get(timeout=5)
    assert message.payload[0] == [delivery_id]
    return str(message.delivery_tag)


def make_dead(client: redis.Redis, worker_id: str) -> None:
    client.zadd(keys.WORKERS, {worker_id: time.time() - 60})


@pytest.fixture
def parts(redis_client: redis.Redis) -> tuple[Heartbeats, Store, Outbox, Scheduler]:
    outbox = Outbox(redis_client, lease=3600, retention=3600)
    scheduler = Scheduler(redis_client, outbox, interval=0.01, retention=3600)
    return Heartbeats(redis_client), Store(redis_client, retention=3600), outbox, scheduler


def test_a_dead_workers_messages_and_runs_are_given_back_and_a_live_workers_are_not(
    redis_client: redis.Redis,
    kombu_queue: SimpleQueue,
    parts: tuple[Heartbeats, Store, Outbox, Scheduler],
) -> None:
    beats, store, outbox, scheduler = parts
    for worker in ("dead", "live"):
        assert beats.beat(worker, first=True)
    held: dict[str, str] = {}
    for delivery_id, worker in [("d_run", "dead"), ("d_reserved", "dead"), ("l_run", "live")]:
        held[delivery_id] = reserve(redis_client, outbox, kombu_queue, delivery_id)
        beats.hold_message(worker, held[delivery_id])
    held["l_reserved"] = reserve(redis_client, outbox, kombu_queue, "l_reserved")
    beats.hold_message("live", held["l_reserved"])
    for delivery_id, worker in [("d_run", "dead"), ("l_run", "live")]:
        holding = Holding(worker, held[delivery_id])
        claim = [(delivery_id, f"tok_{delivery_id}")]
        [begun] = store.begin_many(claim, 300, time.time() + 305, holding=holding)
        assert begun.verdict is ClaimVerdict.RUN
    assert queued_ids(redis_client) == []
    make_dead(redis_client, "dead")

    assert scheduler.recover_dead_workers() == 1

    assert sorted(queued_ids(redis_client)) == ["d_reserved", "d_run"]
    unacked = {tag.decode() for tag in redis_client.hkeys(keys.KOMBU_UNACKED)}
    assert unacked == {held["l_run"], held["l_reserved"]}  # the live worker's stay reserved
    assert redis_client.zcard(keys.KOMBU_UNACKED_INDEX) == 2
    assert redis_client.get(keys.lock("d_run")) is None
    assert redis_client.get(keys.lock("l_run")) == b"tok_l_run"
    assert [w.decode() for w in redis_client.zrange(keys.WORKERS, 0, -1)] == ["live"]
    assert not redis_client.exists(keys.worker_held("dead"))
    assert scheduler.recover_dead_workers() == 0  # nothing twice

    # The restored message is the same message, marked redelivered like kombu's restore.
    restored = json.loads(redis_client.lrange(QUEUE, -1, -1)[0])
    assert restored["headers"]["redelivered"] is True
    assert restored["properties"]["delivery_tag"] in (held["d_run"], held["d_reserved"])

    # A live worker takes the interrupted run over at once; the live worker's run is its own.
    again = store.begin("d_run", "tok_2", 300, time.time() + 305)
    assert again.verdict is ClaimVerdict.RUN
    assert again.previous_status is DeliveryStatus.RUNNING
    assert store.begin("l_run", "tok_3", 300, time.time() + 305).verdict is ClaimVerdict.LOCKED


def test_a_begun_run_whose_message_is_gone_is_made_due_and_pushed_again(
    redis_client: redis.Redis,
    kombu_queue: SimpleQueue,
    parts: tuple[Heartbeats, Store, Outbox, Scheduler],
) -> None:
    beats, store, outbox, scheduler = parts
    beats.beat("dead", first=True)
    tag = reserve(redis_client, outbox, kombu_queue, "d_run")
    beats.hold_message("dead", tag)
    store.begin_many([("d_run", "tok")], 300, time.time() + 305, holding=Holding("dead", tag))
    redis_client.delete(keys.KOMBU_UNACKED, keys.KOMBU_UNACKED_INDEX)  # lost, or restored
    make_dead(redis_client, "dead")

    assert scheduler.recover_dead_workers() == 1
    assert redis_client.get(keys.lock("d_run")) is None
    assert scheduler.requeue_lost(time.time()) == 1  # due now, not in 305 s
    assert queued_ids(redis_client) == ["d_run"]


def test_finished_work_of_a_dead_worker_is_not_run_again(
    redis_client: redis.Redis,
    kombu_queue: SimpleQueue,
    parts: tuple[Heartbeats, Store, Outbox, Scheduler],
) -> None:
    beats, store, outbox, scheduler = parts
    beats.beat("dead", first=True)
    make_delivery(outbox, "d_done")
    message = kombu_queue.get(timeout=5)
    tag = str(message.delivery_tag)
    beats.hold_message("dead", tag)
    store.begin_many([("d_done", "tok")], 300, time.time() + 305, holding=Holding("dead", tag))
    store.finish_delivered("d_done", {"n": 1, "outcome": "delivered"}, token="tok")
    message.ack()
    make_dead(redis_client, "dead")

    assert scheduler.recover_dead_workers() == 1
    assert queued_ids(redis_client) == []
    assert scheduler.requeue_lost(time.time() + 3600) == 0


def test_a_worker_that_beats_again_keeps_its_work_and_learns_if_it_was_given_away(
    redis_client: redis.Redis,
    kombu_queue: SimpleQueue,
    parts: tuple[Heartbeats, Store, Outbox, Scheduler],
) -> None:
    beats, store, outbox, scheduler = parts
    beats.beat("slow", first=True)
    tag = reserve(redis_client, outbox, kombu_queue, "d_1")
    beats.hold_message("slow", tag)
    make_dead(redis_client, "slow")
    assert beats.dead() == ["slow"]
    assert beats.beat("slow")  # it beat between the scheduler's look and its recovery
    assert beats.recover("slow") is None
    assert redis_client.hexists(keys.KOMBU_UNACKED, tag)

    make_dead(redis_client, "slow")
    assert scheduler.recover_dead_workers() == 1
    assert beats.beat("slow") is False  # back after its work was given to others


def test_a_beat_drops_the_held_fields_of_finished_work(
    redis_client: redis.Redis, parts: tuple[Heartbeats, Store, Outbox, Scheduler]
) -> None:
    beats = parts[0]
    beats.beat("w", first=True)
    held = Holding("w", "tag1")
    beats.hold_message("w", "tag1")
    redis_client.hset(held.key, held.run_field("d1"), "tok")
    beats.hold_message("w", "tag2")
    beats.beat("w", [held.tag, held.run_field("d1")])
    assert redis_client.hgetall(held.key) == {b"tag2": b""}
    assert 0 < redis_client.ttl(held.key) <= 86400


def test_the_watch_waits_until_redis_has_answered_for_the_whole_silence(
    redis_client: redis.Redis, parts: tuple[Heartbeats, Store, Outbox, Scheduler]
) -> None:
    """After a Redis outage every beat is old: a scheduler that just got Redis back must
    not take every live worker for dead."""
    beats, _, _, scheduler = parts
    scheduler.dead_after = 0.5
    beats.beat("w", first=True)
    make_dead(redis_client, "w")
    scheduler.tick()
    assert redis_client.zscore(keys.WORKERS, "w") is not None
    time.sleep(0.6)
    scheduler.tick()
    assert redis_client.zscore(keys.WORKERS, "w") is None


def test_the_worker_beats_from_its_own_thread_and_drops_finished_fields(
    redis_client: redis.Redis,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(heartbeat, "BEAT_EVERY", 0.05)
    worker_id = heartbeat.start(make_settings(), "w@host", redis_client)
    try:
        heartbeat.hold_message("tag1")
        held = heartbeat.holding("tag1")
        assert held == Holding(worker_id, "tag1")
        redis_client.hset(held.key, held.run_field("d1"), "tok")
        first = redis_client.zscore(keys.WORKERS, worker_id)
        heartbeat.finished(held, ["d1"])
        deadline = time.monotonic() + 10
        while redis_client.exists(held.key) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not redis_client.hkeys(held.key)
        assert redis_client.zscore(keys.WORKERS, worker_id) > first
    finally:
        heartbeat.stop()


BUSY_WORKER = """
from gevent import monkey; monkey.patch_all()
import sys, time
from relay.settings import Settings
from relay.state.connection import redis_client
from workers import heartbeat
heartbeat.BEAT_EVERY = 0.1
settings = Settings(redis_url=sys.argv[1])
heartbeat.start(settings, "busy@host", redis_client(settings))
print("@burning", time.time(), flush=True)
end = time.time() + 3
while time.time() < end:  # a task that keeps the CPU: the gevent hub does not run
    sum(range(1000))
print("@done", time.time(), flush=True)
"""


def test_a_worker_whose_greenlets_keep_the_cpu_still_beats(
    redis_client: redis.Redis, redis_url: str
) -> None:
    """Under ``-P gevent`` a beat from a greenlet would stop while a task holds the CPU,
    and a busy worker would be taken for dead; the beat's native thread does not stop."""
    seen: set[float] = set()
    with subprocess.Popen(
        [sys.executable, "-c", BUSY_WORKER, redis_url], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        lines = iter(proc.stdout.readline, "")
        burning = next(float(line.split()[1]) for line in lines if line.startswith("@burning"))
        while proc.poll() is None:
            for _, score in redis_client.zrange(keys.WORKERS, 0, -1, withscores=True):
                seen.add(score)
            time.sleep(0.05)
        done = next(float(line.split()[1]) for line in lines if line.startswith("@done"))
    during = [s for s in seen if burning + 1.0 < s < done]
    assert during, "no beat while the worker's greenlets kept the CPU"
