"""End to end with real parts: receiver → Redis → Celery worker → scheduler → HTTP sink."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import redis
from click.testing import CliRunner
from standardwebhooks.webhooks import Webhook

from relay.cli import main
from relay.state import keys
from tests.conftest import TEST_SECRET, wait_for
from tests.pipeline_support import EVENT, delivery_of, signed_post, status_of


def test_happy_path_delivers_a_signed_event_once(pipeline: Any, redis_client: redis.Redis) -> None:
    client, sink, _ = pipeline()
    response = signed_post(client, EVENT)
    assert response.status_code == 202
    event_id = response.get_json()["event_id"]
    wait_for(lambda: sink.arrivals, timeout=30)
    delivery_id = delivery_of(redis_client, event_id)
    wait_for(lambda: status_of(redis_client, delivery_id) == "delivered")
    [(_, request)] = sink.arrivals
    body = request.get_data()
    headers = {k.lower(): v for k, v in request.headers.items()}
    payload = Webhook(TEST_SECRET).verify(body, headers)
    assert payload["id"] == event_id and payload["text"] == "hi"
    assert payload["group"] == {"id": "g1", "name": "Ops"}
    assert headers["webhook-id"] == delivery_id


def test_retry_then_success(pipeline: Any, redis_client: redis.Redis) -> None:
    client, sink, procs = pipeline([(500, {}), (503, {})])
    event_id = signed_post(client, EVENT).get_json()["event_id"]
    delivery_id = delivery_of(redis_client, event_id)
    wait_for(lambda: status_of(redis_client, delivery_id) == "delivered", timeout=30)
    assert len(sink.arrivals) == 3
    assert len(set(sink.ids())) == 1  # the same idempotency key on every attempt
    attempts = redis_client.lrange(keys.attempts(delivery_id), 0, -1)
    outcomes = [json.loads(a)["outcome"] for a in attempts]
    assert outcomes == ["retry", "retry", "delivered"]
    shown = CliRunner().invoke(main, ["events", "show", event_id, "--json"], env=procs.env)
    detail = json.loads(shown.output)
    assert detail["status"] == "routed"
    [delivery] = detail["deliveries"]
    assert delivery["status"] == "delivered" and delivery["attempts"] == "3"
    assert [a["status"] for a in delivery["attempts_log"]] == [500, 503, 200]


def test_retry_after_is_honoured(pipeline: Any, redis_client: redis.Redis) -> None:
    client, sink, _ = pipeline([(429, {"Retry-After": "2"})])
    signed_post(client, EVENT)
    wait_for(lambda: len(sink.arrivals) == 2, timeout=30)
    gap = sink.arrivals[1][0] - sink.arrivals[0][0]
    assert gap >= 2.0


def test_exhaustion_dead_letters_with_every_attempt_then_replay_once(
    pipeline: Any, redis_client: redis.Redis
) -> None:
    client, sink, procs = pipeline(
        [(500, {})] * 3, retry={"max_attempts": 3, "backoff_base": "0.1s"}
    )
    event_id = signed_post(client, EVENT).get_json()["event_id"]
    delivery_id = delivery_of(redis_client, event_id)
    wait_for(lambda: status_of(redis_client, delivery_id) == "dead", timeout=30)
    assert len(sink.arrivals) == 3

    runner = CliRunner()
    env = procs.env
    listed = runner.invoke(main, ["dlq", "ls", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    [entry] = [json.loads(line) for line in listed.output.splitlines()]
    assert entry["id"] == delivery_id and entry["attempts"] == 3 and entry["target"] == "sink"
    assert "retries exhausted after 3 attempts" in entry["reason"]

    shown = json.loads(runner.invoke(main, ["dlq", "show", delivery_id, "--json"], env=env).output)
    assert [a["outcome"] for a in shown["attempts_log"]] == ["retry", "retry", "failed"]
    assert all(a["status"] == 500 for a in shown["attempts_log"])
    assert shown["event"]["id"] == event_id

    # Two operators replay at the same time: the delivery goes out once, under its old id.
    operators = [
        subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "dlq", "replay", delivery_id],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(2)
    ]
    results = sorted(p.communicate(timeout=30)[0].decode() for p in operators)
    assert results[1] == "replayed 1 dead letter\n"
    assert results[0].endswith("replayed 0 dead letters\n")  # the other found it gone
    wait_for(lambda: status_of(redis_client, delivery_id) == "delivered", timeout=30)
    time.sleep(1)
    assert len(sink.arrivals) == 4
    assert set(sink.ids()) == {delivery_id}
    assert redis_client.zcard(keys.DLQ) == 0


def test_duplicate_intake_delivers_once(pipeline: Any, redis_client: redis.Redis) -> None:
    client, sink, _ = pipeline()
    first = signed_post(client, EVENT, msg_id="msg_same")
    again = signed_post(client, EVENT, msg_id="msg_same")
    assert first.status_code == 202 and again.status_code == 200
    assert again.get_json() == {"event_id": first.get_json()["event_id"], "duplicate": True}
    wait_for(lambda: sink.arrivals, timeout=30)
    time.sleep(1.5)
    assert len(sink.arrivals) == 1


def test_a_delay_longer_than_the_visibility_timeout_runs_once(
    pipeline: Any, redis_client: redis.Redis
) -> None:
    # Visibility timeout 6 s, the remote asks for 9 s: a Celery countdown would run twice.
    client, sink, _ = pipeline(
        [(503, {"Retry-After": "9"})],
        RELAY_VISIBILITY_TIMEOUT="6",
        RELAY_TASK_TIME_LIMIT="4",
        RELAY_HTTP_TIMEOUT="1.5",
    )
    event_id = signed_post(client, EVENT).get_json()["event_id"]
    delivery_id = delivery_of(redis_client, event_id)
    wait_for(lambda: status_of(redis_client, delivery_id) == "delivered", timeout=40)
    time.sleep(12)  # past another visibility timeout and kombu's restore sweep
    assert len(sink.arrivals) == 2
    assert sink.arrivals[1][0] - sink.arrivals[0][0] >= 9
