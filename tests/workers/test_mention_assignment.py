""" "Assign a task by @-mentioning someone in the group", from DingTalk to Feishu, Slack
and email, through the real receiver, fan-out and delivery.

A DingTalk group message @-mentions a colleague by staff id. The config's ``people``
map says who that is on every platform, so Feishu gets a real ``at`` element with her
open_id, Slack a real ``<@U…>`` and the email goes to her inbox.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from flask import Flask
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.cli.embedded import free_port
from relay.config.loader import load_config
from relay.settings import Settings
from workers.context import WorkerContext
from workers.delivery import run_delivery
from workers.fanout import fanout

APP_SECRET = "dingtalk app secret"
PEOPLE = {
    "grace": {
        "name": "Grace Hopper",
        "dingtalk": "grace01",
        "feishu": "ou_grace",
        "slack": "U0GRACE",
        "email": "grace@example.com",
    }
}


class Mailbox:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield box, controller.port
    controller.stop()


def dingtalk_message() -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "msgtype": "text",
        "text": {"content": "@Grace Hopper please take the failing nightly build"},
        "msgId": "msg-assign-1",
        "createAt": now,
        "conversationType": "2",
        "conversationId": "cidOps==",
        "conversationTitle": "Ops",
        "senderNick": "Ada",
        "senderStaffId": "ada01",
        "senderId": "$:LWCP_v1:$ada",
        "chatbotUserId": "$:LWCP_v1:$bot",
        "atUsers": [{"dingtalkId": "$:LWCP_v1:$grace", "staffId": "grace01"}],
        "isInAtList": False,
        "robotCode": "dingrobot",
        "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=x",
        "sessionWebhookExpiredTime": now + 5_400_000,
    }


def test_a_dingtalk_mention_reaches_feishu_slack_and_email(
    httpserver: HTTPServer,
    mailbox: tuple[Mailbox, int],
    write_config: Callable[..., Path],
    make_settings: Callable[..., Settings],
    make_app: Callable[..., Flask],
) -> None:
    received: dict[str, Any] = {}

    def record(name: str) -> Callable[[Request], Response]:
        def handler(request: Request) -> Response:
            received[name] = json.loads(request.get_data())
            if name == "feishu":
                return Response(json.dumps({"code": 0, "msg": "success", "data": {}}))
            return Response("ok")

        return handler

    httpserver.expect_request("/open-apis/bot/v2/hook/tok").respond_with_handler(record("feishu"))
    httpserver.expect_request("/services/T1/B1/x").respond_with_handler(record("slack"))
    box, smtp_port = mailbox
    path = write_config(
        {
            "people": PEOPLE,
            "sources": [{"id": "dt", "kind": "dingtalk_robot", "app_secret": APP_SECRET}],
            "targets": [
                {
                    "id": "feishu",
                    "kind": "feishu_bot",
                    "url": httpserver.url_for("/open-apis/bot/v2/hook/tok"),
                    "allow_private": True,
                },
                {
                    "id": "slack",
                    "kind": "slack",
                    "webhook_url": httpserver.url_for("/services/T1/B1/x"),
                    "allow_private": True,
                },
                {
                    "id": "mail",
                    "kind": "email",
                    "host": "127.0.0.1",
                    "port": smtp_port,
                    "security": "none",
                    "from": "relay@example.com",
                    "to": ["ops@example.com"],
                    "allow_private": True,
                },
            ],
            "routes": [{"source": "dt", "targets": ["feishu", "slack", "mail"]}],
        }
    )
    stamp = str(int(time.time() * 1000))
    sign = base64.b64encode(
        hmac.new(APP_SECRET.encode(), f"{stamp}\n{APP_SECRET}".encode(), hashlib.sha256).digest()
    ).decode()
    response = (
        make_app(path)
        .test_client()
        .post(
            "/hooks/dt",
            data=json.dumps(dingtalk_message()),
            headers={"Content-Type": "application/json", "timestamp": stamp, "sign": sign},
        )
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    event_id = response.get_json()["event_id"]

    ctx = WorkerContext(make_settings(config=path), load_config(path))
    assert fanout(ctx, event_id) == 3
    for delivery_id in ctx.store.event_delivery_ids(event_id):
        assert run_delivery(ctx, delivery_id) == "delivered"

    feishu = json.dumps(received["feishu"]["content"])
    assert '"tag": "at", "user_id": "ou_grace"' in feishu
    assert "<@U0GRACE>" in received["slack"]["text"]
    [envelope] = box.envelopes
    assert "grace@example.com" in envelope.rcpt_tos and "ops@example.com" in envelope.rcpt_tos
    assert b"Grace Hopper" in (envelope.content or b"")
