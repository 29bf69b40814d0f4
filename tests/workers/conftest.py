"""Fixtures of the worker tests: a loopback server for the platform fakes, a real worker
for the end-to-end runs, and a worker context delivering to a file target."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer

from relay.config.loader import load_config
from relay.config.models import SourceConfig
from relay.intake.sources.standard_webhooks import StandardWebhooksSource
from relay.settings import Settings
from relay.state import keys
from tests.conftest import TEST_SECRET, wait_for
from workers.context import WorkerContext

# What the end-to-end runs post unless they say otherwise.
HI = {"group": {"id": "g1", "name": "Ops"}, "sender": {"id": "u1"}, "text": "hi"}


def ops_routed_to(target: dict[str, Any]) -> dict[str, Any]:
    """A config mapping: the signed ``ops`` source routed to ``target``."""
    return {
        "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}],
        "targets": [target],
        "routes": [{"source": "ops", "targets": [target["id"]]}],
    }


@pytest.fixture(scope="module")
def loopback() -> Iterator[HTTPServer]:
    """One threaded loopback server per module: platforms answer concurrently, and
    starting a server per test would be slow."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(loopback: HTTPServer) -> HTTPServer:
    """The module's loopback server with no handlers or requests left by earlier tests."""
    loopback.clear()
    return loopback


@pytest.fixture
def relay_event(
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    redis_client: redis.Redis,
) -> Callable[..., None]:
    """``relay_event(target, data=HI)``: post one signed ``ops`` event carrying ``data`` to
    the receiver, with a real worker and scheduler routing it to ``target`` (which may be
    private: the fakes are on loopback); returns once that delivery is ``delivered``.

    Every target's end-to-end test runs this same pipeline; what differs is the target
    entry and what its fake received."""

    def run(target: dict[str, Any], data: dict[str, Any] = HI) -> None:
        path = write_config(ops_routed_to({**target, "allow_private": True}))
        relay_processes(path)
        source = StandardWebhooksSource(
            SourceConfig(
                id="ops",
                kind="standard_webhooks",
                options=StandardWebhooksSource.Options(secrets=[TEST_SECRET]),
            )
        )
        sample = source.sample(json.dumps({"type": "message.created", "data": data}).encode())
        response = client_for(path).post("/hooks/ops", data=sample.body, headers=sample.headers)
        assert response.status_code == 202
        deliveries = keys.event_deliveries(response.get_json()["event_id"])
        [delivery_id] = wait_for(lambda: redis_client.smembers(deliveries), timeout=30)
        status = keys.delivery(delivery_id.decode())
        wait_for(lambda: redis_client.hget(status, "status") == b"delivered", timeout=30)

    return run


@pytest.fixture
def file_worker(
    make_settings: Callable[..., Settings], write_config: Callable[..., Path], tmp_path: Path
) -> Callable[..., WorkerContext]:
    """``file_worker(max_attempts, **target)``: a worker context whose ``ops`` events go to
    the file target ``out`` (writing under ``tmp_path / "out"``), retried after 10 ms:
    ``run_delivery`` tests need a real target and store but no Celery."""

    def make(max_attempts: int, **target: Any) -> WorkerContext:
        retry = {"max_attempts": max_attempts, "backoff_base": "10ms"}
        out = {"id": "out", "kind": "file", "path": str(tmp_path / "out"), "retry": retry}
        path = write_config(ops_routed_to({**out, **target}))
        return WorkerContext(make_settings(config=path), load_config(path))

    return make
