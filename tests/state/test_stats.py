"""relay.state.stats against a real Redis: what the intake, the receiver and the finish
scripts count, and how Stats reads it back (buckets, percentiles, windows, series)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from flask import Flask

from relay import signing
from relay.cli.embedded import free_port
from relay.state import keys, stats
from relay.state.deliveries import Store
from relay.state.outbox import Outbox
from relay.state.stats import LATENCY_BUCKETS_MS, Stats, cumulate, quantile
from tests.conftest import TEST_SECRET, ops_config


@pytest.fixture
def queue(redis_client: redis.Redis) -> Outbox:
    return Outbox(redis_client, lease=60, retention=3600)


@pytest.fixture
def store(redis_client: redis.Redis) -> Store:
    return Store(redis_client, retention=3600)


def make_delivery(queue: Outbox, delivery_id: str, target: str) -> None:
    """A delivery record as fan-out writes it."""
    fields: dict[str, str | int] = {
        "id": delivery_id,
        "event_id": "evt_" + delivery_id,
        "source": "ops",
        "target": target,
        "queue": keys.deliver_queue("webhook"),
        "status": "queued",
        "attempts": 0,
    }
    queue.fan_out("evt_" + delivery_id, [(fields, keys.deliver_queue("webhook"))])


def steady_minute() -> None:
    """Start a test's writes early enough in a minute that they all land in one."""
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)


def attempt(ms: float, outcome: str = "delivered") -> dict[str, object]:
    return {"n": 1, "started_at": time.time(), "duration_ms": ms, "outcome": outcome}


# -- buckets and percentiles ------------------------------------------------------------------


def test_bucket_labels_follow_the_bounds() -> None:
    assert stats.bucket_label(0) == "5"
    assert stats.bucket_label(5) == "5"  # a bound is inclusive, as Prometheus's le
    assert stats.bucket_label(5.01) == "10"
    assert stats.bucket_label(30000) == "30000"
    assert stats.bucket_label(30000.5) == "+Inf"


def test_cumulate_counts_every_stored_bound_even_an_old_one() -> None:
    cumulative = cumulate({"5": 2, "7": 1, "250": 3, "+Inf": 4})
    assert list(cumulative) == [float(le) for le in LATENCY_BUCKETS_MS]
    assert cumulative[5.0] == 2
    assert cumulative[10.0] == 3  # "7" was a bound once; it still counts, below 10
    assert cumulative[100.0] == 3
    assert cumulative[250.0] == 6
    assert cumulative[30000.0] == 6  # +Inf is only in the total count


def test_quantile_interpolates_inside_the_bucket() -> None:
    cumulative = cumulate({"5": 50, "50": 49, "2500": 1})
    assert quantile(0.5, cumulative, 100) == 5.0
    assert quantile(0.99, cumulative, 100) == 50.0
    assert quantile(0.25, cumulative, 100) == 2.5  # halfway into the first bucket (0..5)
    assert quantile(0.995, cumulative, 100) == 1750.0  # 1000 + 1500 * 0.5
    assert quantile(0.5, cumulate({}), 0) is None


def test_quantile_past_the_last_bound_answers_the_last_bound() -> None:
    assert quantile(0.99, cumulate({"+Inf": 3}), 3) == 30000.0


# -- intake -----------------------------------------------------------------------------------


def test_intake_counts_accepted_and_duplicates_per_source_and_minute(
    queue: Outbox, redis_client: redis.Redis
) -> None:
    steady_minute()
    assert queue.accept_event("ops", "e1", "{}", dedupe_key="m1", dedupe_ttl=60) is None
    assert queue.accept_event("ops", "e2", "{}", dedupe_key="m1", dedupe_ttl=60) == "e1"
    assert queue.accept_event("ops", "e3", "{}", dedupe_key=None, dedupe_ttl=60) is None
    assert queue.accept_event("gh", "e4", "{}", dedupe_key="x", dedupe_ttl=60) is None
    assert Stats(redis_client).sources() == {
        "ops": {"accepted": 2, "duplicates": 1, "rejected": {}},
        "gh": {"accepted": 1, "duplicates": 0, "rejected": {}},
    }
    series = Stats(redis_client).series(minutes=1)
    assert series["received"][0][1] == 3
    minute = keys.stats_minute(series["received"][0][0])
    assert 0 < redis_client.ttl(minute) <= stats.MINUTE_TTL
    assert redis_client.ttl(keys.STATS_SOURCES) == -1  # cumulative counters never expire


# -- the receiver's refusals ------------------------------------------------------------------


@pytest.fixture
def app(write_config: Callable[..., Path], make_app: Callable[..., Flask]) -> Flask:
    return make_app(write_config(ops_config("http://127.0.0.1:9/in")))


def signed(body: bytes, secret: str = TEST_SECRET, msg_id: str = "msg_1") -> dict[str, str]:
    stamp = str(int(time.time()))
    key = signing.decode_secret(secret)
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": signing.sign_header([key], msg_id, stamp, body),
    }


BODY = json.dumps({"type": "message.created", "data": {"text": "hi"}}).encode()
OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0MjQy"


def test_refusals_are_counted_by_source_and_code(app: Flask, redis_client: redis.Redis) -> None:
    client = app.test_client()
    refused = [
        client.post("/hooks/ops", data=BODY, headers=signed(BODY, OTHER_SECRET)),
        client.post("/hooks/ops", data=BODY, headers=signed(BODY, OTHER_SECRET)),
        client.post("/hooks/ops", data=BODY),
        client.get("/hooks/ops"),
        client.post("/hooks/nope-1", data=BODY),
        client.post("/hooks/nope-2", data=BODY),
    ]
    assert [r.status_code for r in refused] == [401, 401, 401, 405, 404, 404]
    for response in refused:
        response.close()  # the count is made once the answer has gone out
    accepted = client.post("/hooks/ops", data=BODY, headers=signed(BODY))
    assert accepted.status_code == 202
    assert Stats(redis_client).sources() == {
        "ops": {
            "accepted": 1,
            "duplicates": 0,
            "rejected": {"invalid_signature": 2, "missing_signature": 1, "method_not_allowed": 1},
        },
        "(unknown)": {"accepted": 0, "duplicates": 0, "rejected": {"unknown_source": 2}},
    }
    # Made-up source ids create no keys and no fields of their own.
    assert not [k for k in redis_client.keys("*") if b"nope" in k]
    assert not [f for f in redis_client.hkeys(keys.STATS_SOURCES) if b"nope" in f]


def test_a_refusal_stays_a_4xx_when_redis_is_away(
    write_config: Callable[..., Path], make_app: Callable[..., Flask]
) -> None:
    path = write_config(ops_config("http://127.0.0.1:9/in"))
    app = make_app(path, redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=0.5)
    client = app.test_client()
    for _ in range(2):  # the second finds counting paused and does not try
        response = client.post("/hooks/ops", data=BODY, headers=signed(BODY, OTHER_SECRET))
        assert response.status_code == 401
        assert response.get_json()["error"] == "invalid_signature"
        response.close()
    missing = client.post("/hooks/missing", data=BODY)
    assert missing.status_code == 404
    missing.close()


# -- deliveries -------------------------------------------------------------------------------


def test_finish_scripts_count_outcomes_latency_and_waits(
    queue: Outbox, store: Store, redis_client: redis.Redis
) -> None:
    steady_minute()
    for n in range(5):
        make_delivery(queue, f"d{n}", "hook")
    make_delivery(queue, "c0", "chat")
    store.finish_delivered("d0", attempt(3), token="")
    store.finish_retry("d1", attempt(40, "retry"), time.time() + 60, token="")
    store.finish_delivered("d1", attempt(7), token="")
    store.finish_dead("d2", attempt(2000, "failed"), "permanent failure", "{}", token="")
    store.finish_dead("d3", None, "target is no longer configured", "{}", token="")
    store.park("d4", time.time() + 10, "rate_limited", attempts=0, token="")
    store.park("d4", time.time() + 10, "rate_limited", attempts=0, token="")
    store.park("c0", time.time() + 10, "paused", attempts=0, token="")

    targets = Stats(redis_client).targets()
    hook = targets["hook"]
    assert hook["outcomes"] == {"delivered": 2, "retry": 1, "dead": 2}
    assert hook["waits"] == {"rate_limited": 2}
    latency = hook["latency"]
    assert latency["count"] == 4  # attempts made: d0, d1 twice, d2 (d3 died without one)
    assert latency["sum_ms"] == pytest.approx(2050)
    assert latency["buckets"][5.0] == 1
    assert latency["buckets"][10.0] == 2
    assert latency["buckets"][50.0] == 3
    assert latency["buckets"][1000.0] == 3
    assert latency["buckets"][2500.0] == 4
    assert targets["chat"] == {
        "outcomes": {"delivered": 0, "retry": 0, "dead": 0},
        "waits": {"paused": 1},
        "latency": {"buckets": cumulate({}), "sum_ms": 0.0, "count": 0},
    }
    # The records are what they were before counting existed.
    assert redis_client.hget(keys.delivery("d2"), "status") == b"dead"
    assert redis_client.ttl(keys.delivery("d2")) == -1
    assert redis_client.zscore(keys.DLQ, "d3") is not None
    assert redis_client.hget(keys.delivery("d4"), "waiting") == b"rate_limited"
    assert redis_client.ttl(keys.STATS_TARGETS) == -1

    window = Stats(redis_client).target_window("hook", 300)
    assert window == {
        "attempts": 4,
        "delivered": 2,
        "failed": 2,
        "success_rate": 0.5,
        "p50_ms": 10.0,
        "p99_ms": 2440.0,  # rank 3.96 of 4: 1000 + 1500 * 0.96
    }
    series = Stats(redis_client).series(minutes=1)
    assert {name: points[0][1] for name, points in series.items()} == {
        "received": 0,
        "delivered": 2,
        "failed": 2,
        "dead": 2,
    }


def test_windows_and_series_count_whole_minutes(
    queue: Outbox, store: Store, redis_client: redis.Redis
) -> None:
    steady_minute()
    written = stats.minute_of(time.time())
    for n in range(4):
        make_delivery(queue, f"d{n}", "hook")
        store.finish_delivered(f"d{n}", attempt(20 + n), token="")
    queue.accept_event("ops", "e1", "{}", dedupe_key=None, dedupe_ttl=60)

    later = Stats(redis_client, clock=lambda: written + 150)  # two minutes on
    assert later.target_window("hook", 60)["attempts"] == 0  # only the current minute
    assert later.target_window("hook", 120)["attempts"] == 0
    in_window = later.target_window("hook", 180)
    assert in_window["attempts"] == 4 and in_window["success_rate"] == 1.0
    assert in_window["p50_ms"] == 17.5  # all four in the 10..25 bucket: rank 2 of 4
    assert in_window["p99_ms"] == 24.85
    empty = later.target_window("hook", 60)
    assert empty["success_rate"] is None and empty["p50_ms"] is None and empty["p99_ms"] is None
    assert later.target_window("other", 3600)["attempts"] == 0

    series = later.series(minutes=5)
    assert set(series) == {"received", "delivered", "failed", "dead"}
    stamps = [minute for minute, _ in series["delivered"]]
    assert stamps == [written - 120, written - 60, written, written + 60, written + 120]
    assert [n for _, n in series["delivered"]] == [0, 0, 4, 0, 0]
    assert [n for _, n in series["received"]] == [0, 0, 1, 0, 0]
    assert [n for _, n in series["failed"]] == [0] * 5
    for name in ("received", "failed", "dead"):
        assert [m for m, _ in series[name]] == stamps

    assert len(Stats(redis_client).series()) == 4
    assert len(Stats(redis_client).series()["received"]) == 60
    assert len(Stats(redis_client).series(minutes=100_000)["dead"]) == stats.MINUTE_TTL // 60


def test_empty_redis_reads_as_nothing(redis_client: redis.Redis) -> None:
    reader = Stats(redis_client)
    assert reader.sources() == {}
    assert reader.targets() == {}
    assert reader.target_window("hook", 300) == {
        "attempts": 0,
        "delivered": 0,
        "failed": 0,
        "success_rate": None,
        "p50_ms": None,
        "p99_ms": None,
    }
    assert all(n == 0 for points in reader.series(3).values() for _, n in points)
