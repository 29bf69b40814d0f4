"""The primary Redis killed (SIGKILL) under a steady signed load: Sentinel promotes the
replica, and the receiver, the worker and the scheduler carry on without a restart.

Real processes throughout: a primary, its replicas and three Sentinels
(``tests/sentinel_support.py``), gunicorn with ``deploy/gunicorn.conf.py``, a Celery
worker and a scheduler, all on ``redis+sentinel://``; senders resend an event until it
is answered 2xx, as platforms do. The killed server is started again once a replica is
promoted (as a supervisor would), and Sentinel makes it the new primary's replica.

The ledger: accepted (events answered 2xx), delivered (at the sink), duplicates (extra
deliveries), lost (accepted, never delivered). With ``RELAY_REDIS_MIN_REPLICAS=1`` lost
must be 0 in every run; with 0 (the control) the loss is printed, not asserted. The runs:

- one replica, ``MIN_REPLICAS`` 1 and 0: a killed process loses nothing in flight (the
  kernel still delivers what it had sent), so the control usually loses nothing either;
  with one replica, ``MIN_REPLICAS=1`` refuses events until the killed server is back;
- two replicas, ``MIN_REPLICAS=1``: the survivor confirms as soon as it follows the new
  primary;
- "cut": the replica's link breaks ``CUT`` seconds before the kill and it cannot
  reconnect (the primary starts asking for a password its replica lacks) while the
  relay's open connections go on: what the primary acknowledged meanwhile is not on the
  replica Sentinel promotes, as after a network fault between them and then a crash.

Slow (about a minute a run) and left out of the plain ``pytest``:
``pytest -m failover -s tests/chaos/test_failover.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.cli.embedded import free_port
from relay.settings import Settings
from relay.state import keys
from relay.state.connection import redis_client
from tests.conftest import ROOT, TEST_ENV, ops_config, wait_for
from tests.intake.sources.support import sign_standard_webhook as sign
from tests.sentinel_support import SentinelSet

pytestmark = pytest.mark.failover

SENDERS = 4
PAUSE = 0.01  # seconds between one sender's events: a steady load, not a flood
BEFORE_KILL = 5.0  # seconds of load before the primary is killed
AFTER_KILL = 40  # events accepted after the kill before the load stops
REPLICA_TIMEOUT = "0.5"  # RELAY_REDIS_REPLICA_TIMEOUT
# Sentinel's down-after-milliseconds: quick, yet long enough that a server starved of CPU
# on a busy 2-core machine for a moment is not taken for dead (which starts a second
# failover back to the server just restarted).
DOWN_AFTER = 2000
CUT = 1.0  # in the "cut" runs, seconds the replica is cut off before the primary dies
EVENT = {"type": "message.created", "data": {"group": {"id": "g1"}, "text": "hi"}}


@dataclass(frozen=True)
class Answer:
    msg_id: str
    status: int  # 0: no HTTP answer at all
    started: float
    ended: float
    event_id: str | None
    retry_after: str | None


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SentinelSet]:
    """Three Sentinels, a primary and ``request.param`` replicas."""
    found = SentinelSet(tmp_path / "ha", replicas=request.param, sentinels=3,
                        down_after=DOWN_AFTER).start()  # fmt: skip
    yield found
    found.stop()


def _gunicorn(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
               "-b", f"127.0.0.1:{port}", "relay.wsgi:app"]  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    return proc, f"http://127.0.0.1:{port}"


def _ready(base: str) -> bool:
    try:
        return requests.get(base + "/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _post(base: str, msg_id: str) -> Answer:
    body = json.dumps(EVENT).encode()
    started = time.monotonic()
    try:
        r = requests.post(base + "/hooks/ops", data=body, headers=sign(body, msg_id=msg_id),
                          timeout=30)  # fmt: skip
    except requests.RequestException:
        return Answer(msg_id, 0, started, time.monotonic(), None, None)
    event_id = r.json().get("event_id") if r.status_code < 300 else None
    return Answer(msg_id, r.status_code, started, time.monotonic(), event_id,
                  r.headers.get("Retry-After"))  # fmt: skip


@pytest.mark.parametrize(
    ("min_replicas", "cluster", "cut"),
    [(1, 1, 0.0), (0, 1, 0.0), (1, 2, 0.0), (1, 1, CUT), (0, 1, CUT)],
    ids=["min_replicas=1", "control", "min_replicas=1-two-replicas", "min_replicas=1-cut",
         "control-cut"],
    indirect=["cluster"],
)  # fmt: skip
def test_a_killed_primary_loses_no_accepted_event_with_min_replicas(
    min_replicas: int,
    cluster: SentinelSet,
    cut: float,
    tmp_path: Path,
    write_config: Callable[..., Path],
    relay_processes: Callable[..., Any],
    threaded_httpserver: HTTPServer,
) -> None:
    delivered: Counter[str] = Counter()
    lock = threading.Lock()

    def sink(request: Request) -> Response:
        with lock:
            delivered[json.loads(request.get_data())["id"]] += 1
        return Response("ok")

    threaded_httpserver.expect_request("/in", method="POST").respond_with_handler(sink)
    path = write_config(ops_config(threaded_httpserver.url_for("/in")))
    ha = {"RELAY_REDIS_URL": cluster.url, "RELAY_REDIS_MIN_REPLICAS": str(min_replicas),
          "RELAY_REDIS_REPLICA_TIMEOUT": REPLICA_TIMEOUT}  # fmt: skip
    env = {**os.environ, **TEST_ENV, **ha, "RELAY_CONFIG": str(path), "RELAY_LOG_LEVEL": "WARNING",
           "WEB_CONCURRENCY": "2", "RELAY_WEB_THREADS": "4"}  # fmt: skip
    web, base = _gunicorn(env, tmp_path / "gunicorn.log")
    relay_processes(path, **ha)
    answers: list[Answer] = []
    stop = threading.Event()

    def sender(n: int) -> None:
        i = 0
        while not stop.is_set():
            answer = _post(base, f"msg_{min_replicas}_{n}_{i}")
            with lock:
                answers.append(answer)
            if answer.status in (200, 202):
                i += 1  # else the same event again, as a platform resends
            time.sleep(PAUSE if answer.status in (200, 202) else 0.1)

    try:
        wait_for(lambda: _ready(base), timeout=30, interval=0.2)
        threads = [threading.Thread(target=sender, args=(n,)) for n in range(SENDERS)]
        for thread in threads:
            thread.start()
        time.sleep(BEFORE_KILL)

        old = cluster.primary()
        if cut:  # the replica's link breaks and it cannot reconnect; the relay's can
            with cluster.client(old) as primary:
                primary.config_set("requirepass", "cut-off")  # open connections stay in
                primary.client_kill_filter(_type="replica")
            time.sleep(cut)
        old.kill()
        killed = time.monotonic()
        cluster.wait_for_promotion(old.port, timeout=60)
        promoted = time.monotonic() - killed
        old.start()  # same port and data folder; Sentinel turns it into a replica
        cluster.wait_until_replicated(old, timeout=90)
        rejoined = time.monotonic() - killed

        def accepted_after_kill() -> int:
            with lock:
                return sum(a.started > killed and a.status in (200, 202) for a in answers)

        wait_for(lambda: accepted_after_kill() >= AFTER_KILL, timeout=60, interval=0.2)
        stop.set()
        for thread in threads:
            thread.join(60)

        accepted = {a.event_id for a in answers if a.event_id is not None}
        store = redis_client(Settings(redis_url=cluster.url))

        def settled() -> bool:  # each accepted event delivered, or gone from Redis
            with lock:
                waiting = accepted - set(delivered)
            return all(not store.exists(keys.event(e)) for e in waiting)

        try:
            wait_for(settled, timeout=120, interval=0.5)
        except AssertionError:
            pass  # what is still undelivered counts as lost below
        with lock:
            got = dict(delivered)
        store.close()
    finally:
        stop.set()
        os.killpg(web.pid, signal.SIGTERM)
        try:
            web.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(web.pid, signal.SIGKILL)
            web.wait(10)

    lost = accepted - set(got)
    duplicates = sum(n - 1 for e, n in got.items() if e in accepted)
    after = [a for a in answers if a.started > killed]
    first_ok = min((a.ended - killed for a in after if a.status in (200, 202)), default=None)
    refused = [a for a in answers if a.status == 503]
    steady = sorted(a.ended - a.started for a in answers if a.ended < killed and a.event_id)
    print(
        f"\nRELAY_REDIS_MIN_REPLICAS={min_replicas}, {len(cluster.nodes) - 1} replica(s)"
        f"{f', replica cut off {cut:g}s before the kill' if cut else ''}: "
        f"{len(answers)} requests, "
        f"accepted {len(accepted)}, delivered {len(accepted & set(got))}, "
        f"duplicates {duplicates}, lost {len(lost)}; 503s {len(refused)}, "
        f"no answer {sum(a.status == 0 for a in answers)}\n"
        f"  2xx before the kill: p50 {_ms(steady, 0.5)}, p99 {_ms(steady, 0.99)}\n"
        f"  kill -> promotion {promoted:.1f}s, -> old primary replicating {rejoined:.1f}s, "
        f"-> first accepted event on the new primary "
        f"{'never' if first_ok is None else f'{first_ok:.1f}s'}"
    )
    assert {a.status for a in answers} <= {0, 200, 202, 503}
    assert all(a.retry_after for a in refused), "a 503 without Retry-After"
    assert first_ok is not None, "nothing was accepted after the failover"
    if min_replicas:
        assert not lost, sorted(lost)


def _ms(sorted_seconds: list[float], q: float) -> str:
    if not sorted_seconds:
        return "-"
    at = min(len(sorted_seconds) - 1, int(q * len(sorted_seconds)))
    return f"{sorted_seconds[at] * 1000:.1f} ms"
