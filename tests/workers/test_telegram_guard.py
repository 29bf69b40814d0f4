"""File URLs from events meet the address policy before ``sendDocument`` passes them on.

The Bot API server fetches a document URL itself; a self-hosted one inside the network
would fetch internal addresses for whoever sent the event. Only loopback traffic is
allowed here, so the "public" Bot API listens on 127.0.0.2, which the policy is told to
treat as public, and names resolve through a stub.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import relay.addresses
import relay.guarded
import workers.net.http
from relay.events import FileRef
from tests.workers.support import build_target, markup_message
from workers.targets.telegram import TelegramTarget

TOKEN = "123456789:AAHs3cretT0kenValue_-xyz"
ANSWERS = {"api.example": "127.0.0.2", "files.example": "93.184.216.34"}


@pytest.fixture
def bot(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[HTTPServer, list[dict[str, Any]]]]:
    real = relay.addresses.refusal
    monkeypatch.setattr(
        relay.guarded, "refusal", lambda ip: None if str(ip) == "127.0.0.2" else real(ip)
    )

    def resolve(host: str, port: int) -> list[Any]:
        address = ANSWERS.get(host, "127.0.0.1")  # anything else: an internal name
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(workers.net.http, "resolve", resolve)
    server = HTTPServer(host="127.0.0.2", port=0)
    server.start()
    calls: list[dict[str, Any]] = []

    def handle(request: Request) -> Response:
        calls.append({"method": request.path.rsplit("/", 1)[1], **json.loads(request.data)})
        return Response(json.dumps({"ok": True, "result": {}}), content_type="application/json")

    server.expect_request(f"/bot{TOKEN}/sendMessage").respond_with_handler(handle)
    server.expect_request(f"/bot{TOKEN}/sendDocument").respond_with_handler(handle)
    yield server, calls
    server.stop()


@pytest.mark.parametrize("allow_private", [False, True])
def test_internal_file_urls_are_not_handed_to_the_bot_api(
    bot: tuple[HTTPServer, list[dict[str, Any]]], allow_private: bool
) -> None:
    """``allow_private`` lets the target reach a Bot API server inside the network; the
    files an event names are checked all the same, since that server would fetch them."""
    server, calls = bot
    target = build_target(
        TelegramTarget,
        "tg",
        allow_private=allow_private,
        bot_token=TOKEN,
        chat_id=-100123,
        api_base=f"http://api.example:{server.port}",
    )
    files = [
        FileRef(name="meta", url="http://169.254.169.254/latest/meta-data/"),
        FileRef(name="wiki.pdf", url="https://wiki.corp.example/export.pdf"),
        FileRef(name="report.pdf", url="https://files.example/report.pdf"),
    ]
    result = target.deliver(markup_message("slack", type_="file.shared", files=files))

    assert [c["method"] for c in calls] == ["sendMessage", "sendDocument"]
    assert calls[1]["document"] == "https://files.example/report.pdf"
    assert result.excerpt is not None
    assert "document:0: not attached (refused: 169.254.169.254 is a link-local address" in (
        result.excerpt
    )
    assert "document:1: not attached (refused: wiki.corp.example resolves to 127.0.0.1" in (
        result.excerpt
    )
    assert "document:2: ok" in result.excerpt
