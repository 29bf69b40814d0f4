"""Fan-out sends one task message per queue, carrying every delivery bound for it."""

from __future__ import annotations

import base64
import json
import time

import redis

from relay.state import keys
from relay.state.outbox import Outbox

WEBHOOK, NOTIFY = keys.deliver_queue("webhook"), keys.deliver_queue("notify")


def delivery(delivery_id: str, target: str, queue: str) -> tuple[dict[str, str | int], str]:
    now = f"{time.time():.6f}"
    fields: dict[str, str | int] = {
        "id": delivery_id,
        "event_id": "evt_1",
        "source": "ops",
        "target": target,
        "route": 0,
        "queue": queue,
        "status": "queued",
        "attempts": 0,
        "created_at": now,
        "window_start": now,
        "updated_at": now,
    }
    return fields, queue


def task_args(client: redis.Redis, queue: str) -> list[list[str]]:
    """The args of every message waiting in ``queue``, oldest first."""
    messages = [json.loads(raw) for raw in reversed(client.lrange(queue, 0, -1))]
    assert all(m["headers"]["task"] == keys.DELIVER_TASK for m in messages)
    return [json.loads(base64.b64decode(m["body"]))[0] for m in messages]


def test_one_message_per_queue_with_all_its_deliveries(redis_client: redis.Redis) -> None:
    queue = Outbox(redis_client, lease=60, retention=3600)
    batch = [
        delivery("dlv_a", "hook-a", WEBHOOK),
        delivery("dlv_n", "robot", NOTIFY),
        delivery("dlv_b", "hook-b", WEBHOOK),
        delivery("dlv_c", "hook-c", WEBHOOK),
    ]
    assert queue.fan_out("evt_1", batch) == 4
    assert task_args(redis_client, WEBHOOK) == [["dlv_a", "dlv_b", "dlv_c"]]
    assert task_args(redis_client, NOTIFY) == [["dlv_n"]]
    # each delivery keeps its own record and in-flight entry for the watchdog
    for delivery_id in ("dlv_a", "dlv_b", "dlv_c", "dlv_n"):
        assert redis_client.hget(keys.delivery(delivery_id), "status") == b"queued"
        assert redis_client.zscore(keys.INFLIGHT, f"deliver:{delivery_id}") is not None
    assert redis_client.smembers(keys.event_deliveries("evt_1")) == {
        b"dlv_a",
        b"dlv_b",
        b"dlv_c",
        b"dlv_n",
    }


def test_rerun_pushes_nothing_again(redis_client: redis.Redis) -> None:
    queue = Outbox(redis_client, lease=60, retention=3600)
    batch = [delivery("dlv_a", "hook-a", WEBHOOK), delivery("dlv_b", "hook-b", WEBHOOK)]
    assert queue.fan_out("evt_1", batch) == 2
    assert queue.fan_out("evt_1", batch) == 0
    assert task_args(redis_client, WEBHOOK) == [["dlv_a", "dlv_b"]]


def test_a_new_target_after_a_rerun_is_sent_with_its_queue(redis_client: redis.Redis) -> None:
    """A config change between a fan-out and its rerun adds a target: the queue's
    message is sent again; the delivery sent before is dropped by its status check."""
    queue = Outbox(redis_client, lease=60, retention=3600)
    assert queue.fan_out("evt_1", [delivery("dlv_a", "hook-a", WEBHOOK)]) == 1
    batch = [delivery("dlv_a", "hook-a", WEBHOOK), delivery("dlv_b", "hook-b", WEBHOOK)]
    assert queue.fan_out("evt_1", batch) == 1
    assert task_args(redis_client, WEBHOOK) == [["dlv_a"], ["dlv_a", "dlv_b"]]


def test_unrouted_event_pushes_nothing(redis_client: redis.Redis) -> None:
    queue = Outbox(redis_client, lease=60, retention=3600)
    redis_client.hset(keys.event("evt_1"), "status", "queued")
    assert queue.fan_out("evt_1", []) == 0
    assert redis_client.llen(WEBHOOK) == 0
    assert redis_client.hget(keys.event("evt_1"), "status") == b"unrouted"
