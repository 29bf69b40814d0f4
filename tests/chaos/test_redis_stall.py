"""Redis stalled (SIGSTOP) under a stream of signed events to real gunicorn: every answer
comes within ``RELAY_REDIS_TIMEOUT`` plus a margin, a 503 with ``Retry-After``, never a
2xx for an event that is not stored; after SIGCONT each event is stored exactly once and
resends are answered 202 or 200 duplicate.

The test runs its own ``redis-server`` (it stops it), never the suite's shared one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests
import yaml

from relay.cli.embedded import EmbeddedRedis, free_port
from relay.state import keys
from relay.state.apikeys import ApiKeys
from tests.conftest import ROOT, TEST_ENV, TEST_SECRET, wait_for
from tests.intake.sources.support import sign_standard_webhook as sign

pytestmark = pytest.mark.chaos

TIMEOUT = 1.0  # RELAY_REDIS_TIMEOUT
MARGIN = 1.5  # what an answer may take beyond it (a loaded 2-core machine, gunicorn's queue)
STALL = 4.0  # seconds Redis is stopped
SENDERS = 16  # concurrent senders: more than gunicorn's threads, so requests would queue
EVENT = {"type": "message.created", "data": {"group": {"id": "g1"}, "text": "hi"}}


@dataclass
class Answer:
    msg_id: str
    status: int
    seconds: float
    retry_after: str | None
    body: dict[str, object]


@pytest.fixture
def stalled_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "own-redis").start()
    yield server
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


@pytest.fixture
def web(stalled_redis: EmbeddedRedis, tmp_path: Path) -> Iterator[str]:
    """deploy/gunicorn.conf.py on loopback: 2 processes of 4 threads, against our Redis."""
    config = {"sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}]}
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    env = {
        **os.environ,
        **TEST_ENV,
        "RELAY_REDIS_URL": stalled_redis.url,
        "RELAY_CONFIG": str(path),
        "RELAY_REDIS_TIMEOUT": str(TIMEOUT),
        "RELAY_LOG_LEVEL": "WARNING",
        "WEB_CONCURRENCY": "2",
        "RELAY_WEB_THREADS": "4",
    }
    command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
               "-b", f"127.0.0.1:{port}", "relay.wsgi:app"]  # fmt: skip
    with open(tmp_path / "gunicorn.log", "ab") as log:
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(base), timeout=30, interval=0.2)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _up(base: str) -> bool:
    try:
        return requests.get(base + "/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def post(base: str, msg_id: str) -> Answer:
    body = json.dumps(EVENT).encode()
    started = time.monotonic()
    response = requests.post(
        base + "/hooks/ops", data=body, headers=sign(body, msg_id=msg_id), timeout=60
    )
    return Answer(
        msg_id,
        response.status_code,
        time.monotonic() - started,
        response.headers.get("Retry-After"),
        response.json(),
    )


def test_a_redis_stall_is_answered_with_fast_503s_and_loses_nothing(
    stalled_redis: EmbeddedRedis, web: str
) -> None:
    check = redis.Redis.from_url(stalled_redis.url)
    _, token = ApiKeys(check).create("ops", "read")
    answers: list[Answer] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(n: int) -> None:
        i = 0
        while not stop.is_set():
            answer = post(web, f"msg_{n}_{i}")
            with lock:
                answers.append(answer)
            i += 1

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(SENDERS)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    assert stalled_redis.process is not None
    os.kill(stalled_redis.process.pid, signal.SIGSTOP)
    stalled_at = time.monotonic()
    time.sleep(1.0)
    started = time.monotonic()
    api = requests.get(
        web + "/api/v1/events", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    api_seconds = time.monotonic() - started
    time.sleep(max(0.0, STALL - (time.monotonic() - stalled_at)))
    os.kill(stalled_redis.process.pid, signal.SIGCONT)
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(60)

    refused = [a for a in answers if a.status == 503]
    accepted = [a for a in answers if a.status in (200, 202)]
    slowest = max(a.seconds for a in answers)
    print(
        f"\n{len(answers)} requests, {len(accepted)} accepted, {len(refused)} 503; "
        f"slowest answer {slowest:.2f}s, API during the stall {api_seconds:.2f}s"
    )
    assert refused, "the stall was not noticed"
    assert {a.status for a in answers} <= {200, 202, 503}
    assert all(a.retry_after and int(a.retry_after) > 0 for a in refused)
    assert all(a.body.get("error") == "unavailable" for a in refused)
    assert slowest <= TIMEOUT + MARGIN, sorted(a.seconds for a in answers)[-10:]
    assert api.status_code == 503 and api.json()["error"] == "unavailable"
    assert "Retry-After" in api.headers and api_seconds <= TIMEOUT + MARGIN

    # Every 2xx is stored, exactly once; nothing is stored twice.
    wait_for(lambda: _up(web), timeout=10)
    for answer in accepted:
        stored = check.get(keys.dedupe("ops", answer.msg_id))
        assert stored is not None and stored.decode() == answer.body["event_id"]
    events = check.zcard(keys.EVENTS)
    assert check.llen(keys.FANOUT_QUEUE) == events
    assert len(check.keys(keys.dedupe("ops", "*"))) == events

    # The senders' resends: a 200 duplicate for every event stored, else 202.
    for answer in answers:
        again = post(web, answer.msg_id)
        assert again.status in (200, 202), again.body
        if answer in accepted:
            assert again.status == 200 and again.body["event_id"] == answer.body["event_id"]
    assert check.zcard(keys.EVENTS) == len({a.msg_id for a in answers})
    assert check.llen(keys.FANOUT_QUEUE) == check.zcard(keys.EVENTS)
    check.close()
