"""The ``apprise`` target checks the address Apprise actually connects to.

Only loopback traffic is allowed here, so "DNS" is a stub: ``workers.net.http.resolve``
is the relay's own lookup before a send, ``socket.getaddrinfo`` is the one Apprise's
libraries make when they connect. A name that answers a public address to the first
and 127.0.0.1 to the second is DNS rebinding.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

import workers.net.http
from relay.config.loader import parse_config
from relay.errors import PermanentDeliveryError
from tests.workers.support import delivery_context
from workers.net.connect_guard import vetted_connections
from workers.targets.apprise import AppriseOptions, AppriseTarget

TOKEN = "tok3n-in-the-path-9f8e7d"
ZULIP_TOKEN = "lqn6mpwpam6VZzbCW0o7olmk3hwbQSK1"
PUBLIC = "93.184.216.34"


def make_target(*urls: str, allow_private: bool = False) -> AppriseTarget:
    raw = {"id": "notify", "kind": "apprise", "allow_private": allow_private, "urls": list(urls)}
    config = parse_config(
        {"targets": [raw]}, env={}, source_options={}, target_options={"apprise": AppriseOptions}
    )
    return AppriseTarget(config.targets["notify"])


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    server.expect_request(f"/{TOKEN}").respond_with_data("ok")
    yield server
    server.stop()


@pytest.fixture
def rebinding_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names under ``.example`` resolve to a public address for the relay's own lookup
    and to 127.0.0.1 for the libraries' connect."""

    def relay_lookup(host: str, port: int) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, port))]

    real = socket.getaddrinfo

    def library_lookup(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".example"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port or 0)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(workers.net.http, "resolve", relay_lookup)
    monkeypatch.setattr(socket, "getaddrinfo", library_lookup)


@pytest.mark.usefixtures("rebinding_dns")
def test_a_name_rebound_to_loopback_after_the_check_is_refused(server: HTTPServer) -> None:
    target = make_target(f"json://hooks.example:{server.port}/{TOKEN}")
    with pytest.raises(PermanentDeliveryError) as info:
        target.deliver(delivery_context("dlv_rebind"))
    assert str(info.value) == (
        "refused to send to urls[0] (json://hooks.example:"
        f"{server.port}): 127.0.0.1 is a loopback address; "
        "set allow_private: true on the target to allow it"
    )
    assert server.log == []  # nothing reached the loopback service


@pytest.mark.usefixtures("rebinding_dns")
def test_a_plugin_without_a_host_part_is_checked_where_it_connects() -> None:
    # Zulip's URL names bot@organization.host: no host the construction-time check sees.
    target = make_target(f"zulip://bot@org.internal.example/{ZULIP_TOKEN}")
    assert target.services[0].host is None
    with pytest.raises(PermanentDeliveryError, match="127.0.0.1 is a loopback address"):
        target.deliver(delivery_context("dlv_zulip"))


@pytest.mark.usefixtures("rebinding_dns")
def test_allow_private_lets_the_rebound_name_through(server: HTTPServer) -> None:
    target = make_target(f"json://hooks.example:{server.port}/{TOKEN}", allow_private=True)
    target.deliver(delivery_context("dlv_private_ok"))
    assert len(server.log) == 1


def test_the_guard_applies_only_inside_its_own_thread(server: HTTPServer) -> None:
    """Other threads (green threads under gevent) of the worker connect as usual."""
    outside: list[bool] = []

    def connect_elsewhere() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5):
            outside.append(True)

    with vetted_connections() as refused:
        with pytest.raises(PermissionError, match="loopback"):
            socket.create_connection(("127.0.0.1", server.port), timeout=5)
        other = threading.Thread(target=connect_elsewhere)
        other.start()
        other.join()
    assert refused == ["127.0.0.1 is a loopback address"]
    assert outside == [True]
    socket.create_connection(("127.0.0.1", server.port), timeout=5).close()  # scope over
