"""The durable schedule: due items move once, even with several schedulers at once."""

from __future__ import annotations

import base64
import json
import threading
import time

import redis

from relay.state import keys
from relay.state.outbox import Outbox
from relay.state.scheduler import Scheduler


def make_delivery(queue: Outbox, delivery_id: str, name: str = "relay.deliver.webhook") -> None:
    queue.fan_out(
        "evt_1",
        [
            (
                {
                    "id": delivery_id,
                    "event_id": "evt_1",
                    "source": "ops",
                    "target": "sink",
                    "route": 0,
                    "queue": name,
                    "status": "queued",
                    "attempts": 0,
                    "created_at": time.time(),
                    "window_start": time.time(),
                    "updated_at": time.time(),
                },
                name,
            )
        ],
    )


def test_each_due_delivery_is_released_exactly_once_by_competing_schedulers(
    redis_client: redis.Redis,
) -> None:
    queue = Outbox(redis_client, lease=60, retention=3600)
    ids = [f"dlv_{i}" for i in range(300)]
    for delivery_id in ids:
        make_delivery(queue, delivery_id)
    redis_client.delete("relay.deliver.webhook", keys.INFLIGHT)
    past = time.time() - 1
    redis_client.zadd(keys.SCHEDULE, {d: past for d in ids})
    for d in ids:
        redis_client.hset(keys.delivery(d), mapping={"status": "scheduled", "next_at": past})

    schedulers = [
        Scheduler(
            redis.Redis(connection_pool=redis_client.connection_pool),
            queue,
            interval=0.01,
            retention=3600,
            batch=50,
        )
        for _ in range(4)
    ]
    threads = [
        threading.Thread(target=lambda s=s: [s.tick() for _ in range(20)]) for s in schedulers
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    pushed = [json.loads(m) for m in redis_client.lrange("relay.deliver.webhook", 0, -1)]
    sent = sorted(json.loads(base64.b64decode(m["body"]))[0][0] for m in pushed)
    assert sent == sorted(ids)
    assert redis_client.zcard(keys.SCHEDULE) == 0
    assert all(redis_client.hget(keys.delivery(d), "status") == b"queued" for d in ids)


def test_items_not_yet_due_stay_scheduled(redis_client: redis.Redis) -> None:
    queue = Outbox(redis_client, lease=60, retention=3600)
    make_delivery(queue, "dlv_later")
    redis_client.delete("relay.deliver.webhook")
    redis_client.zadd(keys.SCHEDULE, {"dlv_later": time.time() + 60})
    Scheduler(redis_client, queue, interval=0.01, retention=3600).tick()
    assert redis_client.llen("relay.deliver.webhook") == 0
    assert redis_client.zcard(keys.SCHEDULE) == 1


def test_a_task_whose_message_was_lost_is_pushed_again(redis_client: redis.Redis) -> None:
    queue = Outbox(redis_client, lease=0.2, retention=3600)
    make_delivery(queue, "dlv_lost")
    redis_client.delete("relay.deliver.webhook")  # the broker lost the message
    scheduler = Scheduler(redis_client, queue, interval=0.01, retention=3600)
    scheduler.tick()
    assert redis_client.llen("relay.deliver.webhook") == 0  # still within its lease
    time.sleep(0.3)
    assert scheduler.tick() == (0, 1)
    assert redis_client.llen("relay.deliver.webhook") == 1
    assert redis_client.zscore(keys.INFLIGHT, "deliver:dlv_lost") > time.time()


def test_intake_writes_record_dedupe_and_message_together(redis_client: redis.Redis) -> None:
    queue = Outbox(redis_client, lease=60, retention=3600)
    assert queue.accept_event("ops", "evt_a", "{}", dedupe_key="m1", dedupe_ttl=60) is None
    assert queue.accept_event("ops", "evt_b", "{}", dedupe_key="m1", dedupe_ttl=60) == "evt_a"
    assert queue.accept_event("ops", "evt_c", "{}", dedupe_key=None, dedupe_ttl=60) is None
    assert redis_client.llen(keys.FANOUT_QUEUE) == 2
    assert redis_client.exists(keys.event("evt_a"), keys.event("evt_c")) == 2
    assert not redis_client.exists(keys.event("evt_b"))
    assert 3590 < redis_client.ttl(keys.event("evt_a")) <= 3600
    assert 50 < redis_client.ttl(keys.dedupe("ops", "m1")) <= 60
