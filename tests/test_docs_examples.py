"""The configs the docs show are real: each one marked as a full config is checked with the
loader and ``relay check``, and the worked example's flow runs end to end on loopback.

A block is a full config when its fence says so: ```` ```yaml relay.yaml ````. (Renderers
read only the first word of a fence's info string, so the marker does not show.) Its
``${NAME}`` references get the dummy values below, shaped as the real ones are, so a
check fails only for what the reader would also hit.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from flask import Flask
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.cli.embedded import free_port
from relay.config.loader import load_config
from relay.intake.sources.dingtalk_robot import sample_message, signature
from tests.conftest import ROOT, TEST_SECRET, RelayProcesses, wait_for

FENCE = re.compile(r"^```yaml relay\.yaml[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
DOCS = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]

# One realistic value per variable the marked configs use; a new one must be added here.
DUMMY_ENV = {
    "DINGTALK_APP_SECRET": "dummy-dingtalk-client-secret",
    "FEISHU_HOOK_URL": "https://open.feishu.cn/open-apis/bot/v2/hook/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
    "FEISHU_HOOK_SECRET": "dummy-feishu-signing-secret",
    "SMTP_PASSWORD": "dummy-smtp-password",
    "OPS_SECRET": TEST_SECRET,
    "GITHUB_WEBHOOK_SECRET": "dummy-github-webhook-secret",
    "SINK_SECRET": TEST_SECRET,
    "FEISHU_ENCRYPT_KEY": "dummy-feishu-encrypt-key",
    "FEISHU_VERIFICATION_TOKEN": "dummy-feishu-verification-token",
    "FEISHU_APP_ID": "cli_dummy0123456789",
    "FEISHU_APP_SECRET": "dummy-feishu-app-secret",
    "FEISHU_BOT_WEBHOOK": "https://open.feishu.cn/open-apis/bot/v2/hook/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
    "FEISHU_BOT_SECRET": "dummy-feishu-bot-secret",
    "JIRA_API_TOKEN": "dummy-jira-api-token",
    "GITHUB_TOKEN": "github_pat_dummy0000000000",
    "GITLAB_TOKEN": "glpat-dummy0123456789abcd",
    "LINEAR_API_KEY": "lin_api_dummy0123456789abcdefghijklmnopqrstuv",
    "SLACK_SIGNING_SECRET": "8f742231b10e8888abcd99yyyzzz85a5",
    "SLACK_BOT_TOKEN": "xoxb-0000000000-0000000000000-dummydummydummydummydumm",
    "NEXTCLOUD_APP_PASSWORD": "dummy-nextcloud-app-password",
    "TG_SECRET": "dummy_tg_secret",
    "TG_BOT_TOKEN": "123456789:AAFD39kkdpWt3ywyRZergyOLMaJhac60qcX",
}


def full_configs() -> list[tuple[str, str]]:
    """``(where, text)`` of every block marked as a full config."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{doc.relative_to(ROOT)}:{line}", match.group(1)))
    return found


CONFIGS = full_configs()


def test_the_worked_example_has_a_checked_config() -> None:
    assert any(where.startswith("docs/example-dingtalk-to-feishu.md") for where, _ in CONFIGS)


@pytest.mark.parametrize(("where", "text"), CONFIGS, ids=[w for w, _ in CONFIGS])
def test_a_full_config_in_the_docs_passes_relay_check(
    where: str, text: str, tmp_path: Path
) -> None:
    names = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
    unknown = sorted(names - DUMMY_ENV.keys())
    assert not unknown, f"{where}: add a dummy value for {unknown} to DUMMY_ENV"
    path = tmp_path / "relay.yaml"
    path.write_text(text, encoding="utf-8")

    load_config(path, env=DUMMY_ENV)  # raises ConfigError naming each problem

    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(DUMMY_ENV)
    check = subprocess.run(
        [sys.executable, "-m", "relay.cli", "check", str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, f"{where}:\n{check.stderr}"
    assert ": ok (" in check.stdout, check.stdout


# --- the worked example, end to end on loopback --------------------------------------


class Mailbox:
    """An aiosmtpd handler that keeps every message."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            content = envelope.original_content or b""
            self.messages.append((list(envelope.rcpt_tos), content))
        return "250 2.0.0 Ok: queued"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()
    asyncio.set_event_loop(None)


def example_config() -> dict[str, Any]:
    (text,) = [t for w, t in CONFIGS if w.startswith("docs/example-dingtalk-to-feishu.md")]
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def test_the_worked_example_relays_a_dingtalk_message_to_feishu_and_by_mail(
    tmp_path: Path,
    httpserver: HTTPServer,
    mailbox: tuple[Mailbox, int],
    make_app: Callable[..., Flask],
    relay_processes: Callable[..., RelayProcesses],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The doc's config, only its endpoints moved to loopback fakes: a DingTalk message
    that @-mentions Ada and says "incident" reaches the Feishu bot with Ada @-mentioned by
    her open_id, and the mailing list and Ada by mail."""
    feishu: list[dict[str, Any]] = []

    def answer(request: Request) -> Response:
        feishu.append(json.loads(request.get_data()))
        return Response(json.dumps({"code": 0, "msg": "success", "data": {}}), 200)

    hook = "/open-apis/bot/v2/hook/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    httpserver.expect_request(hook, method="POST").respond_with_handler(answer)
    box, smtp_port = mailbox

    config = example_config()
    for target in config["targets"]:
        target["allow_private"] = True  # loopback fakes
        if target["kind"] == "email":  # a local server without TLS or login
            target.update(host="127.0.0.1", port=smtp_port, security="none")
            del target["username"], target["password"]
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    env = {**DUMMY_ENV, "FEISHU_HOOK_URL": httpserver.url_for(hook)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    relay_processes(path, **env)
    web = make_app(path).test_client()

    stamp = int(time.time() * 1000)
    message = sample_message(stamp)
    message.update(
        senderNick="Grace",
        senderStaffId="manager7310",
        text={"content": " incident: payments are down, @Ada please look"},
    )
    message["atUsers"].append({"dingtalkId": "$:LWCP_v1:$ada", "staffId": "manager4521"})
    answer_ = web.post(
        "/hooks/dingtalk-ops",
        data=json.dumps(message, ensure_ascii=False).encode(),
        headers={
            "content-type": "application/json; charset=utf-8",
            "timestamp": str(stamp),
            "sign": signature(DUMMY_ENV["DINGTALK_APP_SECRET"], str(stamp)),
        },
    )
    assert answer_.status_code in (200, 202), answer_.get_data(as_text=True)

    wait_for(lambda: feishu and box.messages, timeout=60)
    (post,) = feishu
    assert post["msg_type"] == "post" and post["sign"] and post["timestamp"]
    content = post["content"]["post"]["zh_cn"]
    assert content["title"] == "[DingTalk] Ops"
    elements = [e for line in content["content"] for e in line]
    text = "".join(e.get("text", "") for e in elements)
    assert "Grace: incident: payments are down" in text
    assert {"tag": "at", "user_id": "ou_7d8a6e6df7621556ce0d21922b676706"} in [
        {k: e[k] for k in ("tag", "user_id") if k in e} for e in elements
    ]

    ((recipients, raw),) = box.messages
    assert sorted(recipients) == ["ada@example.com", "ops-list@example.com"]
    mail = message_from_bytes(raw, policy=policy.default)
    assert str(mail["Subject"]).startswith("[Ops] incident: payments are down")
