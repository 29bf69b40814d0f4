"""Listing commands print as kubectl and docker do: a header row, aligned columns,
newest first like the API, ``--limit`` with a "showing N of M" line on stderr, and
``--json`` lines that parse."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from relay.cli import main
from relay.context import WebContext
from relay.events import GroupEvent, Party
from relay.settings import Settings
from relay.state import keys
from relay.state.apikeys import ApiKeys
from tests import records
from tests.conftest import TEST_SECRET

CONFIG = {
    "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}],
    "targets": [
        {"id": "sink", "kind": "webhook", "url": "http://127.0.0.1:9/in", "allow_private": True},
        {"id": "robot", "kind": "dingtalk_robot"},
    ],
    "routes": [{"source": "ops", "targets": ["sink"]}],
}


class Relay:
    def __init__(self, runtime: WebContext, env: dict[str, str]) -> None:
        self.runtime = runtime
        self.env = env

    def run(self, *args: str) -> Result:
        result = CliRunner().invoke(main, list(args), env=self.env)
        assert result.exit_code == 0, result.output
        return result

    def event(self, text: str, received_at: float) -> tuple[str, str]:
        event = GroupEvent(source="ops", type="message.created", group=Party(id="g1"), text=text)
        records.accept(self.runtime, event)
        self.runtime.redis.zadd(keys.EVENTS, {event.id: received_at})
        self.runtime.redis.hset(keys.event(event.id), "received_at", f"{received_at:.6f}")
        [delivery_id] = records.fan_out(self.runtime, event)
        return event.id, delivery_id

    def dead(self, delivery_id: str, dead_at: float) -> None:
        records.kill(self.runtime, delivery_id)
        self.runtime.redis.zadd(keys.DLQ, {delivery_id: dead_at})
        self.runtime.redis.hset(keys.delivery(delivery_id), "dead_at", f"{dead_at:.6f}")


@pytest.fixture
def relay(
    write_config: Callable[..., Path],
    make_settings: Callable[..., Settings],
    redis_url: str,
    tmp_path: Path,
) -> Relay:
    path = write_config(CONFIG)
    runtime = WebContext.build(make_settings(config=path))
    runtime.redis.set(keys.SEEN, "1")
    env = {
        "RELAY_REDIS_URL": redis_url,
        "RELAY_CONFIG": str(path),
        "RELAY_STATE_DIR": str(tmp_path / "state"),
    }
    return Relay(runtime, env)


def lines(result: Result) -> list[str]:
    return result.stdout.splitlines()


def json_lines(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(result)]


@pytest.fixture
def three(relay: Relay) -> list[tuple[str, str]]:
    """Three events, received and dead-lettered an hour apart: oldest first."""
    now = time.time()
    made = []
    for i in range(3):
        event_id, delivery_id = relay.event(f"event {i}", now - 3 * 3600 + i * 3600)
        relay.dead(delivery_id, now - 3 * 3600 + i * 3600 + 60)
        made.append((event_id, delivery_id))
    return made


def test_dlq_ls_is_a_table_newest_first(relay: Relay, three: list[tuple[str, str]]) -> None:
    result = relay.run("dlq", "ls")
    header, *rows = lines(result)
    assert header.split() == ["DELIVERY", "TARGET", "SOURCE", "TRIES", "AGE", "REASON"]
    assert [row.split()[0] for row in rows] == [d for _, d in reversed(three)]
    assert [row.split()[4] for row in rows] == ["59m", "1h", "2h"]
    # columns line up under their header
    assert {row.index(" sink ") for row in rows} == {header.index("TARGET") - 1}
    assert result.stderr == "showing all 3 dead letters\n"


def test_dlq_ls_limit_says_how_many_it_left_out(relay: Relay, three: list[tuple[str, str]]) -> None:
    result = relay.run("dlq", "ls", "--limit", "2")
    assert [row.split()[0] for row in lines(result)[1:]] == [three[2][1], three[1][1]]
    assert result.stderr.startswith("showing 2 of 3 dead letters (newest first;")
    as_json = relay.run("dlq", "ls", "--limit", "1", "--json")
    [only] = json_lines(as_json)
    assert only["id"] == three[2][1] and only["target"] == "sink" and only["attempts"] == 0
    assert "showing 1 of 3" in as_json.stderr
    everything = relay.run("dlq", "ls", "--limit", "0", "--json")
    assert [d["id"] for d in json_lines(everything)] == [d for _, d in reversed(three)]
    assert everything.stderr == ""


def test_events_ls_header_status_and_limit(relay: Relay, three: list[tuple[str, str]]) -> None:
    result = relay.run("events", "ls")
    header, *rows = lines(result)
    assert header.split() == ["EVENT", "SOURCE", "TYPE", "STATUS", "AGE"]
    assert [row.split()[0] for row in rows] == [e for e, _ in reversed(three)]
    assert {row.split()[3] for row in rows} == {"failed"}
    limited = relay.run("events", "ls", "--limit", "1", "--json")
    [row] = json_lines(limited)
    assert row["id"] == three[2][0] and row["delivery_status"] == "failed"
    assert row["status"] == "routed" and row["text"] == "event 2"
    assert "showing 1 of 3 events" in limited.stderr


def test_targets_and_keys_have_header_rows_and_json(relay: Relay) -> None:
    header, *rows = lines(relay.run("targets"))
    assert header.split() == [
        "TARGET", "KIND", "STATE", "OK", "FAILED", "IN-FLIGHT", "RATE-LIMIT(USED)"
    ]  # fmt: skip
    assert [row.split()[:3] for row in rows] == [
        ["sink", "webhook", "closed"],
        ["robot", "dingtalk_robot", "closed"],
    ]
    assert rows[1].split()[-1] == "20/60s(0)"  # 20 a minute, none used
    relay.run("targets", "pause", "robot")
    [_, robot] = json_lines(relay.run("targets", "--json"))
    assert robot["id"] == "robot" and robot["paused"] is True

    _, token = ApiKeys(relay.runtime.redis).create("ops team", "read")
    listed = relay.run("keys", "ls")
    header, row = lines(listed)
    assert header.split() == ["ID", "SCOPE", "STATE", "LAST-USED", "NAME"]
    assert row.split()[1:] == ["read", "active", "never", "ops", "team"]
    [key] = json_lines(relay.run("keys", "ls", "--json"))
    assert key["name"] == "ops team" and token not in listed.output


def test_empty_listings_say_so(relay: Relay, redis_client: redis.Redis) -> None:
    assert relay.run("dlq", "ls").stdout == "no dead letters\n"
    assert relay.run("dlq", "ls", "--target", "sink").stdout == "no dead letters match\n"
    assert relay.run("events", "ls").stdout == "no events\n"
    assert relay.run("events", "ls", "--json").stdout == ""
    assert "no API keys" in relay.run("keys", "ls").stdout
