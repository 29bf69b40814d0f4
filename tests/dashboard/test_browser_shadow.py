"""Shadow deliveries in a real browser (headless Debian Chromium, Playwright).

A real worker relays one event through a live route to a loopback sink and a shadow
route to a DingTalk robot whose URL carries its token. The operator filters the
deliveries by mode, sees the shadow one marked beside nothing else, opens it and reads
the request it would have sent, with the token masked and the robot never called.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from pytest_httpserver import HTTPServer

from relay.state.apikeys import ApiKeys
from tests.conftest import TEST_SECRET, Sink, wait_for
from tests.dashboard.conftest import LiveServer
from tests.pipeline_support import EVENT, all_delivered, signed_post

pytestmark = pytest.mark.timeout(240)
TOKEN = "br0wsert0ken5c2a8e4b6f1d3a7c9e0b2f4"


def test_operator_compares_what_a_shadow_route_would_have_sent(
    chromium: Any,
    screenshots: Callable[[Any, str], Path],
    write_config: Callable[..., Path],
    make_app: Callable[..., Flask],
    relay_processes: Callable[..., Any],
    httpserver: HTTPServer,
    redis_client: redis.Redis,
) -> None:
    sink = Sink(httpserver, [])
    robot_url = httpserver.url_for("/robot/send") + f"?access_token={TOKEN}"
    path = write_config(
        {
            "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}],
            "targets": [
                {"id": "sink", "kind": "webhook", "url": sink.url, "allow_private": True},
                {"id": "robot", "kind": "dingtalk_robot", "url": robot_url, "allow_private": True},
            ],
            "routes": [
                {"source": "ops", "targets": ["sink"]},
                {"source": "ops", "mode": "shadow", "targets": ["robot"]},
            ],
        }
    )
    app = make_app(path)
    _, token = ApiKeys(redis_client).create("on-call", "read")
    relay_processes(path)
    event_id = signed_post(app.test_client(), EVENT).get_json()["event_id"]
    wait_for(lambda: all_delivered(redis_client, event_id), timeout=40)

    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    with LiveServer(app) as server:
        page.goto(server.url + "/dashboard/login")
        page.fill("#key", token)
        page.click("button[type=submit]")
        page.wait_for_url(server.url + "/dashboard/")

        page.click("nav >> text=Deliveries")
        assert page.locator("table.deliveries tbody tr").count() == 2  # side by side
        page.select_option("select[name=mode]", "shadow")
        page.click("form.filters button[type=submit]")
        rows = page.locator("table.deliveries tbody tr")
        assert rows.count() == 1
        assert "robot" in rows.inner_text() and "shadow · not sent" in rows.inner_text()
        screenshots(page, "shadow-01-deliveries")

        rows.locator("td[data-label=Created] a").click()
        main = page.inner_text("main")
        assert "What it would have sent" in main
        assert "/robot/send?access_token=[redacted]&timestamp=" not in main  # unsigned robot
        assert "/robot/send?access_token=[redacted]" in main
        assert '"msgtype": "markdown"' in main and "hi" in main
        screenshots(page, "shadow-02-delivery")

        page.goto(server.url + f"/dashboard/events/{event_id}")
        assert page.locator(".mode-shadow").count() == 1
        assert page.locator("section.side-by-side").count() == 2
        screenshots(page, "shadow-03-event")
        assert TOKEN not in page.content()
    context.close()
    assert [r.path for r, _ in httpserver.log].count("/robot/send") == 0
    assert len(sink.arrivals) == 1
    assert not errors, errors
