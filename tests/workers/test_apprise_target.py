"""The ``apprise`` target against a real loopback endpoint (Apprise's ``json://`` and
``form://`` plugins posting to pytest-httpserver)."""

from __future__ import annotations

import json
import logging
import socket
import sys
from typing import Any

import pytest
import redis
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import workers.net.http
from relay.config.loader import parse_config
from relay.config.people import People, Person
from relay.errors import ConfigError, PermanentDeliveryError, RetryableDeliveryError
from relay.events import FileRef, Party
from tests.workers.support import assert_hidden, assert_registered, delivery_context
from workers.targets.apprise import AppriseOptions, AppriseTarget
from workers.targets.base import DeliveryContext

TOKEN = "tok3n-in-the-path-9f8e7d"
PASSWORD = "pa55-in-the-url-4c3b2a"


def make_target(*urls: str, allow_private: bool = True, **options: Any) -> AppriseTarget:
    """Through the config parser, as ``relay.yaml`` would build it."""
    raw = {"id": "notify", "kind": "apprise", "allow_private": allow_private, "urls": list(urls)}
    config = parse_config(
        {"targets": [{**raw, **options}]},
        env={},
        source_options={},
        target_options={"apprise": AppriseOptions},
    )
    return AppriseTarget(config.targets["notify"])


def json_url(server: HTTPServer, path: str = f"/hook/{TOKEN}", scheme: str = "json") -> str:
    return f"{scheme}://relay:{PASSWORD}@127.0.0.1:{server.port}{path}"


def context(
    delivery_id: str = "dlv_0001",
    *,
    template: str | None = None,
    state: redis.Redis | None = None,
    text: str = "deploy <b>done</b>",
) -> DeliveryContext:
    return delivery_context(
        delivery_id,
        template=template,
        state=state,
        source_kind="slack",
        people=People({"ada": Person(name="Ada Lovelace", slack="U1")}),
        text=text,
        sender=Party(id="u9", name="Grace"),
        mentions=[Party(id="U1"), Party(id="U2", name="bob")],
        files=[FileRef(name="log.txt", url="https://files.example.com/log.txt")],
    )


def posted(server: HTTPServer, index: int = -1) -> tuple[Request, dict[str, Any]]:
    request, _ = server.log[index]
    return request, json.loads(request.get_data())


def test_registered_as_entry_point() -> None:
    assert_registered(AppriseTarget, "apprise", "notify")


def test_json_endpoint_receives_the_rendered_message(server: HTTPServer) -> None:
    server.expect_request(f"/hook/{TOKEN}", method="POST").respond_with_data("ok")
    result = make_target(json_url(server)).deliver(context())
    assert result.excerpt == "sent to 1 Apprise URL(s)"
    request, payload = posted(server)
    assert request.authorization is not None and request.authorization.password == PASSWORD
    assert payload["title"] == "Ops room"
    assert payload["message"] == (
        "Grace: deploy <b>done</b>\n@Ada Lovelace @bob\n📎 log.txt https://files.example.com/log.txt"
    )


def test_form_endpoint_with_custom_title_and_template(server: HTTPServer) -> None:
    server.expect_request("/form", method="POST").respond_with_data("ok")
    target = make_target(
        json_url(server, "/form", scheme="form"),
        title="{{ event.sender.name }} @ {{ event.group.name }}",
        template="{{ event.text }} ({{ mentions | length }} mentioned)",
    )
    target.deliver(context(template=target.config.template))
    request, _ = server.log[-1]
    assert request.form["title"] == "Grace @ Ops room"
    assert request.form["message"] == "deploy <b>done</b> (2 mentioned)"


def test_html_format_escapes_event_text(server: HTTPServer) -> None:
    server.expect_request("/form").respond_with_data("ok")
    make_target(json_url(server, "/form", scheme="form"), format="html").deliver(context())
    request, _ = server.log[-1]
    assert "deploy &lt;b&gt;done&lt;/b&gt;" in request.form["message"]
    assert '<a href="https://files.example.com/log.txt">log.txt</a>' in request.form["message"]


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_http_500_is_retryable_and_leaks_no_secret(server: HTTPServer) -> None:
    server.expect_request(f"/hook/{TOKEN}").respond_with_data("boom", status=500)
    target = make_target(json_url(server))
    root, recorder = logging.getLogger(), Recorder()
    root.addHandler(recorder)
    try:
        with pytest.raises(RetryableDeliveryError) as info:
            target.deliver(context())
    finally:
        root.removeHandler(recorder)
    message = str(info.value)
    assert message.startswith(
        f"Apprise could not deliver to urls[0] (json://127.0.0.1:{server.port})"
    )
    assert "error=500" in message
    assert_hidden(info.value, TOKEN, PASSWORD)
    # Apprise's own records (its debug lines repeat the URL) never reach the root logger.
    assert not [r for r in recorder.records if r.name.startswith("apprise")]


def test_redirects_are_not_followed(server: HTTPServer) -> None:
    server.expect_request("/moved").respond_with_data("", status=302, headers={"location": "/else"})
    server.expect_request("/else").respond_with_data("ok")
    with pytest.raises(RetryableDeliveryError, match="urls\\[0\\]"):
        make_target(json_url(server, "/moved")).deliver(context())
    assert [r.path for r, _ in server.log] == ["/moved"]


def test_a_retry_resends_only_to_the_urls_that_failed(
    server: HTTPServer, redis_client: redis.Redis
) -> None:
    answers = iter([503, 200])
    server.expect_request("/good").respond_with_data("ok")
    server.expect_request("/flaky").respond_with_handler(
        lambda request: Response("x", status=next(answers))
    )
    target = make_target(json_url(server, "/good"), json_url(server, "/flaky"))
    with pytest.raises(RetryableDeliveryError, match="urls\\[1\\]") as info:
        target.deliver(context("dlv_retry", state=redis_client))
    assert "urls[0]" not in str(info.value)
    result = target.deliver(context("dlv_retry", state=redis_client))
    assert result.excerpt == "sent to 1 Apprise URL(s) (1 already done by an earlier attempt)"
    assert [r.path for r, _ in server.log] == ["/good", "/flaky", "/flaky"]


def test_private_urls_are_refused_without_allow_private(server: HTTPServer) -> None:
    with pytest.raises(ConfigError) as info:
        make_target(json_url(server), "ntfys://localhost/topic", allow_private=False)
    assert info.value.problems == [
        "targets.notify.urls[0]: 127.0.0.1 is a loopback address; "
        "set allow_private: true on the target to allow it",
        "targets.notify.urls[1]: localhost is a private host name; "
        "set allow_private: true on the target to allow it",
    ]
    assert TOKEN not in str(info.value) and PASSWORD not in str(info.value)


def test_fixed_services_are_not_host_checked() -> None:
    target = make_target(
        "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/-100123", allow_private=False
    )
    [service] = target.services
    assert service.host is None and service.shown == "urls[0] (tgram://…)"


def test_a_host_that_resolves_to_a_private_address_is_refused_before_sending(
    server: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_dns(host: str, port: int) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port))]

    monkeypatch.setattr(workers.net.http, "resolve", fake_dns)
    target = make_target(f"json://hooks.example.com/{TOKEN}", allow_private=False)
    with pytest.raises(PermanentDeliveryError) as info:
        target.deliver(context())
    assert str(info.value) == (
        "refused to send to urls[0] (json://hooks.example.com): hooks.example.com resolves "
        "to 10.1.2.3, a private address; set allow_private: true on the target to allow it"
    )
    assert not server.log


@pytest.mark.parametrize(
    ("urls", "problem"),
    [
        ([f"nosuchscheme://x/{TOKEN}"], "targets.notify.urls[0]: Apprise does not accept"),
        ([f"no scheme {TOKEN}"], "targets[0].urls: [0]: not an Apprise URL"),
        ([], "targets[0].urls: List should have at least 1 item"),
    ],
)
def test_bad_urls(urls: list[str], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_target(*urls)
    assert info.value.problems[0].startswith(problem), info.value.problems
    assert TOKEN not in str(info.value)


def test_templates_that_fail_to_render_are_permanent(server: HTTPServer) -> None:
    target = make_target(json_url(server))
    with pytest.raises(PermanentDeliveryError, match="template line 2"):
        target.deliver(context(template="ok\n{{ event.nope }}"))
    with pytest.raises(PermanentDeliveryError, match="title template line 1"):
        make_target(json_url(server), title="{{ event.nope }}").deliver(context())
    assert not server.log


def test_without_the_apprise_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "apprise", None)  # what a missing package looks like
    with pytest.raises(ConfigError) as info:
        make_target("json://example.com/hook")
    assert info.value.problems == [
        "targets.notify.kind: apprise needs the Apprise package: pip install 'group-relay[apprise]'"
    ]
