"""A shadow delivery keeps its mode: ``run_delivery`` against a real Redis and a loopback
target, without Celery."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from pytest_httpserver import HTTPServer

from relay.config.loader import load_config
from relay.config.models import RouteMode
from relay.settings import Settings
from relay.state import keys
from relay.state.sealing import new_key
from tests.conftest import TEST_SECRET
from tests.workers.support import fan_out
from workers.context import WorkerContext
from workers.delivery import run_delivery
from workers.fanout import fanout
from workers.net import dryrun


def _config(url: str, mode: str) -> dict[str, Any]:
    return {
        "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}],
        "targets": [{"id": "hook", "kind": "webhook", "url": url, "allow_private": True}],
        "routes": [{"source": "ops", "mode": mode, "targets": ["hook"]}],
    }


def test_a_promotion_never_sends_a_shadow_delivery_already_queued(
    server: HTTPServer,
    write_config: Callable[..., Path],
    make_settings: Callable[..., Settings],
) -> None:
    server.expect_request("/in", method="POST").respond_with_data("ok")
    url = server.url_for("/in")

    def worker(mode: str) -> WorkerContext:
        path = write_config(_config(url, mode), name=f"{mode}.yaml")
        return WorkerContext(make_settings(config=path), load_config(path))

    shadow = worker("shadow")
    [queued] = fan_out(shadow, "evt_1")
    fanned = shadow.store.delivery(queued)
    assert fanned is not None and fanned.mode is RouteMode.SHADOW

    promoted = worker("live")  # the route went live before a worker took the delivery
    assert run_delivery(promoted, queued) == "delivered"
    assert server.log == []
    record = promoted.store.delivery(queued)
    assert record is not None and record.mode is RouteMode.SHADOW
    [request] = json.loads(record.captured or "[]")
    assert request["url"] == url and json.loads(request["body"])["id"] == "evt_1"

    [live] = fan_out(promoted, "evt_2")  # the same thread, the next attempt: sent for real
    assert run_delivery(promoted, live) == "delivered"
    assert dryrun.current() is None
    assert [r.path for r, _ in server.log] == ["/in"]
    live_record = promoted.store.delivery(live)
    assert live_record is not None and live_record.mode is None and live_record.captured is None


def test_what_a_shadow_delivery_would_have_sent_is_sealed_at_rest(
    server: HTTPServer,
    write_config: Callable[..., Path],
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
) -> None:
    """The captured body quotes the message: with keys set it is stored sealed, like the
    event it came from, and reads back whole."""
    canary = "canary-5d1f shadow minutes"
    key = new_key()
    path = write_config(_config(server.url_for("/in"), "shadow"))
    ctx = WorkerContext(make_settings(config=path, encryption_keys=key), load_config(path))
    event = json.dumps({"id": "evt_1", "source": "ops", "text": canary})
    ctx.outbox.accept_event("ops", "evt_1", event, dedupe_key=None, dedupe_ttl=60)
    fanout(ctx, "evt_1")
    [queued] = ctx.store.event_delivery_ids("evt_1")

    assert run_delivery(ctx, queued) == "delivered"
    assert server.log == []
    stored = redis_client.hget(keys.delivery(queued), "captured") or b""
    assert stored.startswith(b"enc:v1:") and canary.encode() not in stored
    record = ctx.store.delivery(queued)
    assert record is not None and record.captured is not None
    [request] = json.loads(record.captured)
    assert json.loads(request["body"])["text"] == canary


def test_shadow_deliveries_take_no_rate_slot_of_the_live_target(
    server: HTTPServer,
    write_config: Callable[..., Path],
    make_settings: Callable[..., Settings],
) -> None:
    """A target allowed one request a minute: three shadow deliveries are captured at
    once, none waits, and the live one after them still finds its slot free."""
    server.expect_request("/in", method="POST").respond_with_data("ok")

    def worker(mode: str) -> WorkerContext:
        config = _config(server.url_for("/in"), mode)
        config["targets"][0]["rate_limit"] = "1/min"
        path = write_config(config, name=f"{mode}.yaml")
        return WorkerContext(make_settings(config=path), load_config(path))

    shadow = worker("shadow")
    captured = [run_delivery(shadow, fan_out(shadow, f"evt_{n}")[0]) for n in range(3)]
    assert captured == ["delivered"] * 3 and server.log == []

    live = worker("live")
    assert run_delivery(live, fan_out(live, "evt_9")[0]) == "delivered"
    assert [json.loads(r.get_data())["id"] for r, _ in server.log] == ["evt_9"]
    assert run_delivery(live, fan_out(live, "evt_10")[0]) == "waiting"  # the limit holds
