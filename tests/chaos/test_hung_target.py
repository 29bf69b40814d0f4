"""A target that accepts connections and never answers takes only its ``max_in_flight``
attempts' worth of worker threads: the healthy targets beside it are all delivered while
it sits at its cap, and its other deliveries wait in the schedule, not in the dead
letters. Prints the healthy targets' POST-to-arrival p50/p99 (the figures are not
asserted; ``bench/hung_target.py`` measures them against a run without the hung target).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.state import keys
from relay.state.stats import Stats
from tests.conftest import TEST_SECRET, wait_for
from tests.pipeline_support import EVENT, signed_post

pytestmark = pytest.mark.chaos

CAP = 3
EVENTS = 40
RATE = 10.0  # events per second
HEALTHY = ("a", "b")


class HungServer:
    """Accepts every connection, reads what comes, never answers; counts the connections
    open at once (each hung attempt holds one until the worker gives up on it)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.open = 0
        self.most_open = 0
        self.accepted = 0
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(conn)
                self.accepted += 1
                self.open += 1
                self.most_open = max(self.most_open, self.open)
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
        with self.lock:
            self.open -= 1

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for conn in self.conns:
                conn.close()


@pytest.fixture
def hung_server() -> Iterator[HungServer]:
    server = HungServer()
    yield server
    server.close()


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))]


def test_a_hung_target_holds_at_most_its_cap_and_the_others_are_all_delivered(
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    threaded_httpserver: HTTPServer,
    hung_server: HungServer,
    redis_client: redis.Redis,
) -> None:
    arrivals: dict[tuple[str, str], float] = {}
    lock = threading.Lock()

    def sink(request: Request) -> Response:
        with lock:
            arrivals.setdefault(
                (request.path.strip("/"), json.loads(request.get_data())["id"]), time.time()
            )
        return Response("ok")

    def webhook(target_id: str, url: str, **extra: Any) -> dict[str, Any]:
        return {"id": target_id, "kind": "webhook", "url": url, "allow_private": True,
                "secret": TEST_SECRET, **extra}  # fmt: skip

    for name in HEALTHY:
        threaded_httpserver.expect_request(f"/{name}", method="POST").respond_with_handler(sink)
    hung_url = f"http://127.0.0.1:{hung_server.port}/in"
    config = {
        "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}],
        "targets": [
            *(webhook(name, threaded_httpserver.url_for(f"/{name}")) for name in HEALTHY),
            webhook("hung", hung_url, timeout="15s", max_in_flight=CAP),
        ],
        "routes": [{"source": "ops", "targets": [*HEALTHY, "hung"]}],
    }
    path = write_config(config)
    client = client_for(path)
    # A worker of 20 green threads; the hung target's attempts last 15 s, longer than the run.
    relay_processes(path, RELAY_TASK_TIME_LIMIT="40", RELAY_VISIBILITY_TIMEOUT="90")

    posted: dict[str, float] = {}
    start = time.monotonic()
    for n in range(EVENTS):
        time.sleep(max(0.0, start + n / RATE - time.monotonic()))
        sent_at = time.time()
        response = signed_post(client, EVENT)
        assert response.status_code == 202
        posted[response.get_json()["event_id"]] = sent_at
    expected = {(name, event_id) for name in HEALTHY for event_id in posted}

    def healthy_delivered() -> bool:
        with lock:
            return expected <= set(arrivals)

    wait_for(healthy_delivered, timeout=60, interval=0.2)
    hung = {
        "in_flight": redis_client.zcard(keys.target_running("hung")),
        "most_open": hung_server.most_open,
        "accepted": hung_server.accepted,
    }
    ready = min(arrivals.values())  # events posted while the worker was starting wait for it
    latencies = [arrivals[key] - posted[key[1]] for key in expected if posted[key[1]] >= ready]
    print(
        f"\nhealthy targets: {len(latencies)} deliveries, p50 {_pct(latencies, 50) * 1000:.0f} ms, "
        f"p99 {_pct(latencies, 99) * 1000:.0f} ms; hung target: {hung}"
    )
    # Every healthy delivery arrived while the hung target held its cap, and never more.
    assert hung["most_open"] <= CAP
    assert hung["in_flight"] == CAP

    # The hung target's other deliveries wait in the schedule, their attempts not spent
    # (looked at until a moment when none is between its begin and its parking).
    hung_ids = [
        d.decode()
        for event_id in posted
        for d in redis_client.smembers(keys.event_deliveries(event_id))
        if redis_client.hget(keys.delivery(d.decode()), "target") == b"hung"
    ]
    assert len(hung_ids) == EVENTS

    def parked_as_expected() -> bool:
        records = [redis_client.hgetall(keys.delivery(d)) for d in hung_ids]
        statuses = [r[b"status"] for r in records]
        waiting = [r for r in records if r[b"status"] == b"scheduled"]
        return (
            statuses.count(b"running") == CAP
            and len(waiting) == EVENTS - CAP
            and all(r.get(b"waiting") == b"concurrency_limited" for r in waiting)
            and sum(int(r.get(b"attempts") or 0) for r in records) == CAP
        )

    wait_for(parked_as_expected, timeout=8, interval=0.1)
    assert redis_client.zcard(keys.DLQ) == 0
    waits = Stats(redis_client).targets()["hung"]["waits"]
    assert waits.get("concurrency_limited", 0) >= EVENTS - CAP
