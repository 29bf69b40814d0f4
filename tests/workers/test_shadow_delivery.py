"""A shadow delivery keeps its mode: ``run_delivery`` against a real Redis and a loopback
target, without Celery."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_httpserver import HTTPServer

from relay.config.loader import load_config
from relay.config.models import RouteMode
from relay.settings import Settings
from tests.conftest import TEST_SECRET
from tests.workers.support import fan_out
from workers.context import WorkerContext
from workers.delivery import run_delivery
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
