"""relay.state.lifecycle against a real Redis: the typed record reads exactly what the
store's scripts write, its enums are the strings those scripts use, and records from
before a field existed still read."""

from __future__ import annotations

import json
import re
import time

import pytest
import redis

from relay.state import keys
from relay.state.deliveries import Store
from relay.state.lifecycle import (
    AttemptOutcome,
    ClaimVerdict,
    DeliveryRecord,
    DeliveryStatus,
)
from relay.state.outbox import Outbox
from relay.state.stats import Stats

QUEUE = keys.deliver_queue("webhook")
TIMES = ("created_at", "updated_at", "window_start", "next_at", "delivered_at", "dead_at")
SIX_DECIMALS = re.compile(r"[0-9]+\.[0-9]{6}")  # how every version has stored times
EVENT = {"id": "evt_1", "source": "ops", "type": "message", "text": "hi"}


@pytest.fixture
def outbox(redis_client: redis.Redis) -> Outbox:
    return Outbox(redis_client, lease=60, retention=3600)


@pytest.fixture
def store(redis_client: redis.Redis) -> Store:
    return Store(redis_client, retention=3600)


def fan_out(outbox: Outbox, delivery_id: str, now: float) -> DeliveryRecord:
    """One event and one delivery for it, written by the intake and fan-out scripts."""
    outbox.accept_event("ops", "evt_1", json.dumps(EVENT), dedupe_key=None, dedupe_ttl=60)
    record = DeliveryRecord.new(
        id=delivery_id,
        event_id="evt_1",
        source="ops",
        target="sink",
        route=0,
        queue=QUEUE,
        now=now,
    )
    assert outbox.fan_out("evt_1", [(record.to_fields(), QUEUE)]) == 1
    return record


def stored(client: redis.Redis, delivery_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(keys.delivery(delivery_id)).items()}


def assert_round_trip(client: redis.Redis, store: Store, delivery_id: str) -> DeliveryRecord:
    """The record read back writes exactly the stored fields, byte for byte."""
    raw = stored(client, delivery_id)
    record = store.delivery(delivery_id)
    assert record is not None
    assert record == DeliveryRecord.from_fields(client.hgetall(keys.delivery(delivery_id)))
    assert record.to_fields() == raw
    for name in TIMES:
        assert name not in raw or SIX_DECIMALS.fullmatch(raw[name]), (name, raw[name])
    return record


def test_a_record_round_trips_through_every_step_the_scripts_write(
    redis_client: redis.Redis, outbox: Outbox, store: Store
) -> None:
    now = 1718000000.123456
    written = fan_out(outbox, "dlv_1", now)
    queued = assert_round_trip(redis_client, store, "dlv_1")
    assert queued == written
    assert set(stored(redis_client, "dlv_1")) == {
        "id", "event_id", "source", "target", "route", "queue", "status", "attempts",
        "created_at", "updated_at", "window_start",
    }  # fmt: skip
    assert stored(redis_client, "dlv_1")["created_at"] == "1718000000.123456"
    assert stored(redis_client, "dlv_1")["route"] == "0"

    begun = store.begin("dlv_1", "tok", 30, time.time() + 30)
    assert begun.verdict is ClaimVerdict.RUN and begun.delivery == written
    assert begun.previous_status is DeliveryStatus.QUEUED
    running = assert_round_trip(redis_client, store, "dlv_1")
    assert running.status is DeliveryStatus.RUNNING and running.attempts == 1

    attempt = {"n": 1, "duration_ms": 3.0, "outcome": AttemptOutcome.RETRY, "error": "HTTP 503"}
    store.finish_retry("dlv_1", attempt, time.time() + 600, token="tok")
    scheduled = assert_round_trip(redis_client, store, "dlv_1")
    assert scheduled.status is DeliveryStatus.SCHEDULED
    assert scheduled.last_error == "HTTP 503" and scheduled.waiting == ""
    assert [a["outcome"] for a in store.attempts("dlv_1")] == ["retry"]

    store.finish_dead("dlv_1", None, "gave up", json.dumps(EVENT), token="")
    dead = assert_round_trip(redis_client, store, "dlv_1")
    assert dead.status is DeliveryStatus.DEAD and dead.dead_reason == "gave up"
    assert dead.event is not None and json.loads(dead.event) == EVENT
    [letter] = list(store.dead_letters())
    assert letter.delivery == dead and letter.id == "dlv_1"

    assert outbox.replay("dlv_1", QUEUE)
    replayed = assert_round_trip(redis_client, store, "dlv_1")
    assert replayed.status is DeliveryStatus.QUEUED
    assert replayed.attempt_base == 1 and replayed.replays == 1
    assert replayed.dead_at is None and replayed.replayed_at is not None

    again = store.begin("dlv_1", "tok2", 30, time.time() + 30)
    assert again.attempt == 2 and again.attempt_since_replay == 1
    store.finish_delivered("dlv_1", {"n": 2, "duration_ms": 1.0}, token="tok2")
    delivered = assert_round_trip(redis_client, store, "dlv_1")
    assert delivered.status is DeliveryStatus.DELIVERED and delivered.delivered_at is not None


def test_the_enums_are_the_strings_the_scripts_answer_and_count(
    redis_client: redis.Redis, outbox: Outbox, store: Store
) -> None:
    """Every claim verdict the begin script can give parses, and each is seen once."""
    seen: set[ClaimVerdict] = set()
    fan_out(outbox, "dlv_1", time.time())
    seen.add(store.begin("dlv_missing", "t", 30, time.time() + 30).verdict)
    run = store.begin("dlv_1", "t1", 30, time.time() + 30)
    seen.add(run.verdict)
    seen.add(store.begin("dlv_1", "t2", 30, time.time() + 30).verdict)  # lock held
    store.park("dlv_1", time.time() + 600, "paused", attempts=0, token="t1")
    assert redis_client.hget(keys.delivery("dlv_1"), "status") == DeliveryStatus.SCHEDULED.encode()
    seen.add(store.begin("dlv_1", "t3", 30, time.time() + 30).verdict)  # parked for later
    redis_client.hset(keys.delivery("dlv_1"), "next_at", "0")
    assert store.begin("dlv_1", "t4", 30, time.time() + 30).verdict is ClaimVerdict.RUN
    store.finish_delivered("dlv_1", {"n": 1, "duration_ms": 2.0}, token="t4")
    seen.add(store.begin("dlv_1", "t5", 30, time.time() + 30).verdict)
    redis_client.hset(keys.delivery("dlv_1"), "status", "dead")
    seen.add(store.begin("dlv_1", "t6", 30, time.time() + 30).verdict)
    assert seen == set(ClaimVerdict)

    # the begin script writes "running" itself; the release script writes "queued"
    fan_out(outbox, "dlv_2", time.time())
    store.begin("dlv_2", "t", 30, time.time() + 30)
    assert redis_client.hget(keys.delivery("dlv_2"), "status") == b"running"
    assert store.delivery("dlv_2") == DeliveryRecord.from_fields(stored(redis_client, "dlv_2"))
    assert (store.delivery("dlv_2") or DeliveryRecord()).status is DeliveryStatus.RUNNING
    redis_client.hset(keys.delivery("dlv_2"), "status", "scheduled")
    redis_client.zadd(keys.SCHEDULE, {"dlv_2": 0})
    assert outbox.release_due("dlv_2", QUEUE, time.time())
    assert (store.delivery("dlv_2") or DeliveryRecord()).status is DeliveryStatus.QUEUED

    outcomes = Stats(redis_client).targets()["sink"]
    assert outcomes["outcomes"]["delivered"] == 1
    assert set(outcomes["outcomes"]) <= set(AttemptOutcome)
    assert set(outcomes["waits"]) == {"paused"}


def test_a_record_written_before_the_typed_record_still_reads(
    redis_client: redis.Redis, store: Store
) -> None:
    """Fields as an older version wrote them: no attempt_base, window_start or
    updated_at; counters and times as plain strings; a field this version ignores."""
    old = {
        "id": "dlv_old",
        "event_id": "evt_old",
        "source": "ops",
        "target": "sink",
        "route": "2",
        "queue": QUEUE,
        "status": "scheduled",
        "attempts": "3",
        "created_at": "1700000000.5",
        "next_at": "0",
        "last_error": "HTTP 500",
        "legacy": "kept as is",
    }
    redis_client.hset(keys.delivery("dlv_old"), mapping=old)
    record = store.delivery("dlv_old")
    assert record is not None
    assert (record.route, record.attempts, record.created_at) == (2, 3, 1700000000.5)
    assert record.status is DeliveryStatus.SCHEDULED
    assert record.attempt_base is None and record.window_start is None
    assert record.updated_at is None and record.dead_at is None

    begun = store.begin("dlv_old", "t", 30, time.time() + 30)
    assert begun.verdict is ClaimVerdict.RUN
    assert begun.attempt == 4 and begun.attempt_since_replay == 4
    assert begun.delivery.last_error == "HTTP 500"
    assert redis_client.hget(keys.delivery("dlv_old"), "legacy") == b"kept as is"


def test_unreadable_values_read_as_absent() -> None:
    record = DeliveryRecord.from_fields(
        {b"attempts": b"many", b"route": b"x", b"status": b"lost?", b"dead_at": b"nan"}
    )
    assert record == DeliveryRecord()
    assert record.to_fields() == {}
