"""Fixtures of the management API tests: an app on the suite's Redis, one key per scope,
and records written by the relay's own code (intake, fan-out, attempts, dead letters)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from relay.context import WebContext
from relay.events import GroupEvent, Party
from relay.state import keys
from tests import records
from tests.conftest import TEST_SECRET

ADDR = "203.0.113.7"


def api_config(**extra: Any) -> dict[str, Any]:
    return {
        "sources": [
            {"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]},
            {"id": "chat", "kind": "standard_webhooks", "secrets": [TEST_SECRET]},
        ],
        "targets": [
            {
                "id": "sink",
                "kind": "webhook",
                "url": "http://127.0.0.1:9/in",
                "allow_private": True,
            },
            {"id": "robot", "kind": "dingtalk_robot"},
            {"id": "pm", "kind": "webhook", "url": "http://127.0.0.1:9/pm", "rate_limit": "5/min"},
        ],
        "routes": [
            {"source": "ops", "targets": ["sink", "robot"]},
            {"source": "chat", "targets": ["pm"]},
        ],
        **extra,
    }


@dataclass
class Api:
    """The app, its runtime, a token per scope, and ways to write records."""

    app: Flask
    client: FlaskClient
    runtime: WebContext
    redis: redis.Redis
    tokens: dict[str, str] = field(default_factory=dict)
    key_ids: dict[str, str] = field(default_factory=dict)

    def call(
        self,
        method: str,
        path: str,
        scope: str | None = "admin",
        token: str | None = None,
        **params: Any,
    ) -> TestResponse:
        headers = {}
        if token is not None:
            headers["Authorization"] = token
        elif scope is not None:
            headers["Authorization"] = f"Bearer {self.tokens[scope]}"
        query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
        return self.client.open(
            "/api/v1" + path,
            method=method,
            query_string=query,
            headers=headers,
            environ_base={"REMOTE_ADDR": ADDR},
        )

    def get(self, path: str, scope: str | None = "admin", **params: Any) -> TestResponse:
        return self.call("GET", path, scope, **params)

    def post(self, path: str, scope: str | None = "admin", **params: Any) -> TestResponse:
        return self.call("POST", path, scope, **params)

    def ok(self, method: str, path: str, **params: Any) -> Any:
        response = self.call(method, path, **params)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def items(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a listing, following cursors."""
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self.ok("GET", path, **params, **({"cursor": cursor} if cursor else {}))
            found += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return found

    # records --------------------------------------------------------------------------
    def event(
        self,
        source: str = "ops",
        *,
        type: str = "message.created",
        group: str = "g1",
        text: str | None = "hello",
        received_at: float | None = None,
        fan_out: bool = True,
    ) -> tuple[str, list[str]]:
        """Accept an event as intake does and fan it out as a worker would."""
        event = GroupEvent(
            source=source,
            type=type,
            group=Party(id=group, name="Group " + group),
            sender=Party(id="u1", name="Ann"),
            text=text,
        )
        records.accept(self.runtime, event)
        if received_at is not None:
            self.redis.zadd(keys.EVENTS, {event.id: received_at})
            self.redis.hset(keys.event(event.id), "received_at", f"{received_at:.6f}")
        if not fan_out:
            return event.id, []
        return event.id, records.fan_out(self.runtime, event)

    def attempt(self, delivery_id: str, n: int = 1, **extra: Any) -> dict[str, Any]:
        record = {
            "n": n,
            "started_at": time.time(),
            "duration_ms": 12.5,
            "outcome": "retry",
            "status": 503,
            "response": "busy",
            "error": "HTTP 503",
            **extra,
        }
        self.runtime.store.add_attempt(delivery_id, record)
        return record

    def kill(self, delivery_id: str, *, dead_at: float | None = None) -> None:
        """Dead-letter a delivery as the worker does after a permanent failure."""
        records.kill(self.runtime, delivery_id)
        if dead_at is not None:
            self.redis.zadd(keys.DLQ, {delivery_id: dead_at})
            self.redis.hset(keys.delivery(delivery_id), "dead_at", f"{dead_at:.6f}")

    def audit(self, action: str | None = None) -> list[dict[str, Any]]:
        entries = self.ok("GET", "/audit", limit=500)["items"]
        return [e for e in entries if action is None or e["action"] == action]


@pytest.fixture
def make_api(
    write_config: Callable[..., Path], make_app: Callable[..., Flask], redis_client: redis.Redis
) -> Iterator[Callable[..., Api]]:
    def make(config: dict[str, Any] | None = None) -> Api:
        app = make_app(write_config(config or api_config()))
        runtime: WebContext = app.extensions["relay"]
        api = Api(app, app.test_client(), runtime, redis_client)
        tokens, key_ids = records.scoped_keys(redis_client)
        api.tokens.update(tokens)
        api.key_ids.update(key_ids)
        return api

    yield make


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
