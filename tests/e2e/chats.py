"""The chat platforms of the end-to-end tests: messages as Slack and Feishu send them,
signed by the relay's own source, and loopback fakes of where the bots post back."""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from typing import Any

from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.intake.sources.feishu import FeishuOptions, sample_payload
from relay.intake.sources.slack import SAMPLE_EVENT

# -- Slack ---------------------------------------------------------------------------

SIGNING = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_BOT, SLACK_ADA, SLACK_BOB = "U0RELAYBOT", "U0ADA0042", "U0BOB0007"


class SlackApi:
    """``chat.postMessage``: what the bot posted, with its thread."""

    def __init__(self, server: HTTPServer) -> None:
        self.posted: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.base = server.url_for("/api")
        server.expect_request("/api/chat.postMessage").respond_with_handler(self.post)

    def post(self, request: Request) -> Response:
        with self.lock:
            self.posted.append(json.loads(request.get_data()))
        body = {"ok": True, "channel": "C0OPSROOM", "ts": f"{time.time():.6f}"}
        return Response(json.dumps(body), mimetype="application/json")


def slack_message(text: str, *, thread_ts: str | None = None) -> tuple[dict[str, Any], str]:
    body = copy.deepcopy(SAMPLE_EVENT)
    ts = f"{time.time():.6f}"
    body["event"].update(text=text, ts=ts, event_ts=ts, user=SLACK_ADA)
    if thread_ts:
        body["event"]["thread_ts"] = thread_ts
    body.update(event_id=f"Ev{uuid.uuid4().hex[:10].upper()}", event_time=int(time.time()))
    return body, ts


def slack_post(client: FlaskClient, body: dict[str, Any]) -> str:
    sample = (
        client.application.extensions["relay"].sources["slack"].sample(json.dumps(body).encode())
    )
    response = client.post("/hooks/slack", data=sample.body, headers=sample.headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return str(response.get_json()["event_id"])


# -- Feishu --------------------------------------------------------------------------

FEISHU_BOT = "ou_bot0000000000000000000000000000"
ADA_OPEN_ID = "ou_7d8a6e6df7621556ce0d21922b676706"
VERIFY = "feishu-verification-token-for-e2e"


def feishu_message(text: str, *, root: str = "") -> dict[str, Any]:
    """A group text message as Feishu sends it; ``@_user_1`` is the bot, ``@_user_2`` Ada."""
    options = FeishuOptions(verification_token=VERIFY, bot_open_id=FEISHU_BOT)
    body = sample_payload(options)
    msg = body["event"]["message"]
    msg["content"] = json.dumps({"text": text})
    msg["root_id"] = msg["parent_id"] = root
    mention = dict(msg["mentions"][0])
    msg["mentions"] = [
        {**mention, "key": "@_user_1", "name": "relay", "id": {"open_id": FEISHU_BOT}},
        {**mention, "key": "@_user_2", "name": "Ada", "id": {"open_id": ADA_OPEN_ID}},
    ]
    body["header"]["event_id"] = uuid.uuid4().hex
    return body


def feishu_post(client: FlaskClient, body: dict[str, Any]) -> str:
    source = client.application.extensions["relay"].sources["team"]
    sample = source.sample(json.dumps(body).encode())
    response = client.post("/hooks/team", data=sample.body, headers=sample.headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return str(response.get_json()["event_id"])


class Chat:
    """The group's bot webhook (a Feishu custom bot): what was posted back."""

    def __init__(self, server: HTTPServer) -> None:
        self.posted: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.url = server.url_for("/open-apis/bot/v2/hook/team")
        server.expect_request("/open-apis/bot/v2/hook/team").respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.posted.append(json.loads(request.get_data()))
        return Response(json.dumps({"code": 0, "msg": "success"}), mimetype="application/json")
