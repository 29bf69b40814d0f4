"""``/metrics`` and ``/readyz``: what a scrape shows, and that several gunicorn and
Celery processes add up to the same exact numbers on every web process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay import signing
from relay.cli.embedded import free_port
from relay.state import keys
from relay.state.deliveries import Store
from relay.state.gate import TargetGate
from relay.state.outbox import Outbox
from relay.state.stats import Stats
from tests.conftest import ROOT, TEST_ENV, TEST_SECRET, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0MjQy"
DELIVERIES = {"delivered", "retry", "dead"}


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def signed(body: bytes, secret: str = TEST_SECRET, msg_id: str | None = None) -> dict[str, str]:
    msg_id = msg_id or f"msg_{time.monotonic_ns()}"
    stamp = str(int(time.time()))
    key = signing.decode_secret(secret)
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": signing.sign_header([key], msg_id, stamp, body),
    }


def event(text: str) -> bytes:
    return json.dumps({"type": "message.created", "data": {"text": text}}).encode()


def webhook(target_id: str, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": target_id,
        "kind": "webhook",
        "url": url,
        "allow_private": True,
        "secret": TEST_SECRET,
        **extra,
    }


def config_with(targets: list[dict[str, Any]], routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}],
        "targets": targets,
        "routes": routes,
    }


# -- one process: what a scrape shows ---------------------------------------------------------


@pytest.fixture
def gated_app(write_config: Callable[..., Path], make_app: Callable[..., Flask]) -> Flask:
    url = "http://127.0.0.1:9/in"
    config = config_with(
        [webhook("a", url), webhook("b", url), webhook("c", url), webhook("d", url)],
        [{"source": "ops", "targets": ["a"]}],
    )
    return make_app(write_config(config))


def test_a_scrape_reads_counters_and_gauges_from_redis(
    gated_app: Flask, redis_client: redis.Redis
) -> None:
    queue = Outbox(redis_client, lease=60, retention=3600)
    store = Store(redis_client, retention=3600)
    queue.accept_event("ops", "e1", "{}", dedupe_key="m1", dedupe_ttl=60)
    queue.accept_event("ops", "e2", "{}", dedupe_key="m1", dedupe_ttl=60)  # a resend of e1
    queue.accept_event("ops", "e3", "{}", dedupe_key="m3", dedupe_ttl=60)
    for delivery_id, target in (("d1", "a"), ("d2", "a"), ("d3", "b")):
        fields: dict[str, str | int] = {"id": delivery_id, "target": target, "status": "queued"}
        queue.fan_out("e1", [(fields, keys.deliver_queue("webhook"))])
    store.finish_delivered("d1", {"n": 1, "duration_ms": 12.5}, token="")
    store.finish_dead("d2", {"n": 1, "duration_ms": 40000}, "permanent failure", "{}", token="")
    store.park("d3", time.time() + 60, "circuit_open", attempts=0, token="")
    redis_client.zadd(keys.SCHEDULE, {"late": time.time() - 30})
    gate = TargetGate(redis_client)
    gate.pause("a")
    now_ms = time.time() * 1000
    redis_client.hset(keys.target_state("b"), mapping={"state": "open", "open_until": now_ms + 6e4})
    redis_client.hset(keys.target_state("c"), mapping={"state": "open", "open_until": now_ms - 1})
    redis_client.hset(keys.target_state("d"), mapping={"state": "half_open"})

    response = gated_app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    text = response.get_data(as_text=True)
    assert (
        "# HELP relay_deliveries_total" in text and "# TYPE relay_deliveries_total counter" in text
    )
    s = parse(text)
    assert value(s, "relay_redis_up") == 1
    assert value(s, "relay_events_accepted_total", source="ops") == 2
    assert value(s, "relay_events_duplicate_total", source="ops") == 1
    assert value(s, "relay_deliveries_total", target="a", outcome="delivered") == 1
    assert value(s, "relay_deliveries_total", target="a", outcome="dead") == 1
    assert value(s, "relay_deliveries_total", target="c", outcome="retry") == 0  # configured
    assert value(s, "relay_target_waits_total", target="b", reason="circuit_open") == 1
    hist = "relay_attempt_duration_seconds"
    assert value(s, hist + "_bucket", target="a", le="0.01") == 0
    assert value(s, hist + "_bucket", target="a", le="0.025") == 1
    assert value(s, hist + "_bucket", target="a", le="30.0") == 1
    assert value(s, hist + "_bucket", target="a", le="+Inf") == 2
    assert value(s, hist + "_count", target="a") == 2
    assert value(s, hist + "_sum", target="a") == pytest.approx(40.0125)
    assert value(s, hist + "_count", target="d") == 0
    circuit = {t: value(s, "relay_target_circuit_state", target=t) for t in "abcd"}
    assert circuit == {"a": 0, "b": 2, "c": 1, "d": 1}
    assert {t: value(s, "relay_target_paused", target=t) for t in "abcd"} == {
        "a": 1,
        "b": 0,
        "c": 0,
        "d": 0,
    }
    assert value(s, "relay_queue_depth", queue="relay.fanout") == 2  # the two accepted events
    assert value(s, "relay_queue_depth", queue="relay.deliver.webhook") == 3
    assert value(s, "relay_scheduled_deliveries") == 2
    assert value(s, "relay_scheduled_due_deliveries") == 1
    assert value(s, "relay_schedule_lag_seconds") >= 30
    assert value(s, "relay_dead_letters") == 1
    assert value(s, "relay_in_flight_tasks") == 1  # e3's fan-out; the rest finished or parked
    assert ("relay_scheduler_heartbeat_age_seconds", ()) not in s  # no scheduler ran yet


def test_openmetrics_when_asked(gated_app: Flask) -> None:
    response = gated_app.test_client().get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.content_type.startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).endswith("# EOF\n")


def test_redis_away_is_a_scrape_that_says_so(
    write_config: Callable[..., Path], make_app: Callable[..., Flask]
) -> None:
    path = write_config(config_with([webhook("a", "http://127.0.0.1:9/")], []))
    app = make_app(path, redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=0.5)
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert parse(response.get_data(as_text=True)) == {("relay_redis_up", ()): 0.0}


def test_readyz_reports_config_and_schedule_lag(
    gated_app: Flask, redis_client: redis.Redis
) -> None:
    client = gated_app.test_client()
    checks = client.get("/readyz").get_json()["checks"]
    assert checks["config"] == "ok"
    assert checks["config_counts"] == {"sources": 1, "targets": 4, "routes": 1}
    assert checks["schedule_lag_seconds"] == 0.0
    assert checks["scheduler_seconds_since_heartbeat"] is None
    redis_client.zadd(keys.SCHEDULE, {"later": time.time() + 600})
    assert client.get("/readyz").get_json()["checks"]["schedule_lag_seconds"] == 0.0
    redis_client.zadd(keys.SCHEDULE, {"overdue": time.time() - 42})
    redis_client.set(keys.SCHEDULER_HEARTBEAT, time.time())
    ready = client.get("/readyz")
    assert ready.status_code == 200  # lag is reported, not a reason to stop taking events
    checks = ready.get_json()["checks"]
    assert checks["schedule_lag_seconds"] >= 42
    assert checks["scheduler_seconds_since_heartbeat"] >= 0


# -- several gunicorn and Celery processes ----------------------------------------------------


class Gunicorn:
    """``deploy/gunicorn.conf.py`` with two workers, its access log naming each worker's pid."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(ROOT / "deploy" / "gunicorn.conf.py"),
            "-b",
            f"127.0.0.1:{self.port}",
            "-w",
            "2",
            "--access-logformat",
            "%(p)s %(m)s %(U)s %(s)s",
            "relay.wsgi:app",
        ]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.base = f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            return requests.get(self.base + "/healthz", timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # still starting up
            return False

    def pids_that_served(self, path: str) -> set[str]:
        pattern = re.compile(rf"^<(\d+)> GET {re.escape(path)} 200$", re.M)
        return set(pattern.findall(self.log.read_text(errors="replace")))

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def gunicorn(tmp_path: Path, redis_url: str) -> Iterator[Callable[[Path], Gunicorn]]:
    started: list[Gunicorn] = []

    def start(config_path: Path) -> Gunicorn:
        env = {
            **os.environ,
            **TEST_ENV,
            "RELAY_REDIS_URL": redis_url,
            "RELAY_CONFIG": str(config_path),
            "RELAY_LOG_LEVEL": "WARNING",
        }
        server = Gunicorn(env, tmp_path / "gunicorn.log")
        started.append(server)
        wait_for(server.ready, timeout=30, interval=0.2)
        return server

    yield start
    for server in started:
        server.stop()


class ScriptedSink:
    """Answers by the event's text: ok → 200; flaky → 500 on the first try, then 200;
    down → 503 always; bad → 400 (permanent); held → 200 (a rate-limited target)."""

    def __init__(self, server: HTTPServer) -> None:
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.arrivals: list[str] = []
        server.expect_request(re.compile("/(in|held)")).respond_with_handler(self.handle)
        self.server = server

    def handle(self, request: Request) -> Response:
        text = json.loads(request.get_data())["text"]
        with self.lock:
            self.arrivals.append(text)
            first = request.headers["webhook-id"] not in self.seen
            self.seen.add(request.headers["webhook-id"])
        status = 200
        if text.startswith("flaky") and first:
            status = 500
        elif text.startswith("down"):
            status = 503
        elif text.startswith("bad"):
            status = 400
        return Response("ok" if status == 200 else "no", status=status)


def settled(client: redis.Redis, expected: int) -> bool:
    statuses = [client.hget(k, "status") for k in client.keys(keys.delivery("*"))]
    return (
        len(statuses) == expected
        and all(s in (b"delivered", b"dead") for s in statuses)
        and client.zcard(keys.INFLIGHT) == 0
    )


def scrape_until_two_workers_answered(server: Gunicorn) -> list[Samples]:
    """Scrape on fresh connections, several at once, until both workers have answered."""

    def one(_: int) -> Samples:
        with requests.Session() as session:
            response = session.get(server.base + "/metrics", headers={"Connection": "close"})
        assert response.status_code == 200
        return parse(response.text)

    scrapes: list[Samples] = []
    with ThreadPoolExecutor(8) as pool:
        for _ in range(25):
            scrapes += pool.map(one, range(8))
            if len(server.pids_that_served("/metrics")) >= 2:
                break
    assert len(server.pids_that_served("/metrics")) >= 2, "every scrape hit the same worker"
    return scrapes


def test_counts_add_up_across_gunicorn_and_celery_processes(
    write_config: Callable[..., Path],
    relay_processes: Callable[..., Any],
    threaded_httpserver: HTTPServer,
    gunicorn: Callable[[Path], Gunicorn],
    redis_client: redis.Redis,
) -> None:
    sink = ScriptedSink(threaded_httpserver)
    retry = {"max_attempts": 2, "backoff_base": "0.1s"}
    config = config_with(
        [
            webhook(
                "sink",
                threaded_httpserver.url_for("/in"),
                retry=retry,
                circuit={"enabled": False},
            ),
            webhook("held", threaded_httpserver.url_for("/held"), rate_limit="1/2s"),
        ],
        [
            {"source": "ops", "when": {"text": "^(ok|flaky|down|bad)"}, "targets": ["sink"]},
            {"source": "ops", "when": {"text": "^held"}, "targets": ["held"]},
        ],
    )
    path = write_config(config)
    procs = relay_processes(path)
    procs.start_worker("worker-2")
    server = gunicorn(path)

    texts = ["ok-1", "ok-2", "ok-3", "ok-4", "flaky-1", "flaky-2", "down-1", "down-2", "bad-1"]
    texts += ["held-1", "held-2"]
    posts: list[tuple[bytes, dict[str, str], int]] = []
    for n, text in enumerate(texts):
        body = event(text)
        posts.append((body, signed(body, msg_id=f"msg_{n}"), 202))
    for n in (0, 1):  # the sender resends two events it already got a 2xx for
        body = event(texts[n])
        posts.append((body, signed(body, msg_id=f"msg_{n}"), 200))
    for text in ("forged-1", "forged-2", "forged-3"):
        posts.append((event(text), signed(event(text), OTHER_SECRET), 401))

    def post(item: tuple[bytes, dict[str, str], int]) -> None:
        body, headers, status = item  # a fresh connection each: any web worker may take it
        response = requests.post(
            server.base + "/hooks/ops", data=body, headers={**headers, "Connection": "close"}
        )
        assert response.status_code == status, response.text

    with ThreadPoolExecutor(8) as pool:  # originals first, then resends and forgeries
        list(pool.map(post, posts[: len(texts)]))
        list(pool.map(post, posts[len(texts) :]))
    assert requests.post(server.base + "/hooks/no-such-source", data=b"{}").status_code == 404

    wait_for(lambda: settled(redis_client, len(texts)), timeout=90, interval=0.2)
    assert sorted(sink.arrivals).count("down-1") == 2 and sink.arrivals.count("bad-1") == 1

    scrapes = scrape_until_two_workers_answered(server)
    drop = "relay_scheduler_heartbeat_age_seconds"  # a clock, not a count
    first = {k: v for k, v in scrapes[0].items() if k[0] != drop}
    for other in scrapes[1:]:
        assert {k: v for k, v in other.items() if k[0] != drop} == first

    s = first
    assert value(s, "relay_redis_up") == 1
    assert value(s, "relay_events_accepted_total", source="ops") == 11
    assert value(s, "relay_events_duplicate_total", source="ops") == 2
    assert value(s, "relay_events_rejected_total", source="ops", reason="invalid_signature") == 3
    unknown_source = {"source": "(unknown)", "reason": "unknown_source"}
    assert value(s, "relay_events_rejected_total", **unknown_source) == 1
    outcomes = {o: value(s, "relay_deliveries_total", target="sink", outcome=o) for o in DELIVERIES}
    # ok ×4 and flaky ×2 delivered; flaky ×2 and down ×2 retried once; down ×2 and bad dead.
    assert outcomes == {"delivered": 6, "retry": 4, "dead": 3}
    held = {o: value(s, "relay_deliveries_total", target="held", outcome=o) for o in DELIVERIES}
    assert held == {"delivered": 2, "retry": 0, "dead": 0}
    assert value(s, "relay_target_waits_total", target="held", reason="rate_limited") == 1
    hist = "relay_attempt_duration_seconds"
    assert value(s, hist + "_count", target="sink") == 13  # 4 + 2·2 + 2·2 + 1 attempts
    assert value(s, hist + "_bucket", target="sink", le="+Inf") == 13
    assert value(s, hist + "_count", target="held") == 2
    assert value(s, "relay_dead_letters") == 3
    assert value(s, "relay_in_flight_tasks") == 0
    assert value(s, "relay_scheduled_deliveries") == 0
    for queue in keys.ALL_QUEUES:
        assert value(s, "relay_queue_depth", queue=queue) == 0
    assert value(s, "relay_target_circuit_state", target="sink") == 0
    assert value(s, "relay_target_paused", target="held") == 0

    # The per-minute series the API and dashboard chart carry the same totals.
    series = Stats(redis_client).series(minutes=15)
    totals = {name: sum(n for _, n in points) for name, points in series.items()}
    assert totals == {"received": 11, "delivered": 8, "failed": 7, "dead": 3}
