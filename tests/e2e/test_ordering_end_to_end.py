"""Ordered delivery per group through the real receiver, several real worker processes and
the scheduler, to a loopback sink that fails on purpose.

The sink decides each answer from what it has received so far (a scripted share of 500s,
a group's first event failing until other deliveries have arrived), so every check is a
relation between arrivals, never a duration: each group's events arrive one at a time in
the order they were accepted, none lost or twice; a group that keeps failing does not
hold the others back; the hold releases the later ones and records the break; a dead
letter releases them.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.state import keys
from relay.state.outbox import Outbox
from tests import records
from tests.conftest import RelayProcesses, ops_config, wait_for
from tests.pipeline_support import signed_post

pytestmark = pytest.mark.timeout(240)

RETRY = {"max_attempts": 100, "max_age": "10m", "backoff_base": "0.05s", "backoff_cap": "0.4s"}


@dataclass
class Arrival:
    group: str
    seq: int
    status: int
    delivery_id: str


@dataclass
class OrderedSink:
    """Records each request by group and sequence number (from the event's text,
    ``<group>-<n>``) and answers with ``decide``'s status; counts requests of one group
    that overlap."""

    decide: Callable[[OrderedSink, str, int], int]
    arrivals: list[Arrival] = field(default_factory=list)
    running: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    overlaps: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, request: Request) -> Response:
        event = json.loads(request.get_data())
        group, _, seq = event["text"].rpartition("-")
        with self.lock:
            self.running[group] += 1
            if self.running[group] > 1:
                self.overlaps.append(group)
            status = self.decide(self, group, int(seq))
        threading.Event().wait(0.02)  # a real endpoint takes a moment: overlaps would show
        with self.lock:
            self.running[group] -= 1
            arrival = Arrival(group, int(seq), status, request.headers["webhook-id"])
            self.arrivals.append(arrival)
        return Response("ok" if status < 300 else "nope", status=status)

    def delivered(self, group: str) -> list[int]:
        with self.lock:
            return [a.seq for a in self.arrivals if a.group == group and a.status < 300]

    def of(self, group: str) -> list[Arrival]:
        with self.lock:
            return [a for a in self.arrivals if a.group == group]


def start(
    sink: OrderedSink,
    httpserver: HTTPServer,
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., RelayProcesses],
    *,
    hold: str,
    workers: int = 1,
) -> tuple[FlaskClient, RelayProcesses]:
    httpserver.expect_request("/in", method="POST").respond_with_handler(sink.handle)
    config = ops_config(
        httpserver.url_for("/in"),
        retry=RETRY,
        circuit={"enabled": False},  # the failures are on purpose: keep sending
        ordering="per_group",
        ordering_hold=hold,
    )
    path = write_config(config)
    procs = relay_processes(path)
    for n in range(2, workers + 1):
        procs.start_worker(f"worker-{n}")
    return client_for(path), procs


def post(client: FlaskClient, group: str, seq: int) -> str:
    body = {
        "type": "message.created",
        "data": {"group": {"id": group}, "sender": {"id": "u1"}, "text": f"{group}-{seq}"},
    }
    response = signed_post(client, body)
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["event_id"])


def attempts(redis_client: redis.Redis, delivery_id: str) -> list[dict[str, Any]]:
    return [json.loads(a) for a in redis_client.lrange(keys.attempts(delivery_id), 0, -1)]


def check_one_at_a_time_in_order(sink: OrderedSink, group: str, count: int) -> None:
    """Every event once, in acceptance order; a later one only after the earlier one's
    success (each attempt of event n comes after event n-1 was delivered)."""
    assert sink.delivered(group) == list(range(count)), group
    seqs = [a.seq for a in sink.of(group)]
    assert seqs == sorted(seqs), f"{group}: an attempt went before an earlier event: {seqs}"


def test_each_groups_events_arrive_one_at_a_time_in_order_despite_failures(
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., RelayProcesses],
    threaded_httpserver: HTTPServer,
    redis_client: redis.Redis,
) -> None:
    groups, per_group = ["g1", "g2", "g3", "g4"], 8
    count = {"n": 0}

    def decide(sink: OrderedSink, group: str, seq: int) -> int:
        count["n"] += 1
        if group == "slow" and seq == 0:  # fails until every other group is through
            others = sum(1 for a in sink.arrivals if a.group != "slow" and a.status < 300)
            return 200 if others >= len(groups) * per_group else 500
        return 500 if count["n"] % 3 == 1 else 200  # every third request fails

    sink = OrderedSink(decide)
    client, procs = start(
        sink, threaded_httpserver, write_config, client_for, relay_processes, hold="10m", workers=3
    )
    post(client, "slow", 0)
    for seq in range(per_group):  # interleaved: g1-0, g2-0, ..., g1-1, g2-1, ...
        for group in groups:
            post(client, group, seq)
        if seq < 3:
            post(client, "slow", seq + 1)

    wait_for(lambda: len(sink.delivered("slow")) == 4, timeout=180, interval=0.2)
    for group in groups:
        check_one_at_a_time_in_order(sink, group, per_group)
    check_one_at_a_time_in_order(sink, "slow", 4)
    assert not sink.overlaps, f"requests of one group overlapped: {sink.overlaps}"
    assert any(a.status == 500 for a in sink.arrivals)  # the failures did happen
    # "slow" kept failing while every other group went through: they did not wait for it
    first_slow = next(
        n for n, a in enumerate(sink.arrivals) if a.group == "slow" and a.status == 200
    )
    others = [n for n, a in enumerate(sink.arrivals) if a.group != "slow" and a.status == 200]
    assert max(others) < first_slow
    assert redis_client.zcard(keys.DLQ) == 0
    assert not any("deliver.order_broken" in procs.log(name) for name in procs.procs)


def test_the_hold_releases_the_later_ones_and_records_the_break(
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., RelayProcesses],
    threaded_httpserver: HTTPServer,
    redis_client: redis.Redis,
) -> None:
    def decide(sink: OrderedSink, group: str, seq: int) -> int:
        if seq == 0:  # fails until the later ones got through, which only the hold allows
            return 200 if len([a for a in sink.arrivals if a.status < 300]) >= 2 else 500
        return 200

    sink = OrderedSink(decide)
    client, procs = start(
        sink, threaded_httpserver, write_config, client_for, relay_processes, hold="1s"
    )
    events = [post(client, "stuck", seq) for seq in range(3)]

    wait_for(lambda: len(sink.delivered("stuck")) == 3, timeout=120, interval=0.2)
    assert sink.delivered("stuck") == [1, 2, 0]  # 1 and 2 released, still in their order
    ids = {a.seq: a.delivery_id for a in sink.of("stuck")}
    [released] = [a for a in attempts(redis_client, ids[1]) if a["outcome"] == "delivered"]
    assert released["order_break"]["reason"] == "hold"
    assert released["order_break"]["skipped"] == ids[0]
    assert released["order_break"]["held_s"] >= 1
    assert all("order_break" not in a for a in attempts(redis_client, ids[2]))
    tokens, _ = records.scoped_keys(redis_client)
    shown = client.get(
        f"/api/v1/deliveries/{ids[1]}", headers={"Authorization": f"Bearer {tokens['read']}"}
    ).get_json()
    [api] = [a for a in shown["attempts_log"] if a["outcome"] == "delivered"]
    assert api["order_break"] == released["order_break"]  # the API shows the break
    assert redis_client.hget(keys.STATS_TARGETS, "sink|order_break|hold") == b"1"
    assert "deliver.order_broken" in procs.log("worker")
    assert all(redis_client.hget(keys.event(e), "status") == b"routed" for e in events)


def test_a_dead_letter_releases_the_lane_and_its_replay_goes_on_its_own(
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., RelayProcesses],
    threaded_httpserver: HTTPServer,
    redis_client: redis.Redis,
) -> None:
    def decide(sink: OrderedSink, group: str, seq: int) -> int:
        first_try = not any(a.group == group and a.seq == seq for a in sink.arrivals)
        return 400 if (group, seq) == ("doomed", 0) and first_try else 200

    sink = OrderedSink(decide)
    client, _ = start(
        sink, threaded_httpserver, write_config, client_for, relay_processes, hold="10m"
    )
    for seq in range(3):
        post(client, "doomed", seq)

    wait_for(lambda: sink.delivered("doomed") == [1, 2], timeout=120, interval=0.2)
    ids = {a.seq: a.delivery_id for a in sink.of("doomed")}
    assert redis_client.zscore(keys.DLQ, ids[0]) is not None  # 400: dead at once
    [released] = [a for a in attempts(redis_client, ids[1]) if a["outcome"] == "delivered"]
    assert released["order_break"] == {"reason": "dead_letter", "skipped": ids[0]}

    outbox = Outbox(redis_client, lease=60, retention=3600)
    assert outbox.replay(ids[0], keys.deliver_queue("webhook"))
    wait_for(lambda: sink.delivered("doomed") == [1, 2, 0], timeout=60, interval=0.2)
    assert redis_client.hget(keys.delivery(ids[0]), "status") == b"delivered"
