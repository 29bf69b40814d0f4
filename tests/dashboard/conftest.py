"""Fixtures of the dashboard tests: an app on the suite's Redis, a logged-in test client
per key scope, records written by the relay's own code, and a headless Chromium.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``) driven by Playwright; the
browser tests skip when it is missing, unless ``RELAY_REQUIRE_BROWSER`` is set (CI sets
it), in which case they fail: CI must never pass by skipping them.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.test import TestResponse

from relay.context import WebContext
from relay.events import GroupEvent, Party
from tests import records
from tests.conftest import ROOT, TEST_SECRET

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts" / "dashboard"
ADDR = "198.51.100.23"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def dash_config(sink_url: str = "http://127.0.0.1:9/in", **target_extra: Any) -> dict[str, Any]:
    return {
        "sources": [
            {"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]},
            {"id": "chat", "kind": "standard_webhooks", "secrets": [TEST_SECRET]},
        ],
        "targets": [
            {
                "id": "sink",
                "kind": "webhook",
                "url": sink_url,
                "allow_private": True,
                **target_extra,
            },
            {
                "id": "pm",
                "kind": "webhook",
                "url": "http://127.0.0.1:9/pm",
                "allow_private": True,
                "rate_limit": "5/min",
            },
        ],  # fmt: skip
        "routes": [
            {"source": "ops", "targets": ["sink"]},
            {"source": "chat", "targets": ["pm"]},
        ],
    }


@dataclass
class Dash:
    """The app, its runtime, a token per scope, logged-in clients and record writers."""

    app: Flask
    runtime: WebContext
    redis: redis.Redis
    tokens: dict[str, str] = field(default_factory=dict)
    key_ids: dict[str, str] = field(default_factory=dict)

    def client(self) -> FlaskClient:
        client = self.app.test_client()
        client.environ_base["REMOTE_ADDR"] = ADDR
        return client

    def login(self, scope: str = "admin", client: FlaskClient | None = None) -> FlaskClient:
        client = client or self.client()
        page = client.get("/dashboard/login")
        response = client.post(
            "/dashboard/login",
            data={"key": self.tokens[scope], "csrf_token": csrf_of(page.get_data(as_text=True))},
        )
        assert response.status_code == 302, response.get_data(as_text=True)
        return client

    def post(
        self, client: FlaskClient, path: str, data: dict[str, Any] | None = None, *, page: str
    ) -> TestResponse:
        """POST a form with the CSRF token of ``page`` (as a browser submits it)."""
        token = csrf_of(client.get(page).get_data(as_text=True))
        return client.post(path, data={**(data or {}), "csrf_token": token})

    # records --------------------------------------------------------------------------
    def event(self, source: str = "ops", *, text: str | None = "hello") -> tuple[str, list[str]]:
        """Accept an event as intake does and fan it out as a worker would."""
        event = GroupEvent(
            source=source,
            type="message.created",
            group=Party(id="g1", name="Ops room"),
            sender=Party(id="u1", name="Ann"),
            text=text,
        )
        records.accept(self.runtime, event)
        return event.id, records.fan_out(self.runtime, event)

    def kill(self, delivery_id: str) -> None:
        """Dead-letter a delivery as the worker does after a permanent failure."""
        records.kill(self.runtime, delivery_id)

    def dead(self, source: str = "ops", text: str = "hello") -> str:
        """One new dead letter; its delivery id."""
        _, [delivery_id] = self.event(source, text=text)
        self.kill(delivery_id)
        return delivery_id

    def status(self, delivery_id: str) -> str | None:
        found = self.runtime.store.delivery(delivery_id)
        return found.status if found else None

    def audit(self, action: str | None = None) -> list[dict[str, Any]]:
        from relay.state.audit import AuditLog

        entries = [e.public() for e in AuditLog(self.redis).entries(limit=1000)]
        return [e for e in entries if action is None or e["action"] == action]


@pytest.fixture
def make_dash(
    write_config: Callable[..., Path], make_app: Callable[..., Flask], redis_client: redis.Redis
) -> Callable[..., Dash]:
    def make(config: dict[str, Any] | None = None, **settings: Any) -> Dash:
        app = make_app(write_config(config or dash_config()), **settings)
        dash = Dash(app, app.extensions["relay"], redis_client)
        tokens, key_ids = records.scoped_keys(redis_client)
        dash.tokens.update(tokens)
        dash.key_ids.update(key_ids)
        return dash

    return make


@pytest.fixture
def dash(make_dash: Callable[..., Dash]) -> Dash:
    return make_dash()


# a live server and a browser ----------------------------------------------------------
class LiveServer:
    """The app served over HTTP on a loopback port, in a thread of the test process."""

    def __init__(self, app: Flask) -> None:
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def check_browser(path: Path) -> None:
    """Skip when the browser is missing, or fail if ``RELAY_REQUIRE_BROWSER`` is set."""
    if not path.exists():
        if os.environ.get("RELAY_REQUIRE_BROWSER"):
            pytest.fail(
                f"{path} is missing and RELAY_REQUIRE_BROWSER is set: "
                "apt-get install chromium chromium-driver"
            )
        pytest.skip(
            f"browser tests need Debian's Chromium at {path} "
            "(apt-get install chromium chromium-driver); "
            "with RELAY_REQUIRE_BROWSER=1 this fails instead"
        )


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """A headless Debian Chromium driven by Playwright (never Playwright's own browsers)."""
    check_browser(CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def screenshots() -> Callable[[Any, str], Path]:
    """``shot(page, name)`` saves a full-page PNG under tests/artifacts/dashboard/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def shot(page: Any, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return shot
