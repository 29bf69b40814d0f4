"""``relay send`` signs a sample the way each platform would, for every source kind.

The relay runs on a real loopback socket; each sample must be accepted and queued as
an event of the right source, which proves sample and verification agree.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from relay.cli import main
from relay.config.kinds import source_kinds
from relay.events import TASK_EVENT_TYPES
from relay.state import keys
from tests.conftest import TEST_SECRET

AES_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
SOURCES: list[dict[str, Any]] = [
    {"id": "sw", "kind": "standard_webhooks", "secrets": [TEST_SECRET]},
    {"id": "gh", "kind": "hmac", "preset": "github", "secrets": ["gh-secret"]},
    {"id": "dt", "kind": "dingtalk_robot", "app_secret": "dingtalk app secret"},
    {
        "id": "dte",
        "kind": "dingtalk_events",
        "token": "event-token",
        "aes_key": AES_KEY,
        "owner_key": "dingappkey",
    },
    {"id": "fs", "kind": "feishu", "verification_token": "vtoken", "encrypt_key": "ekey"},
    {"id": "fsplain", "kind": "feishu", "verification_token": "vtoken"},
    {
        "id": "wc",
        "kind": "wecom",
        "token": "wecom-token",
        "encoding_aes_key": AES_KEY,
        "corp_id": "ww1436e0e65a779aee",
    },
    {"id": "sl", "kind": "slack", "signing_secret": "8f742231b10e8888abcd99yyyzzz85a5"},
    {"id": "tg", "kind": "telegram", "secret_token": "tg-secret_1", "bot_username": "relay_bot"},
    {"id": "jira", "kind": "jira", "secrets": ["jira-secret"]},
    {"id": "ghi", "kind": "github", "secrets": ["gh-issues-secret"]},
    {"id": "gl", "kind": "gitlab", "secrets": ["gl-secret"]},
    {"id": "lin", "kind": "linear", "secrets": ["lin-secret"]},
]


def test_every_source_kind_is_covered() -> None:
    assert {s["kind"] for s in SOURCES} == set(source_kinds())


@pytest.fixture
def served(
    write_config: Callable[..., Path], make_app: Callable[..., Flask]
) -> Iterator[tuple[str, Path]]:
    path = write_config({"sources": SOURCES})
    server: BaseWSGIServer = make_server("127.0.0.1", 0, make_app(path), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", path
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.mark.parametrize("source_id", [s["id"] for s in SOURCES])
def test_send_is_accepted_and_queued(
    served: tuple[str, Path], redis_client: redis.Redis, source_id: str
) -> None:
    url, path = served
    result = CliRunner().invoke(main, ["send", source_id, "--config", str(path), "--url", url])
    assert result.exit_code == 0, result.output
    assert f"/hooks/{source_id}" in result.output
    [event_id] = [e.decode() for e in redis_client.zrange(keys.EVENTS, 0, -1)]
    data = redis_client.hget(keys.event(event_id), "data")
    assert data is not None
    event = json.loads(data)
    assert event["source"] == source_id
    assert event["type"] in ("message.created", "member.joined", "custom", *TASK_EVENT_TYPES)
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1
