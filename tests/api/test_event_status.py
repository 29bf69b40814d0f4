"""An event's ``delivery_status``: what became of it, read from its deliveries, the same
in the API's listing and detail, the dashboard and ``relay events ls``."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from relay.cli import main
from relay.state.records import EventStatus, event_status
from tests.api.conftest import Api


def deliver(api: Api, delivery_id: str) -> None:
    """Run one attempt to success through the store, as a worker does."""
    token = uuid.uuid4().hex
    begun = api.runtime.store.begin(delivery_id, token, 30, time.time() + 30)
    assert begun.verdict == "run", begun
    attempt = {"n": 1, "started_at": time.time(), "outcome": "delivered", "status": 200}
    api.runtime.store.finish_delivered(delivery_id, attempt, token=token)


def start(api: Api, delivery_id: str) -> None:
    """A worker claims the delivery and is still sending it."""
    assert api.runtime.store.begin(delivery_id, uuid.uuid4().hex, 30, time.time() + 30)


@pytest.fixture
def events(api: Api) -> dict[str, str]:
    """One event per status; ``ops`` events fan out to two targets (sink, robot)."""
    made: dict[str, str] = {}
    event_id, (a, b) = api.event("ops", text="all through")
    deliver(api, a)
    deliver(api, b)
    made["delivered"] = event_id
    event_id, (a, b) = api.event("ops", text="half through")
    deliver(api, a)
    api.kill(b)
    made["partly_delivered"] = event_id
    event_id, (a, b) = api.event("ops", text="nothing through")
    api.kill(a)
    api.kill(b)
    made["failed"] = event_id
    event_id, (a, b) = api.event("ops", text="one still sending")
    deliver(api, a)
    start(api, b)
    made["waiting"] = event_id
    made["not fanned out"], _ = api.event("ops", text="not fanned out", fan_out=False)
    unrouted, _ = api.event("ops", text="no route", fan_out=False)
    api.runtime.outbox.fan_out(unrouted, [])
    made["unrouted"] = unrouted
    return made


EXPECTED = {
    "delivered": "delivered",
    "partly_delivered": "partly_delivered",
    "failed": "failed",
    "waiting": "waiting",
    "not fanned out": "waiting",
    "unrouted": "unrouted",
}


def test_the_api_lists_and_shows_what_became_of_each_event(
    api: Api, events: dict[str, str]
) -> None:
    listed = {e["id"]: e for e in api.items("/events")}
    for case, event_id in events.items():
        assert listed[event_id]["delivery_status"] == EXPECTED[case], case
        detail = api.ok("GET", f"/events/{event_id}")
        assert detail["delivery_status"] == EXPECTED[case], case
    # The stored field is kept as it was: it says only whether fan-out happened.
    assert listed[events["failed"]]["status"] == "routed"
    assert listed[events["not fanned out"]]["status"] == "queued"


def test_a_replayed_dead_letter_makes_its_event_wait_again(
    api: Api, events: dict[str, str]
) -> None:
    [dead] = [
        d["id"]
        for d in api.ok("GET", f"/events/{events['partly_delivered']}")["deliveries"]
        if d["status"] == "dead"
    ]
    api.ok("POST", f"/dead-letters/{dead}/replay")
    assert api.ok("GET", f"/events/{events['partly_delivered']}")["delivery_status"] == "waiting"


def test_the_dashboard_shows_it_in_words(api: Api, events: dict[str, str]) -> None:
    client = api.app.test_client()
    form = client.get("/dashboard/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert csrf is not None
    login = client.post(
        "/dashboard/login", data={"key": api.tokens["read"], "csrf_token": csrf.group(1)}
    )
    assert login.status_code == 302
    html = client.get("/dashboard/events").get_data(as_text=True)
    assert "partly delivered" in html and "status-partly_delivered" in html
    detail = client.get(f"/dashboard/events/{events['failed']}").get_data(as_text=True)
    assert "status-failed" in detail


def test_relay_events_ls_prints_it(
    api: Api, events: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    env = {
        "RELAY_REDIS_URL": redis_url,
        "RELAY_CONFIG": str(tmp_path / "relay.yaml"),
        "RELAY_STATE_DIR": str(tmp_path / "state"),
    }
    result = CliRunner().invoke(main, ["events", "ls", "--json"], env=env)
    assert result.exit_code == 0, result.output
    shown = {
        row["id"]: row["delivery_status"] for row in map(json.loads, result.stdout.split("\n")[:-1])
    }
    assert {case: shown[event_id] for case, event_id in events.items()} == EXPECTED
    table = CliRunner().invoke(main, ["events", "ls"], env=env).stdout
    row = next(line for line in table.splitlines() if line.startswith(events["failed"]))
    assert row.split()[3] == "failed"
    shown_one = CliRunner().invoke(main, ["events", "show", events["failed"], "--json"], env=env)
    assert json.loads(shown_one.stdout)["delivery_status"] == "failed"


@pytest.mark.parametrize(
    "stored, deliveries, expected",
    [
        ("unrouted", [], EventStatus.UNROUTED),
        ("queued", [], EventStatus.WAITING),
        ("routed", ["delivered", "scheduled"], EventStatus.WAITING),
        ("routed", ["delivered", "queued"], EventStatus.WAITING),
        ("routed", ["delivered", "delivered"], EventStatus.DELIVERED),
        ("routed", ["dead", "delivered"], EventStatus.PARTLY_DELIVERED),
        ("routed", ["dead", None], EventStatus.FAILED),  # a record gone counts for nothing
        ("routed", [None, "bogus"], EventStatus.UNKNOWN),
    ],
)
def test_the_rule(stored: str, deliveries: list[str | None], expected: EventStatus) -> None:
    assert event_status(stored, deliveries) is expected
