"""``relay dlq`` and ``relay queues`` against dead letters written by the real store."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from relay.cli import main
from relay.state import keys
from relay.state.deliveries import Store
from relay.state.outbox import Outbox
from tests.conftest import TEST_SECRET


@pytest.fixture
def env(redis_url: str, write_config: Callable[..., Path], tmp_path: Path) -> dict[str, str]:
    path = write_config(
        {
            "sources": [
                {"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]},
                {"id": "gh", "kind": "standard_webhooks", "secrets": [TEST_SECRET]},
            ],
            "targets": [
                {"id": "a", "kind": "file", "path": str(tmp_path / "a")},
                {"id": "b", "kind": "file", "path": str(tmp_path / "b")},
            ],
            "routes": [{"source": "ops", "targets": ["a", "b"]}],
        }
    )
    return {"RELAY_REDIS_URL": redis_url, "RELAY_CONFIG": str(path)}


def dead_letter(
    client: redis.Redis, delivery_id: str, target: str, source: str, died_ago: float = 0
) -> None:
    queue, store = Outbox(client, lease=60, retention=3600), Store(client, retention=3600)
    name = keys.deliver_queue("storage")
    queue.fan_out(
        f"evt_{delivery_id}",
        [
            (
                {
                    "id": delivery_id,
                    "event_id": f"evt_{delivery_id}",
                    "source": source,
                    "target": target,
                    "route": 0,
                    "queue": name,
                    "status": "queued",
                    "attempts": 3,
                    "created_at": time.time(),
                    "window_start": time.time(),
                },
                name,
            )
        ],
    )
    attempt = {"n": 3, "outcome": "failed", "status": 500, "error": "HTTP 500"}
    store.finish_dead(
        delivery_id,
        attempt,
        "retries exhausted after 3 attempts",
        json.dumps({"id": f"evt_{delivery_id}", "source": source}),
        token="",
    )
    client.zadd(keys.DLQ, {delivery_id: time.time() - died_ago})
    client.delete(name)


def run(env: dict[str, str], *args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env, input=input)
    return result.exit_code, result.output


def test_ls_filters_by_target_source_and_age(
    env: dict[str, str], redis_client: redis.Redis
) -> None:
    dead_letter(redis_client, "dlv_1", "a", "ops", died_ago=7200)
    dead_letter(redis_client, "dlv_2", "b", "ops")
    dead_letter(redis_client, "dlv_3", "a", "gh")

    def ids(*filters: str) -> list[str]:
        code, out = run(env, "dlq", "ls", "--json", *filters)
        assert code == 0, out
        return [json.loads(line)["id"] for line in out.splitlines()]

    assert ids() == ["dlv_3", "dlv_2", "dlv_1"]  # newest first, as the API lists them
    assert ids("--target", "a") == ["dlv_3", "dlv_1"]
    assert ids("--source", "gh") == ["dlv_3"]
    assert ids("--older-than", "1h") == ["dlv_1"]
    assert ids("--newer-than", "10m", "--target", "a") == ["dlv_3"]
    code, out = run(env, "dlq", "ls")
    assert "dlv_1" in out and "retries exhausted after 3 attempts: HTTP 500" in out
    code, out = run(env, "dlq", "ls", "--older-than", "soon")
    assert code == 2 and "'soon' is not a duration" in out


def test_show_replay_dry_run_and_purge(env: dict[str, str], redis_client: redis.Redis) -> None:
    for i in range(3):
        dead_letter(redis_client, f"dlv_{i}", "a", "ops")
    code, out = run(env, "dlq", "show", "dlv_0", "--json")
    detail = json.loads(out)
    assert detail["attempts_log"][-1]["status"] == 500 and detail["event"]["id"] == "evt_dlv_0"

    assert run(env, "dlq", "replay", "--all", "--dry-run") == (0, "would replay 3 dead letters\n")
    assert redis_client.zcard(keys.DLQ) == 3
    code, out = run(env, "dlq", "replay")
    assert code == 2 and "give delivery ids, or --all" in out

    assert run(env, "dlq", "replay", "dlv_0") == (0, "replayed 1 dead letter\n")
    assert redis_client.hget(keys.delivery("dlv_0"), "status") == b"queued"
    assert redis_client.llen(keys.deliver_queue("storage")) == 1
    code, out = run(env, "dlq", "replay", "dlv_0")
    assert code == 1 and "dlv_0: not in the dead-letter queue" in out

    code, out = run(env, "dlq", "purge", "--all", input="n\n")
    assert code == 1 and redis_client.zcard(keys.DLQ) == 2  # declined: nothing purged
    assert run(env, "dlq", "purge", "--all", "--yes") == (0, "purged 2 dead letters\n")
    assert redis_client.zcard(keys.DLQ) == 0 and not redis_client.exists(keys.delivery("dlv_1"))


def test_queues_reports_depths_and_dead_letters(
    env: dict[str, str], redis_client: redis.Redis
) -> None:
    dead_letter(redis_client, "dlv_9", "a", "ops")
    redis_client.lpush(keys.FANOUT_QUEUE, "x", "y")
    code, out = run(env, "queues", "--json")
    stats = json.loads(out)
    assert stats["queues"]["relay.fanout"] == 2 and stats["dead_letters"] == 1
