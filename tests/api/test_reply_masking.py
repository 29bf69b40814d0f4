"""Reply URLs (DingTalk's ``sessionWebhook``, Slack's ``response_url``) let whoever holds
them post into the group as the bot: only an admin key sees them, through the API and
the dashboard; workers still read them from the stored event.

Events come in through the real receiver, signed as each platform signs them.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from relay.events import GroupEvent
from relay.intake.sources.dingtalk_robot import sample_message
from relay.redact import redact
from relay.state import keys
from tests import records
from tests.api.conftest import ADDR, Api
from tests.dashboard.conftest import Dash, csrf_of
from tests.dashboard.conftest import make_dash as make_dash  # the fixture, for the pages

DT_SECRET = "SECdingtalk-app-secret-for-tests-0001"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def reply_config() -> dict[str, Any]:
    return {
        "sources": [
            {"id": "dt", "kind": "dingtalk_robot", "app_secret": "${DT_SECRET}"},
            {"id": "sl", "kind": "slack", "signing_secret": "${SLACK_SECRET}"},
        ],
        "targets": [
            {
                "id": "answer",
                "kind": "dingtalk_app",
                "app_key": "k",
                "app_secret": "s",
                "robot_code": "r",
                "mode": "reply",
            }
        ],  # fmt: skip
        "routes": [{"source": "dt", "targets": ["answer"]}],
    }


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DT_SECRET", DT_SECRET)
    monkeypatch.setenv("SLACK_SECRET", SLACK_SECRET)


def post(app: Flask, source_id: str, body: bytes) -> str:
    """Sign ``body`` as the platform would, post it to the receiver: the event id."""
    signed = app.extensions["relay"].sources[source_id].sample(body)
    response = app.test_client().post(
        f"/hooks/{source_id}", data=signed.body, headers=signed.headers
    )
    assert response.status_code in (200, 202), response.get_data(as_text=True)
    # a slash command is answered with a message, not the id: the newest event is it
    [(newest, _)] = app.extensions["relay"].redis.zrevrange(keys.EVENTS, 0, 0, withscores=True)
    return str(newest.decode())


class Credentials:
    """One event of each kind carrying a fresh reply credential; ``tokens`` must never
    reach a reader below admin."""

    def __init__(self, app: Flask) -> None:
        runtime = app.extensions["relay"]
        self.session = secrets.token_hex(16)
        self.command_path = f"T0001/{secrets.token_hex(6)}/{secrets.token_hex(12)}"
        self.action_path = f"T0001/{secrets.token_hex(6)}/{secrets.token_hex(12)}"
        self.tokens = [self.session, self.command_path, self.action_path]

        message = sample_message(int(time.time() * 1000))
        message["msgId"] = "msg" + secrets.token_hex(8)
        message["sessionWebhook"] = (
            f"https://oapi.dingtalk.com/robot/sendBySession?session={self.session}"
        )
        self.dingtalk = post(app, "dt", json.dumps(message).encode())

        form = {
            "command": "/deploy",
            "text": "now",
            "team_id": "T0001",
            "channel_id": "C1",
            "user_id": "U1",
            "trigger_id": "tr" + secrets.token_hex(6),
            "response_url": f"https://hooks.slack.com/commands/{self.command_path}",
        }
        self.command = post(app, "sl", urllib.parse.urlencode(form).encode())

        interactive = {
            "type": "view_submission",
            "team_id": "T0001",
            "event_id": "Ev" + secrets.token_hex(5),
            "response_urls": [
                {
                    "block_id": "b",
                    "channel_id": "C1",
                    "response_url": f"https://hooks.slack.com/app/{self.action_path}",
                }
            ],
            "note": f"as text: https://hooks.slack.com/actions/{self.action_path}",
        }
        self.interactive = post(app, "sl", json.dumps(interactive).encode())

        stored = runtime.redis.hget(keys.event(self.dingtalk), "data")
        self.delivery = records.fan_out(runtime, GroupEvent.from_json(stored))[0]

    def leaked(self, text: str) -> list[str]:
        return [t for t in self.tokens if t in text]


@pytest.fixture
def reply_api(make_api: Callable[..., Api]) -> tuple[Api, Credentials]:
    api = make_api(reply_config())
    return api, Credentials(api.app)


@pytest.mark.parametrize("scope", ["read", "replay"])
def test_a_key_below_admin_never_sees_a_reply_url(
    reply_api: tuple[Api, Credentials], scope: str
) -> None:
    api, creds = reply_api
    shown = []
    for event_id in (creds.dingtalk, creds.command, creds.interactive):
        response = api.get(f"/events/{event_id}", scope)
        assert response.status_code == 200
        shown.append(response.get_data(as_text=True))
    response = api.get(f"/deliveries/{creds.delivery}", scope)
    assert response.status_code == 200
    shown.append(response.get_data(as_text=True))
    shown.append(api.get("/events", scope, limit=50).get_data(as_text=True))
    assert creds.leaked("\n".join(shown)) == []

    event = api.get(f"/events/{creds.dingtalk}", scope).get_json()["event"]
    # what is left says where the reply would go, not how to post there
    assert event["reply"]["url"] == "https://oapi.dingtalk.com/[redacted]"
    assert event["reply"]["kind"] == "dingtalk_session"
    assert event["raw"]["sessionWebhook"] == "https://oapi.dingtalk.com/[redacted]"
    command = api.get(f"/events/{creds.command}", scope).get_json()["event"]
    assert command["reply"]["url"] == "https://hooks.slack.com/[redacted]"
    assert command["raw"]["response_url"] == "https://hooks.slack.com/[redacted]"


def test_an_admin_sees_reply_urls_and_workers_read_them_whole(
    reply_api: tuple[Api, Credentials],
) -> None:
    api, creds = reply_api
    event = api.ok("GET", f"/events/{creds.dingtalk}")["event"]
    assert creds.session in event["reply"]["url"]
    assert creds.session in event["raw"]["sessionWebhook"]
    delivery = api.ok("GET", f"/deliveries/{creds.delivery}")
    assert creds.session in delivery["event"]["reply"]["url"]
    command = api.ok("GET", f"/events/{creds.command}")["event"]
    assert creds.command_path in command["reply"]["url"]
    interactive = api.ok("GET", f"/events/{creds.interactive}")["event"]
    assert creds.action_path in json.dumps(interactive)
    # the stored event, which the dingtalk_app target reads, keeps the real URL
    stored = GroupEvent.from_json(api.redis.hget(keys.event(creds.dingtalk), "data"))
    assert stored.reply is not None and stored.reply.url.endswith(creds.session)


def test_logs_and_records_mask_reply_urls_in_text() -> None:
    """``redact`` (logs, attempt records, error bodies) masks a reply URL's token."""
    text = (
        "posted to https://oapi.dingtalk.com/robot/sendBySession?session=abc123&x=1 and "
        '"https://hooks.slack.com/commands/T1/22/tok3n"'
    )
    shown = redact(text) or ""
    assert "abc123" not in shown and "tok3n" not in shown
    assert "session=[redacted]&x=1" in shown
    assert "https://hooks.slack.com/commands/[redacted]" in shown
    assert redact(text, reply_urls=False) == text


# -- the dashboard -------------------------------------------------------------------------
def _login(dash: Dash, scope: str) -> FlaskClient:
    client = dash.app.test_client()
    client.environ_base["REMOTE_ADDR"] = ADDR
    page = client.get("/dashboard/login")
    response = client.post(
        "/dashboard/login",
        data={"key": dash.tokens[scope], "csrf_token": csrf_of(page.get_data(as_text=True))},
    )
    assert response.status_code == 302
    return client


@pytest.mark.parametrize(("scope", "sees"), [("read", False), ("replay", False), ("admin", True)])
def test_dashboard_pages_show_reply_urls_to_admins_only(
    make_dash: Callable[..., Dash], scope: str, sees: bool
) -> None:
    dash = make_dash(reply_config())
    creds = Credentials(dash.app)
    client = _login(dash, scope)
    pages = [f"/dashboard/events/{e}" for e in (creds.dingtalk, creds.command, creds.interactive)]
    pages += [f"/dashboard/deliveries/{creds.delivery}", "/dashboard/events"]
    html = ""
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        html += response.get_data(as_text=True)
    if sees:
        assert set(creds.leaked(html)) == set(creds.tokens)
    else:
        assert creds.leaked(html) == []
        assert "https://oapi.dingtalk.com/[redacted]" in html
