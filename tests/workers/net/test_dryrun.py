"""The dry run of shadow deliveries: requests captured where they would leave, redacted,
answered with a success every chat adapter reads as sent, and nothing on the wire."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from relay.config.models import DRY_RUN_KINDS
from relay.errors import PermanentDeliveryError
from relay.redact import MASK
from tests.workers.support import build_target, delivery_context
from workers.net import dryrun
from workers.net.http import guarded_pool, send
from workers.targets.dingtalk_robot import DingTalkRobotTarget
from workers.targets.email import EmailTarget
from workers.targets.feishu_bot import FeishuBotTarget
from workers.targets.slack import SlackTarget
from workers.targets.telegram import TelegramTarget
from workers.targets.webhook import WebhookTarget
from workers.targets.wecom_bot import WeComBotTarget

BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
MAIL: dict[str, Any] = {"from": "relay@example.com", "to": ["ops@example.com"]}
SLACK_HOOK = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback port that records whether anyone connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def connected(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
    except BlockingIOError:
        return False
    return True


def test_send_captures_instead_of_connecting(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    run = dryrun.DryRun(secrets=frozenset({"s3cr3t-value"}))
    with dryrun.dry_run(run):
        answer = send(
            guarded_pool(True),
            "post",
            f"http://127.0.0.1:{port}/hook?key=abc&x=1",
            timeout=5,
            json={"text": "hello s3cr3t-value", "sign": "c2lnbmF0dXJl"},
            headers={"Authorization": "Bearer xoxb-1-2", "X-Trace": "s3cr3t-value"},
        )
    assert not connected(listener)
    assert answer.status == 200 and answer.json()["dry_run"] is True
    [captured] = run.requests
    assert captured.method == "POST"
    assert captured.url == f"http://127.0.0.1:{port}/hook?key={MASK}&x=1"
    assert captured.headers["Authorization"] == f"Bearer {MASK}"
    assert captured.headers["X-Trace"] == MASK
    assert captured.headers["Content-Type"] == "application/json"
    assert json.loads(captured.body or "") == {"text": f"hello {MASK}", "sign": MASK}
    with dryrun.dry_run(run), pytest.raises(PermanentDeliveryError, match="invalid request"):
        send(guarded_pool(True), "POST", "ftp://example.com/x", timeout=5, data=b"")


def test_outside_a_dry_run_send_really_connects(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    assert dryrun.current() is None
    with pytest.raises(Exception):  # noqa: B017 - the listener never answers: it timed out
        send(guarded_pool(True), "POST", f"http://127.0.0.1:{port}/", timeout=0.3, data=b"x")
    assert connected(listener)


@pytest.mark.parametrize(
    ("url", "secrets", "shown"),
    [
        (
            "https://oapi.dingtalk.com/robot/send?access_token=abc&timestamp=17&sign=x%2By",
            (),
            f"https://oapi.dingtalk.com/robot/send?access_token={MASK}&timestamp=17&sign={MASK}",
        ),
        (
            "https://open.feishu.cn/open-apis/bot/v2/hook/1d6a1b0c-3f7e-4a5e-9c1e-6e1f2a3b4c5d",
            (),
            f"https://open.feishu.cn/open-apis/bot/v2/hook/{MASK}",
        ),
        (SLACK_HOOK, (SLACK_HOOK,), f"https://hooks.slack.com/services/T00000000/B00000000/{MASK}"),
        (
            f"https://api.telegram.org/bot{BOT_TOKEN}/sendMessage",
            (),
            f"https://api.telegram.org/{MASK}/sendMessage",
        ),
        ("https://user:pw@example.com:8443/a", (), f"https://user:{MASK}@example.com:8443/a"),
        (
            "https://example.com/api/chat.postMessage",
            (),
            "https://example.com/api/chat.postMessage",
        ),
        (
            "https://example.com/in/team42?q=team42",
            ("team42",),
            f"https://example.com/in/{MASK}?q={MASK}",
        ),
    ],
)
def test_redact_url(url: str, secrets: tuple[str, ...], shown: str) -> None:
    assert dryrun.redact_url(url, secrets) == shown


def test_option_secrets_are_the_fields_a_kind_hides() -> None:
    target = build_target(
        SlackTarget, "s", webhook_url=SLACK_HOOK, blocks=True, allow_private=False
    )
    assert dryrun.option_secrets(target.options) == {SLACK_HOOK}
    assert dryrun.option_secrets(None) == frozenset()


def _targets() -> dict[str, Any]:
    """One target of each kind the dry run covers, with the secret it must hide."""
    return {
        "webhook": (
            build_target(
                WebhookTarget, "w", url="https://example.com/in", secret="whsec_" + "A" * 32
            ),
            "whsec_" + "A" * 32,
        ),
        "dingtalk_robot": (
            build_target(
                DingTalkRobotTarget,
                "d",
                url="https://oapi.dingtalk.com/robot/send?access_token=tok1234567890abcd",
                secret="SEC" + "b" * 40,
            ),
            "tok1234567890abcd",
        ),
        "feishu_bot": (
            build_target(
                FeishuBotTarget,
                "f",
                url="https://open.feishu.cn/open-apis/bot/v2/hook/abcdefgh-1234-abcd-1234-abcdefabcdef",
                secret="feishu-signing-secret",
            ),
            "abcdefgh-1234-abcd-1234-abcdefabcdef",
        ),
        "wecom_bot": (
            build_target(
                WeComBotTarget,
                "q",
                url="https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa",
            ),
            "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa",
        ),
        "slack": (
            build_target(SlackTarget, "s", token="xoxb-1111-2222-abcdefghijkl", channel="C123"),
            "xoxb-1111-2222-abcdefghijkl",
        ),
        "telegram": (
            build_target(TelegramTarget, "t", bot_token=BOT_TOKEN, chat_id=-100123),
            BOT_TOKEN,
        ),
        "email": (
            build_target(
                EmailTarget,
                "e",
                host="127.0.0.1",
                port=9,
                username="relay",
                password="mail-password-1",
                **MAIL,
            ),
            "mail-password-1",
        ),
    }


def test_every_dry_run_kind_reads_the_synthetic_answer_as_sent() -> None:
    targets = _targets()
    assert set(targets) == DRY_RUN_KINDS
    for kind, (target, secret) in targets.items():
        run = dryrun.DryRun(secrets=dryrun.option_secrets(target.options))
        with dryrun.dry_run(run):
            result = target.deliver(replace(delivery_context(text="deploy finished"), shadow=True))
        assert run.requests, kind
        shown = json.dumps([r.public() for r in run.requests])
        assert secret not in shown, kind
        assert "deploy finished" in shown, kind
        assert result.status in (200, 250), (kind, result)


def test_email_dry_run_captures_the_envelope_and_the_message(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    target = build_target(
        EmailTarget,
        "e",
        host="127.0.0.1",
        port=port,
        security="tls",
        username="relay",
        password="mail-password-1",
        **{**MAIL, "to": ["ops@example.com", "dev@example.com"]},
    )
    run = dryrun.DryRun()
    with dryrun.dry_run(run):
        result = target.deliver(delivery_context(text="disk full"))
    assert not connected(listener)
    [mail] = run.requests
    assert (mail.method, mail.url) == ("SMTP", f"smtps://127.0.0.1:{port}")
    assert mail.headers == {
        "MAIL FROM": "relay@example.com",
        "RCPT TO": "ops@example.com, dev@example.com",
    }
    assert "Subject:" in (mail.body or "") and "disk full" in (mail.body or "")
    assert result.status == 250 and "dry run" in (result.excerpt or "")


def test_capture_is_kept_per_attempt_and_capped() -> None:
    stored: list[list[dict[str, Any]]] = []
    run = dryrun.DryRun(on_capture=stored.append)
    big = b"x" * (dryrun.BODY_CAP + 10)
    for _ in range(dryrun.MAX_REQUESTS + 3):
        run.capture("POST", "https://example.com/", {}, big)
    assert len(run.requests) == dryrun.MAX_REQUESTS == len(stored)
    first = stored[-1][0]
    assert first["truncated"] is True and first["size"] == len(big)
    assert len(first["body"]) == dryrun.BODY_CAP
    binary = run.capture("POST", "https://example.com/", {}, b"\xff\xfe")
    assert binary.body is None and binary.size == 2
