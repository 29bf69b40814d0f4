"""The dashboard in a real browser: headless Debian Chromium driven by Playwright.

A real worker and scheduler (``relay_processes``) deliver to a loopback sink that fails
the first request and accepts the rest; with one attempt allowed, the first delivery
dies. An operator logs in, finds the dead letter, replays it and watches it arrive.
Screenshots of every page land in tests/artifacts/dashboard/ (git-ignored).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.state import keys
from relay.state.apikeys import ApiKeys
from tests.conftest import ops_config, wait_for
from tests.dashboard.conftest import LiveServer
from tests.pipeline_support import EVENT, signed_post

pytestmark = pytest.mark.timeout(240)


class FlakySink:
    """Answers 500 to the first request, 200 to every later one."""

    def __init__(self, server: HTTPServer) -> None:
        self.arrivals: list[str] = []
        self.lock = threading.Lock()
        server.expect_request("/in", method="POST").respond_with_handler(self.handle)
        self.url = server.url_for("/in")

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.arrivals.append(request.headers.get("webhook-id", ""))
            first = len(self.arrivals) == 1
        return Response("down" if first else "ok", status=500 if first else 200)


def _reload_until(page: Any, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in page.inner_text("main"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} did not appear within {timeout}s")
        time.sleep(0.3)
        page.reload()


def test_login_find_dead_letter_replay_it_and_see_it_delivered(
    chromium: Any,
    screenshots: Callable[[Any, str], Path],
    write_config: Callable[..., Path],
    make_app: Callable[..., Flask],
    relay_processes: Callable[..., Any],
    httpserver: HTTPServer,
    redis_client: redis.Redis,
) -> None:
    sink = FlakySink(httpserver)
    path = write_config(ops_config(sink.url, retry={"max_attempts": 1}))
    app = make_app(path)
    _, token = ApiKeys(redis_client).create("on-call", "admin")
    relay_processes(path)
    event_id = signed_post(app.test_client(), EVENT).get_json()["event_id"]
    wait_for(lambda: redis_client.zcard(keys.DLQ) == 1, timeout=30)
    [delivery_id] = [m.decode() for m in redis_client.zrange(keys.DLQ, 0, -1)]

    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    with LiveServer(app) as server:
        page.goto(server.url + "/dashboard/")
        assert "/dashboard/login" in page.url  # not logged in yet
        screenshots(page, "01-login")
        page.fill("#key", "rk_000000000000_" + "x" * 43)
        page.click("button[type=submit]")
        assert "unknown, revoked or wrong" in page.inner_text("main")
        page.fill("#key", token)
        page.click("button[type=submit]")
        page.wait_for_url(server.url + "/dashboard/")
        page.wait_for_selector(".spark svg")
        assert page.locator(".spark svg").count() == 4  # the charts drew
        assert "sink" in page.inner_text("main")
        screenshots(page, "02-overview")

        page.click("nav >> text=Events")
        assert "hi" in page.inner_text("table.events")
        screenshots(page, "03-events")
        page.click(f"a[href='/dashboard/events/{event_id}'] >> nth=0")
        assert delivery_id in page.inner_text("main") and "dead" in page.inner_text("main")
        screenshots(page, "04-event")

        page.click("nav >> text=Dead letters")
        row = page.locator("table.dead tbody tr", has_text=delivery_id)
        assert row.count() == 1
        screenshots(page, "05-dead-letters")
        row.locator("input[type=checkbox]").check()
        page.click("button:has-text('Replay selected')")
        assert "replayed 1 of 1; 0 were no longer dead" in page.inner_text("main")
        screenshots(page, "06-replayed")

        page.click(f"#replayed a:has-text('{delivery_id}')")
        _reload_until(page, "delivered")
        assert "replayed 1×" in page.inner_text("main")
        screenshots(page, "07-delivery")

        page.click("nav >> text=Targets")
        screenshots(page, "08-targets")
        page.click("nav >> text=Audit log")
        audit_text = page.inner_text("main")
        assert "replay" in audit_text and "login" in audit_text
        screenshots(page, "09-audit")

        page.click("button:has-text('Log out')")
        assert "/dashboard/login" in page.url
    context.close()
    assert sink.arrivals == [delivery_id, delivery_id]  # the same id both times
    assert redis_client.hget(keys.delivery(delivery_id), "status") == b"delivered"
    assert not errors, errors


def test_every_action_works_without_javascript(
    chromium: Any,
    screenshots: Callable[[Any, str], Path],
    write_config: Callable[..., Path],
    make_app: Callable[..., Flask],
    redis_client: redis.Redis,
) -> None:
    from tests.dashboard.conftest import Dash, dash_config

    app = make_app(write_config(dash_config()))
    dash = Dash(app, app.extensions["relay"], redis_client)
    _, token = ApiKeys(redis_client).create("no-js", "admin")
    doomed, kept = dash.dead(text="purge me"), dash.dead(text="replay me")

    context = chromium.new_context(java_script_enabled=False)
    page = context.new_page()
    with LiveServer(app) as server:
        page.goto(server.url + "/dashboard/login")
        page.fill("#key", token)
        page.click("button[type=submit]")
        assert page.locator(".spark svg").count() == 0  # no script, no charts: numbers only
        assert "/min" in page.inner_text("main")

        page.goto(server.url + "/dashboard/targets")
        page.click("#t-sink button:has-text('Pause')")
        assert "sink: paused" in page.inner_text("main")
        page.click("#t-sink button:has-text('Resume')")
        assert "sink: resumed" in page.inner_text("main")

        page.goto(server.url + "/dashboard/dead-letters")
        page.locator("table.dead tbody tr", has_text=doomed).locator("input").check()
        page.click("button:has-text('Purge selected')")
        assert "Purge 1 dead letter?" in page.inner_text("main")
        screenshots(page, "10-purge-confirm")
        page.click("button:has-text('Purge 1 for good')")
        assert "purged 1 of 1" in page.inner_text("main")

        page.click("text=Replay all matching…")
        assert "Replay 1 dead letter?" in page.inner_text("main")
        page.click("button:has-text('Replay 1 for another try')")
        assert "replayed 1 of 1" in page.inner_text("main")
        followed = page.inner_text("#replayed")  # what was replayed, without a script
        assert "Replayed 1" in followed and kept in followed and "1 queued" in followed
        screenshots(page, "11-replayed-no-js")
    context.close()
    assert dash.status(doomed) is None and dash.status(kept) == "queued"


class DoomedSink:
    """Answers 410 Gone (permanent: dead at once) to a message saying "doomed", else 200."""

    def __init__(self, server: HTTPServer) -> None:
        self.arrivals: list[str] = []
        self.lock = threading.Lock()
        server.expect_request("/in", method="POST").respond_with_handler(self.handle)
        self.url = server.url_for("/in")

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.arrivals.append(request.headers.get("webhook-id", ""))
        doomed = b"doomed" in request.get_data()
        return Response("gone" if doomed else "ok", status=410 if doomed else 200)


PHONE = {"width": 390, "height": 844}
FITS = "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"


def _fits(page: Any, shot: Callable[[Any, str], Path], name: str) -> None:
    """The page does not scroll sideways at phone width; its screenshot is kept."""
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    shot(page, f"phone-{name}")
    assert page.evaluate(FITS), f"{name}: the page is {widths[0]} px wide on a {widths[1]} px phone"


def test_every_page_fits_a_phone_and_a_bulk_replay_is_followed_live(
    chromium: Any,
    screenshots: Callable[[Any, str], Path],
    write_config: Callable[..., Path],
    make_app: Callable[..., Flask],
    relay_processes: Callable[..., Any],
    httpserver: HTTPServer,
    redis_client: redis.Redis,
) -> None:
    from tests.dashboard.conftest import Dash, dash_config

    sink = DoomedSink(httpserver)
    path = write_config(dash_config(sink.url, retry={"max_attempts": 1}))
    app = make_app(path)
    dash = Dash(app, app.extensions["relay"], redis_client)
    _, token = ApiKeys(redis_client).create("on-call phone", "admin")
    long_text = "a long line without spaces " + "x" * 300  # must wrap, not widen the page
    fine = [dash.dead(text=long_text), dash.dead(text="fine now")]
    doomed = dash.dead(text="doomed for good")
    dash.dead(source="chat", text="not replayed")  # another target: stays dead, unfollowed
    relay_processes(path)

    context = chromium.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    with LiveServer(app) as server:
        page.goto(server.url + "/dashboard/login")
        _fits(page, screenshots, "01-login")
        page.fill("#key", token)
        page.click("button[type=submit]")
        page.wait_for_selector(".spark svg")
        _fits(page, screenshots, "02-overview")
        for name, path_ in [
            ("03-events", "/dashboard/events?since=1h"),
            ("04-event", f"/dashboard/deliveries/{fine[0]}"),
            ("05-targets", "/dashboard/targets"),
            ("06-audit", "/dashboard/audit"),
            ("07-dead-letters", "/dashboard/dead-letters"),
        ]:
            page.goto(server.url + path_)
            _fits(page, screenshots, name)
        assert page.get_by_label("Died since").get_attribute("placeholder", timeout=1000) == (
            "e.g. 1h or 2026-12-06T10:00Z"
        )

        page.select_option("select[name=target]", "sink")
        page.click("button:has-text('Filter')")
        page.click("text=Replay all matching…")
        assert "Replay 3 dead letters?" in page.inner_text("main")
        _fits(page, screenshots, "08-replay-confirm")
        page.click("button:has-text('Replay 3 for another try')")
        panel = page.locator("#replayed")
        assert "Replayed 3" in panel.inner_text()
        page.evaluate("() => { window.sameDocument = true; }")
        page.wait_for_function(
            "() => document.querySelector('#live-replayed').textContent.includes('All settled')",
            timeout=60_000,
        )
        assert page.evaluate("() => window.sameDocument === true")  # updated in place
        text = panel.inner_text()
        assert "2 delivered" in text and "1 dead again" in text
        assert "dead again" in panel.locator("tr", has_text=doomed).inner_text()
        for delivery_id in fine:
            assert "delivered" in panel.locator("tr", has_text=delivery_id).inner_text()
        listing = page.locator("#live-listing")  # refreshed too: the doomed one is back
        assert listing.locator("tr", has_text=doomed).count() == 1
        assert all(listing.locator("tr", has_text=d).count() == 0 for d in fine)
        _fits(page, screenshots, "09-replayed")

        page.click(f"#replayed a:has-text('{doomed}')")
        assert "HTTP 410" in page.inner_text("main")
        _fits(page, screenshots, "10-dead-again")
    context.close()
    assert sorted(sink.arrivals) == sorted([*fine, doomed])
    assert not errors, errors


def test_a_missing_browser_skips_locally_and_fails_in_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.dashboard.conftest import check_browser

    missing = tmp_path / "chromium"
    monkeypatch.delenv("RELAY_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        check_browser(missing)
    monkeypatch.setenv("RELAY_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="RELAY_REQUIRE_BROWSER is set"):
        check_browser(missing)
    check_browser(Path("/bin/sh"))  # present: neither


def test_the_overview_refreshes_itself(
    chromium: Any,
    write_config: Callable[..., Path],
    make_app: Callable[..., Flask],
    redis_client: redis.Redis,
) -> None:
    from tests.dashboard.conftest import Dash, dash_config

    app = make_app(write_config(dash_config()))
    dash = Dash(app, app.extensions["relay"], redis_client)
    _, token = ApiKeys(redis_client).create("wall screen", "read")
    context = chromium.new_context()
    page = context.new_page()
    with LiveServer(app) as server:
        page.goto(server.url + "/dashboard/login")
        page.fill("#key", token)
        page.click("button[type=submit]")
        dead_count = "a[href='/dashboard/dead-letters'] >> xpath=../../td[2]"
        assert page.inner_text(dead_count) == "0"
        page.evaluate("() => { window.sameDocument = true; }")
        dash.dead()
        page.wait_for_function(
            "() => document.querySelector(\"[data-live] strong\").textContent === '1'",
            timeout=25_000,
        )
        assert page.evaluate("() => window.sameDocument === true")  # in place, not reloaded
        assert page.locator(".spark svg").count() == 4  # and the charts redrawn
    context.close()
