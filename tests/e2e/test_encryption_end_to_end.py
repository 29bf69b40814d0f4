"""Encryption at rest through the real receiver, worker and scheduler.

Each test runs its own ``redis-server`` (append-only file on), so what Redis wrote can be
read back from its files as well as from its keys: with ``RELAY_ENCRYPTION_KEYS`` set a
canary in the message never reaches them in plain text, while the sink receives it and
an operator reads it through the API. Rotation under load loses nothing; a record
sealed with a removed key is reported, dead-lettered with the reason, and delivered once
the key is back.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.cli.embedded import EmbeddedRedis
from relay.state import keys
from relay.state.records import Records
from relay.state.reseal import Resealer
from relay.state.sealing import Sealer, key_id, new_key, parse_keys
from tests import records
from tests.conftest import ops_config, wait_for
from tests.pipeline_support import all_delivered, signed_post

CANARY = "canary-91c4e2 the quarterly numbers"
FAST = {  # a short lease, so the watchdog redoes an unreadable fan-out within seconds
    "RELAY_VISIBILITY_TIMEOUT": "5",
    "RELAY_TASK_TIME_LIMIT": "4",
    "RELAY_HTTP_TIMEOUT": "1.5",
}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """This test's own server: its append-only file holds only this test's writes."""
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


class Sink:
    """Answers from a script of statuses (then 200); a refusal quotes the request body, as
    many servers do, so the attempt's stored excerpt carries the message too."""

    def __init__(self, server: HTTPServer, script: list[int] | None = None) -> None:
        self.script = list(script or [])
        self.every: int | None = None  # refuse every n-th request, after the script
        self.bodies: list[tuple[int, dict[str, Any]]] = []
        self.lock = threading.Lock()
        server.expect_request("/in", method="POST").respond_with_handler(self.handle)
        self.url = server.url_for("/in")

    def handle(self, request: Request) -> Response:
        body = request.get_data(as_text=True)
        with self.lock:
            n = len(self.bodies) + 1
            status = self.script.pop(0) if self.script else 200
            if self.every and n % self.every == 0:
                status = 503
            self.bodies.append((status, json.loads(body)))
        text = "ok" if status < 300 else f"rejected: {body}"
        return Response(text, status=status)

    def delivered(self) -> list[dict[str, Any]]:
        with self.lock:
            return [event for status, event in self.bodies if status < 300]


def every_value(client: redis.Redis) -> list[bytes]:
    """Every key name and value in Redis, read by type."""
    found: list[bytes] = []
    for key in client.scan_iter(count=1000):
        found.append(key)
        kind = client.type(key).decode()
        if kind == "string":
            found.append(client.get(key) or b"")
        elif kind == "hash":
            found += [v for pair in client.hgetall(key).items() for v in pair]
        elif kind == "list":
            found += client.lrange(key, 0, -1)
        elif kind == "set":
            found += list(client.smembers(key))
        elif kind == "zset":
            found += client.zrange(key, 0, -1)
        elif kind == "stream":
            found += [v for _, e in client.xrange(key) for pair in e.items() for v in pair]
    return found


def on_disk(server: EmbeddedRedis, client: redis.Redis) -> bytes:
    """What Redis wrote to its files: the append-only log (every write as a command) and a
    snapshot saved now without compression, so a plain string would show as it is."""
    client.config_set("rdbcompression", "no")
    client.save()
    files = [p for p in server.data_dir.rglob("*") if p.is_file() and p.suffix in (".aof", ".rdb")]
    assert any(p.suffix == ".aof" for p in files) and any(p.suffix == ".rdb" for p in files)
    return b"".join(p.read_bytes() for p in files)


def message(text: str, group: str = "g1") -> dict[str, Any]:
    return {
        "type": "message.created",
        "data": {"group": {"id": group, "name": f"Ops {text}"}, "sender": {"id": "u1"},
                 "text": text},
    }  # fmt: skip


def accepted(response: Any) -> str:
    assert response.status_code == 202, response.get_data(as_text=True)
    event_id: str = response.get_json()["event_id"]
    return event_id


def api_get(app: Flask, token: str, path: str) -> Any:
    response = app.test_client().get("/api/v1" + path, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def kid(key: str) -> str:
    return key_id(base64.urlsafe_b64decode(key))


@pytest.mark.parametrize("sealed", [True, False], ids=["with-keys", "without-keys"])
def test_no_plain_message_reaches_redis_while_the_sink_and_the_api_get_it(
    sealed: bool,
    redis_server: EmbeddedRedis,
    redis_client: redis.Redis,
    threaded_httpserver: HTTPServer,
    write_config: Callable[..., Path],
    make_app: Callable[..., Flask],
    relay_processes: Callable[..., Any],
) -> None:
    key = new_key()
    env = {"RELAY_ENCRYPTION_KEYS": key} if sealed else {}
    sink = Sink(threaded_httpserver, [500])  # the first attempt fails, quoting the body
    path = write_config(ops_config(sink.url, retry={"max_attempts": 3, "backoff_base": "0.2s"}))
    app = make_app(path, **({"encryption_keys": key} if sealed else {}))
    procs = relay_processes(path, **env)
    event_id = accepted(signed_post(app.test_client(), message(CANARY)))
    wait_for(lambda: all_delivered(redis_client, event_id), timeout=40)

    [(failed, _), (ok, got)] = sink.bodies
    assert (failed, ok) == (500, 200)
    assert got["id"] == event_id and got["text"] == CANARY  # delivered as sent, in plain text
    tokens, _ = records.scoped_keys(redis_client)
    shown = api_get(app, tokens["admin"], f"/events/{event_id}")
    assert shown["event"]["text"] == CANARY and shown["text"] == CANARY
    [delivery] = shown["deliveries"]
    assert CANARY in delivery["attempts_log"][0]["response"]  # the excerpt reads back

    values = every_value(redis_client)
    disk = on_disk(redis_server, redis_client)
    plain = [v for v in values if CANARY.encode() in v]
    if sealed:
        assert not plain and CANARY.encode() not in disk
        data = json.loads(redis_client.hget(keys.event(event_id), "data") or b"")
        assert data["source"] == "ops" and data["group"] == {"id": "g1"}  # still filterable
        assert data["sealed"].startswith(f"enc:v1:{kid(key)}:")
        for name in ("worker", "scheduler"):
            assert key not in procs.log(name)
    else:  # the same run without keys: the same checks find it, so they can fail
        assert plain and CANARY.encode() in disk
        assert not [v for v in values if b"enc:v1:" in v]


def test_rotation_under_load_loses_nothing_and_leaves_every_record_on_the_new_key(
    redis_client: redis.Redis,
    threaded_httpserver: HTTPServer,
    write_config: Callable[..., Path],
    make_app: Callable[..., Flask],
    relay_processes: Callable[..., Any],
) -> None:
    old, new = new_key(), new_key()
    sink = Sink(threaded_httpserver)
    sink.every = 4  # every fourth request fails: retries write attempts during the walk
    path = write_config(ops_config(sink.url, retry={"max_attempts": 6, "backoff_base": "0.2s"}))
    before_app = make_app(path, encryption_keys=old)
    first = relay_processes(path, RELAY_ENCRYPTION_KEYS=old)
    sent = [accepted(signed_post(before_app.test_client(), message(f"{CANARY} {i}")))
            for i in range(15)]  # fmt: skip
    wait_for(lambda: all(all_delivered(redis_client, e) for e in sent), timeout=60)

    # the new key goes first everywhere (web, worker, scheduler), then the walk runs
    both = f"{new},{old}"
    app = make_app(path, encryption_keys=both)
    first.stop_all()
    relay_processes(path, RELAY_ENCRYPTION_KEYS=both)
    # about ten batches a phase, so about sixty events arrive during the walk: SCAN
    # counts keys of every type, and a smaller batch would send hundreds
    batch = max(4, int(redis_client.dbsize()) // 10)
    resealer = Resealer(redis_client, Sealer(parse_keys(both)), batch=batch)
    progress = resealer.start()
    client = app.test_client()
    n = 15
    try:
        while not progress.done:  # events arrive between every batch of the walk
            resealer.step(progress)
            for _ in range(2):
                sent.append(accepted(signed_post(client, message(f"{CANARY} {n}"))))
                n += 1
    finally:
        resealer.run(progress)  # releases the lock
    sent += [accepted(signed_post(client, message(f"{CANARY} {i}"))) for i in range(n, n + 10)]
    wait_for(lambda: all(all_delivered(redis_client, e) for e in sent), timeout=90)

    assert progress.counts["resealed"] > 0 and progress.counts["unreadable"] == 0
    got = sorted(e["id"] for e in sink.delivered())
    assert got == sorted(sent)  # each event delivered, once
    only_new = Sealer(parse_keys(new))
    reader = Records(redis_client, sealer=only_new)
    for event_id in sent:
        found = reader.event(event_id)
        assert found is not None and "unreadable" not in found
        assert found["event"]["text"].startswith(CANARY)
        for delivery_id in reader.event_delivery_ids(event_id):
            d = reader.delivery(delivery_id)
            assert d is not None and d.status is not None
            for attempt in reader.attempts(delivery_id):
                assert not str(attempt.get("response", "")).startswith("[sealed")
    left = Resealer(redis_client, only_new, dry_run=True)
    check = left.start()
    left.run(check)
    assert kid(old) not in check.by_key and check.counts["unreadable"] == 0
    assert not [v for v in every_value(redis_client) if CANARY.encode() in v]


def test_a_record_under_a_removed_key_is_reported_dead_lettered_and_recovered(
    redis_client: redis.Redis,
    threaded_httpserver: HTTPServer,
    write_config: Callable[..., Path],
    make_app: Callable[..., Flask],
    relay_processes: Callable[..., Any],
) -> None:
    old, new = new_key(), new_key()
    why = f"sealed with key {kid(old)}, which RELAY_ENCRYPTION_KEYS no longer holds"
    sink = Sink(threaded_httpserver)
    path = write_config(ops_config(sink.url, retry={"max_attempts": 3, "backoff_base": "0.2s"}))
    fast = {"visibility_timeout": 5, "task_time_limit": 4, "http_timeout": 1.5}
    old_app = make_app(path, encryption_keys=old, **fast)
    tokens, _ = records.scoped_keys(redis_client)
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    paused = old_app.test_client().post("/api/v1/targets/sink/pause", headers=admin)
    assert paused.status_code == 200
    procs = relay_processes(path, RELAY_ENCRYPTION_KEYS=old, **FAST)
    first = accepted(signed_post(old_app.test_client(), message(CANARY)))
    [delivery_id] = wait_for(lambda: redis_client.smembers(keys.event_deliveries(first)))
    delivery_id = delivery_id.decode()
    wait_for(lambda: redis_client.hget(keys.delivery(delivery_id), "waiting") == b"paused")

    procs.stop_all()  # the old key is dropped from the workers while the delivery waits
    procs = relay_processes(path, RELAY_ENCRYPTION_KEYS=new, **FAST)
    app = make_app(path, encryption_keys=new, **fast)
    resumed = app.test_client().post("/api/v1/targets/sink/resume", headers=admin)
    assert resumed.status_code == 200
    wait_for(lambda: redis_client.hget(keys.delivery(delivery_id), "status") == b"dead")
    second = accepted(signed_post(old_app.test_client(), message(CANARY, group="g2")))
    wait_for(lambda: "fanout.unreadable_event" in procs.log("worker"), timeout=30)

    assert sink.delivered() == []
    shown = api_get(app, tokens["read"], f"/events/{first}")
    assert shown["text"] == shown["event"]["text"] == f"[{why}]"
    assert shown["source"] == "ops" and shown["group"]["id"] == "g1"
    [dead] = shown["deliveries"]
    assert dead["status"] == "dead" and dead["dead_reason"] == why
    listed = api_get(app, tokens["read"], "/events?group=g2")
    assert [e["id"] for e in listed["items"]] == [second]  # filters still work without the key
    assert listed["items"][0]["text"] == f"[{why}]"
    assert api_get(app, tokens["read"], "/dead-letters")["items"][0]["dead_reason"] == why
    assert api_get(app, tokens["read"], f"/deliveries/{delivery_id}")["dead_reason"] == why
    log = [json.loads(line) for line in procs.log("worker").splitlines() if line.startswith("{")]
    assert any(e.get("event") == "deliver.dead" and e.get("reason") == why for e in log)
    assert any(e.get("event") == "fanout.unreadable_event" and e.get("reason") == why
               for e in log)  # fmt: skip
    assert "Traceback" not in procs.log("worker")

    # the key comes back (after the new one): the dead letter replays, the fan-out redoes
    procs.stop_all()
    relay_processes(path, RELAY_ENCRYPTION_KEYS=f"{new},{old}", **FAST)
    both_app = make_app(path, encryption_keys=f"{new},{old}", **fast)
    replayed = both_app.test_client().post(
        f"/api/v1/dead-letters/{delivery_id}/replay", headers=admin
    )
    assert replayed.status_code == 200, replayed.get_data(as_text=True)
    wait_for(lambda: all_delivered(redis_client, first) and all_delivered(redis_client, second),
             timeout=40)  # fmt: skip
    assert sorted(e["id"] for e in sink.delivered()) == sorted([first, second])
    assert {e["text"] for e in sink.delivered()} == {CANARY}
