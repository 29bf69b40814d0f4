"""``relay poll`` connects only where every outbound request may: its session has the
workers' address guard (``relay.guarded``), so a Bot API base on a private address,
by literal or by a name that resolves there, is refused unless the source says
``allow_private: true``; redirects are not followed.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from relay.config.loader import parse_config
from relay.context import WebContext
from relay.intake.poller import Poller, PollError, PollRetryLater
from relay.settings import Settings

BOT_TOKEN = "7000000001:AAFD39kkdpWt3ywyRZergyOLMaJhac60qc"


@pytest.fixture
def make_poller(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Poller]]:
    runtimes: list[WebContext] = []
    pollers: list[Poller] = []

    def make(api_base: str, **options: Any) -> Poller:
        source = {"id": "tg", "kind": "telegram", "bot_token": BOT_TOKEN, "api_base": api_base}
        config = parse_config({"sources": [{**source, "poll_timeout": 0, **options}]})
        runtime = WebContext.build(make_settings(), config)
        runtimes.append(runtime)
        poller = Poller(runtime.intake, "tg", backoff_base=0.05, backoff_cap=0.1)
        pollers.append(poller)
        return poller

    yield make
    for poller in pollers:
        poller.close()
    for runtime in runtimes:
        runtime.redis.close()


@pytest.fixture
def bot_api(httpserver: HTTPServer) -> HTTPServer:
    answer = json.dumps({"ok": True, "result": []})
    httpserver.expect_request(f"/bot{BOT_TOKEN}/getUpdates").respond_with_data(
        answer, content_type="application/json"
    )
    return httpserver


@pytest.fixture
def internal_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """``bot.internal.example`` resolves to 127.0.0.1, as an internal name would."""
    real = socket.getaddrinfo

    def lookup(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "bot.internal.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port or 0)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)


def test_a_private_api_base_is_refused_by_name_of_the_key(
    make_poller: Callable[..., Poller], bot_api: HTTPServer
) -> None:
    with pytest.raises(PollError) as info:
        make_poller(f"http://127.0.0.1:{bot_api.port}")
    assert str(info.value) == (
        "sources.tg.api_base: 127.0.0.1 is a loopback address; "
        "set allow_private: true on the target to allow it"
    )
    assert bot_api.log == []


@pytest.mark.usefixtures("internal_name")
def test_a_name_resolving_to_loopback_is_refused_where_it_connects(
    make_poller: Callable[..., Poller], bot_api: HTTPServer
) -> None:
    poller = make_poller(f"http://bot.internal.example:{bot_api.port}")
    with pytest.raises(PollError) as info:
        poller.poll_once()
    assert "bot.internal.example resolves to 127.0.0.1, a loopback address" in str(info.value)
    assert BOT_TOKEN not in str(info.value)
    assert bot_api.log == []


@pytest.mark.usefixtures("internal_name")
def test_allow_private_lets_it_poll(
    make_poller: Callable[..., Poller], bot_api: HTTPServer
) -> None:
    poller = make_poller(f"http://bot.internal.example:{bot_api.port}", allow_private=True)
    assert poller.poll_once() == 0
    assert len(bot_api.log) == 1


def test_redirects_are_not_followed(
    make_poller: Callable[..., Poller], httpserver: HTTPServer
) -> None:
    httpserver.expect_request(f"/bot{BOT_TOKEN}/getUpdates").respond_with_response(
        Response(status=302, headers={"Location": httpserver.url_for("/elsewhere")})
    )
    poller = make_poller(httpserver.url_for("").rstrip("/"), allow_private=True)
    with pytest.raises(PollRetryLater, match="getUpdates answered 302"):
        poller.poll_once()
    assert [request.path for request, _ in httpserver.log] == [f"/bot{BOT_TOKEN}/getUpdates"]
