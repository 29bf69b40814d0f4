"""The guarded outbound path: SSRF policy at save and connect time, outcomes, secrets.

Only loopback traffic is allowed on test machines, so every "public" name is a stub
resolver answer, and the rebinding test lets 127.0.0.2 stand in for a public address.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import relay.addresses
import relay.guarded
import workers.net.http as guard
from relay.errors import PermanentDeliveryError, RetryableDeliveryError
from workers.net.addresses import check_url, refusal, safe_url
from workers.net.http import BlockedAddress, HttpAnswer, guarded_pool, send
from workers.net.outcomes import classify, excerpt, parse_retry_after

SAVE_TIME_REFUSED = [
    "http://127.0.0.1/hook",
    "http://localhost:8080/hook",
    "http://0.0.0.0/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://017700000001/",
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://[fc00::1]/",
    "http://[fe80::1]/",
    "http://x@127.0.0.1/",
    "http://127.0.0.1.:80/",
    "http://LOCALHOST/",
    "http://api.localhost/",
    "http://[2002:7f00:1::]/",
    "http://[64:ff9b::a9fe:a9fe]/",
]


def start_server(host: str = "127.0.0.1", **kwargs: Any) -> HTTPServer:
    server = HTTPServer(host=host, port=0, threaded=True, **kwargs)
    server.start()
    return server


@pytest.fixture(scope="module")
def servers() -> Iterator[list[HTTPServer]]:
    """Two loopback servers for the module (stopping one takes half a second)."""
    started = [start_server(), start_server()]
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def sink(servers: list[HTTPServer]) -> HTTPServer:
    servers[0].clear()
    return servers[0]


@pytest.fixture
def canary(servers: list[HTTPServer]) -> HTTPServer:
    servers[1].clear()
    return servers[1]


def stub_resolver(answers: Callable[[str], list[str]], calls: list[str]) -> Any:
    """A ``resolve`` replacement: ``answers(host)`` gives the addresses, in order."""

    def resolve(host: str, port: int) -> list[guard.AddrInfo]:
        calls.append(host)
        infos: list[guard.AddrInfo] = []
        for address in answers(host):
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            infos.append((family, socket.SOCK_STREAM, 6, "", (address, port)))
        return infos

    return resolve


# --- save time -----------------------------------------------------------------------


@pytest.mark.parametrize("url", SAVE_TIME_REFUSED)
def test_check_url_refuses_private_forms(url: str) -> None:
    with pytest.raises(ValueError, match="allow_private: true"):
        check_url(url, allow_private=False)
    check_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://example.com/", "example.com/x"]
)
def test_check_url_refuses_other_schemes_even_when_private_allowed(url: str) -> None:
    with pytest.raises(ValueError, match="scheme must be http or https"):
        check_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http:///path",
        "http://",
        "http://127.0.0.1\\@example.com/",
        "http://exa mple.com/",
        "http://example.com:99999/",
    ],
)
def test_check_url_refuses_malformed(url: str) -> None:
    with pytest.raises(ValueError):
        check_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/in?token=abc",
        "http://93.184.215.14:8080/",
        "HTTPS://Example.COM",
        "http://[2606:4700:4700::1111]/",
        "http://[::ffff:8.8.8.8]/",
    ],
)
def test_check_url_accepts_public(url: str) -> None:
    check_url(url, allow_private=False)


def test_check_url_does_not_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(guard, "resolve", stub_resolver(lambda h: ["127.0.0.1"], calls))
    check_url("https://rebind.example/hook", allow_private=False)
    assert calls == []


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("0.0.0.0", "this network"),
        ("10.1.2.3", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.127.0.1", "carrier-grade NAT"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.0.8", "IETF"),
        ("198.18.0.1", "benchmarking"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("fe80::1", "link-local"),
        ("ff02::1", "multicast"),
        ("2002:a9fe:a9fe::", "link-local"),
        ("64:ff9b::7f00:1", "loopback"),
        ("2001:db8::1", "documentation"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # teredo client 127.0.0.1
    ],
)
def test_refusal_names_the_reason(address: str, why: str) -> None:
    reason = refusal(ipaddress.ip_address(address))
    assert reason is not None and why in reason


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.215.14", "2606:4700:4700::1111", "::ffff:1.1.1.1"]
)
def test_refusal_lets_public_addresses_through(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


# --- connect time --------------------------------------------------------------------


def test_loopback_sink_refused_without_allow_private(sink: HTTPServer) -> None:
    sink.expect_request("/hook").respond_with_data("ok")
    with pytest.raises(PermanentDeliveryError) as info:
        send(guarded_pool(False), "POST", sink.url_for("/hook"), timeout=2, data=b"{}")
    assert "127.0.0.1 is a loopback address" in str(info.value)
    assert "allow_private: true" in str(info.value)
    assert sink.log == []


def test_localhost_name_refused_at_connect(sink: HTTPServer) -> None:
    url = f"http://localhost:{sink.port}/hook"
    with pytest.raises(PermanentDeliveryError, match="localhost resolves to"):
        send(guarded_pool(False), "GET", url, timeout=2)
    assert sink.log == []


def test_loopback_sink_allowed_with_allow_private(sink: HTTPServer) -> None:
    sink.expect_request("/hook", method="POST").respond_with_data("thanks", status=200)
    response = send(guarded_pool(True), "POST", sink.url_for("/hook"), timeout=2, data=b"{}")
    result = classify(response)
    assert (result.status, result.excerpt) == (200, "thanks")
    assert len(sink.log) == 1


def test_public_name_resolving_to_loopback_is_refused(
    sink: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(guard, "resolve", stub_resolver(lambda h: ["127.0.0.1"], calls))
    url = f"http://hooks.example.com:{sink.port}/hook"
    check_url(url, allow_private=False)  # passes at save time: it is only a name
    with pytest.raises(PermanentDeliveryError, match="hooks.example.com resolves to 127.0.0.1"):
        send(guarded_pool(False), "POST", url, timeout=2, data=b"{}")
    assert calls == ["hooks.example.com"]
    assert sink.log == []


def test_one_private_answer_refuses_the_whole_name(
    sink: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    public_standin = start_server("127.0.0.2")
    try:
        allow_standin(monkeypatch)
        calls: list[str] = []
        monkeypatch.setattr(
            guard, "resolve", stub_resolver(lambda h: ["127.0.0.2", "127.0.0.1"], calls)
        )
        url = f"http://mixed.example:{sink.port}/hook"
        with pytest.raises(PermanentDeliveryError, match="127.0.0.1, a loopback address"):
            send(guarded_pool(False), "POST", url, timeout=2)
        assert public_standin.log == [] and sink.log == []
    finally:
        public_standin.stop()


def allow_standin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Treat 127.0.0.2 as public, so a "public" server can run on loopback."""
    real = relay.addresses.refusal  # the policy the guard (relay.guarded) applies
    monkeypatch.setattr(
        relay.guarded, "refusal", lambda ip: None if str(ip) == "127.0.0.2" else real(ip)
    )


def test_dns_rebinding_connects_only_to_the_checked_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The resolver answers "public" first, then loopback; each connection is checked on
    the address it actually uses, and the internal server is never reached."""
    public_standin = start_server("127.0.0.2")
    internal = HTTPServer(host="127.0.0.1", port=public_standin.port, threaded=True)
    internal.start()  # same port on both addresses: only the IP decides
    try:
        for server in (internal, public_standin):
            server.expect_request("/hook").respond_with_data("ok")
        allow_standin(monkeypatch)
        answers = iter([["127.0.0.2"], ["127.0.0.1"], ["127.0.0.1"]])
        calls: list[str] = []
        monkeypatch.setattr(guard, "resolve", stub_resolver(lambda h: next(answers), calls))
        url = f"http://rebind.example:{public_standin.port}/hook"
        headers = {"connection": "close"}  # a new connection, so a new resolution, each time
        classify(send(guarded_pool(False), "POST", url, timeout=2, headers=headers))
        for _ in range(2):
            with pytest.raises(PermanentDeliveryError, match="resolves to 127.0.0.1"):
                send(guarded_pool(False), "POST", url, timeout=2, headers=headers)
        assert len(public_standin.log) == 1
        assert internal.log == []
        assert calls == ["rebind.example"] * 3
    finally:
        internal.stop()
        public_standin.stop()


def test_allowed_name_connects_to_the_resolved_address_and_keeps_the_host(
    sink: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink.expect_request("/hook").respond_with_data("ok")
    monkeypatch.setattr(guard, "resolve", stub_resolver(lambda h: ["127.0.0.1"], []))
    url = f"http://sink.example:{sink.port}/hook"
    classify(send(guarded_pool(True), "POST", url, timeout=2))
    request, _ = sink.log[0]
    assert request.headers["host"] == f"sink.example:{sink.port}"


def test_redirect_to_canary_is_not_followed(sink: HTTPServer, canary: HTTPServer) -> None:
    canary.expect_request("/steal").respond_with_data("should never be asked")
    sink.expect_request("/hook").respond_with_data(
        "", status=302, headers={"location": canary.url_for("/steal?token=s3cret")}
    )
    response = send(guarded_pool(True), "POST", sink.url_for("/hook"), timeout=2)
    with pytest.raises(PermanentDeliveryError, match="redirect to .* not followed") as info:
        classify(response)
    assert "s3cret" not in str(info.value)
    assert len(sink.log) == 1
    assert canary.log == []


def test_environment_proxies_are_ignored(sink: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    closed_port = free_port()
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{closed_port}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    sink.expect_request("/hook").respond_with_data("direct")
    result = classify(send(guarded_pool(True), "GET", sink.url_for("/hook"), timeout=2))
    assert result.excerpt == "direct"


def test_pools_are_cached_per_flag() -> None:
    assert guarded_pool(True) is guarded_pool(True)
    assert guarded_pool(False) is not guarded_pool(True)


def test_blocked_address_is_not_an_os_error() -> None:
    assert not issubclass(BlockedAddress, OSError)  # urllib3 would swallow and retry it


# --- outcomes ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 204])
def test_2xx_is_success(sink: HTTPServer, status: int) -> None:
    sink.expect_request("/hook").respond_with_data("" if status == 204 else "fine", status=status)
    result = classify(send(guarded_pool(True), "POST", sink.url_for("/hook"), timeout=2))
    assert result.status == status


@pytest.mark.parametrize(
    ("status", "error", "words"),
    [
        (301, PermanentDeliveryError, "not followed"),
        (400, PermanentDeliveryError, "HTTP 400"),
        (404, PermanentDeliveryError, "HTTP 404"),
        (410, PermanentDeliveryError, "gone"),
        (408, RetryableDeliveryError, "HTTP 408"),
        (425, RetryableDeliveryError, "HTTP 425"),
        (429, RetryableDeliveryError, "HTTP 429"),
        (500, RetryableDeliveryError, "HTTP 500"),
        (503, RetryableDeliveryError, "HTTP 503"),
    ],
)
def test_non_2xx_statuses(
    sink: HTTPServer, status: int, error: type[Exception], words: str
) -> None:
    headers = {"location": "https://elsewhere.example/"} if status == 301 else {}
    sink.expect_request("/hook").respond_with_data("nope", status=status, headers=headers)
    response = send(guarded_pool(True), "POST", sink.url_for("/hook"), timeout=2)
    with pytest.raises(error, match=words) as info:
        classify(response)
    assert getattr(info.value, "status", None) == status
    assert getattr(info.value, "excerpt", None) == "nope"
    if isinstance(info.value, RetryableDeliveryError):
        assert info.value.retry_after is None


def test_429_retry_after_seconds(sink: HTTPServer) -> None:
    sink.expect_request("/hook").respond_with_data(
        "slow", status=429, headers={"retry-after": "37"}
    )
    response = send(guarded_pool(True), "POST", sink.url_for("/hook"), timeout=2)
    with pytest.raises(RetryableDeliveryError) as info:
        classify(response)
    assert info.value.retry_after == 37.0


def test_503_retry_after_http_date(sink: HTTPServer) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    sink.expect_request("/hook").respond_with_data(
        "busy", status=503, headers={"retry-after": when}
    )
    response = send(guarded_pool(True), "POST", sink.url_for("/hook"), timeout=2)
    with pytest.raises(RetryableDeliveryError) as info:
        classify(response)
    assert info.value.retry_after is not None and 100 <= info.value.retry_after <= 121


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("120", 120.0),
        (" 5 ", 5.0),
        ("-3", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("1.5", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("Wed, 21 Oct 2015 07:30:00 GMT", 120.0),
        ("Wed, 99 Foo 2015 07:28:00 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, tzinfo=UTC)
    assert parse_retry_after(value, now=now) == seconds


def test_excerpt_is_capped(sink: HTTPServer) -> None:
    assert excerpt("x" * 10) == "x" * 10
    assert len(excerpt("y" * 5000)) == 1024
    sink.expect_request("/hook").respond_with_data("z" * 5000, status=500)
    response = send(guarded_pool(True), "POST", sink.url_for("/hook"), timeout=2)
    with pytest.raises(RetryableDeliveryError) as info:
        classify(response)
    assert info.value.excerpt is not None and len(info.value.excerpt) == 1024


def test_response_body_read_is_capped(sink: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard, "MAX_BODY", 1000)
    sink.expect_request("/hook").respond_with_data("a" * 100_000)
    response = send(guarded_pool(True), "GET", sink.url_for("/hook"), timeout=2)
    assert len(response.body) == 1000
    # The connection with the rest of that body unread is not handed out again.
    sink.clear()
    sink.expect_request("/next").respond_with_data("next answer")
    assert send(guarded_pool(True), "GET", sink.url_for("/next"), timeout=2).text == "next answer"


def test_json_body_and_default_headers(sink: HTTPServer) -> None:
    sink.expect_request("/hook", method="POST").respond_with_json(
        {"ok": True}, headers={"X-Trace": "t1"}
    )
    response = send(
        guarded_pool(True), "POST", sink.url_for("/hook"), timeout=2, json={"text": "héllo"}
    )
    request, _ = sink.log[0]
    assert json.loads(request.get_data()) == {"text": "héllo"}
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("group-relay/")
    assert response.json() == {"ok": True}
    assert (response.status, response.headers["x-trace"]) == (200, "t1")
    assert response.url == sink.url_for("/hook")


@pytest.mark.parametrize(
    ("content_type", "body", "text"),
    [
        ("text/plain; charset=utf-8", "héllo".encode(), "héllo"),
        ('text/plain; charset="ISO-8859-1"', "héllo".encode("latin-1"), "héllo"),
        ("text/html", "héllo".encode(), "hÃ©llo"),  # text/* without a charset: ISO-8859-1
        ("application/json", '{"a": "é"}'.encode(), '{"a": "é"}'),
        ("application/octet-stream", b"h\xffi", "h\ufffdi"),  # else UTF-8, bad bytes replaced
        ("text/plain; charset=no-such-charset", "héllo".encode(), "héllo"),
    ],
)
def test_the_answer_text_is_decoded_by_its_charset(
    sink: HTTPServer, content_type: str, body: bytes, text: str
) -> None:
    sink.expect_request("/hook").respond_with_data(body, content_type=content_type)
    answer = send(guarded_pool(True), "GET", sink.url_for("/hook"), timeout=2)
    assert answer.body == body
    assert answer.text == text
    assert answer.decode(limit=1) == text[:1]  # a limit counts bytes


def test_the_answer_is_read_only_and_keeps_its_body_out_of_repr(sink: HTTPServer) -> None:
    headers = [("X-Token-Echo", "s3cret"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
    sink.expect_request("/hook").respond_with_response(Response("s3cret body", headers=headers))
    answer = send(guarded_pool(True), "GET", sink.url_for("/hook"), timeout=2)
    assert answer.headers["x-token-echo"] == answer.headers["X-TOKEN-ECHO"] == "s3cret"
    assert answer.headers.get("set-cookie") == "a=1, b=2"  # repeated headers joined
    with pytest.raises(TypeError):
        answer.headers["x-new"] = "1"  # type: ignore[index]
    with pytest.raises(FrozenInstanceError):
        answer.status = 500  # type: ignore[misc]
    assert "s3cret" not in repr(answer) and "200" in repr(answer)
    with pytest.raises(ValueError):
        answer.json()
    plain = HttpAnswer(status=200, headers={"Content-Type": "text/plain"}, body=b"", url="u")
    assert plain.headers.get("content-type") == "text/plain"  # any mapping given is folded


def test_own_headers_replace_the_defaults(sink: HTTPServer) -> None:
    sink.expect_request("/hook").respond_with_data("ok")
    headers = {"user-agent": "custom/1", "content-type": "text/plain"}
    send(guarded_pool(True), "POST", sink.url_for("/hook"), timeout=2, data=b"x", headers=headers)
    request, _ = sink.log[0]
    assert request.headers.getlist("user-agent") == ["custom/1"]
    assert request.headers["content-type"] == "text/plain"


def test_timeout_is_retryable(sink: HTTPServer) -> None:
    def slow(request: Request) -> Response:
        time.sleep(1.0)
        return Response("late")

    sink.expect_request("/hook").respond_with_handler(slow)
    started = time.monotonic()
    with pytest.raises(RetryableDeliveryError, match="did not answer within 0.2s"):
        send(guarded_pool(True), "POST", sink.url_for("/hook"), timeout=0.2)
    assert time.monotonic() - started < 0.9


def test_connection_refused_is_retryable() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(RetryableDeliveryError, match="failed: .*refused"):
        send(guarded_pool(True), "POST", url, timeout=2)


def test_invalid_url_is_permanent() -> None:
    with pytest.raises(PermanentDeliveryError, match="invalid request"):
        send(guarded_pool(True), "POST", "http://", timeout=2)
    for url in ("ftp://files.example/x", "file:///etc/passwd", "example.com/hook"):
        with pytest.raises(PermanentDeliveryError, match="invalid request"):
            send(guarded_pool(True), "POST", url, timeout=2)


def test_messages_never_carry_userinfo_query_or_path_tokens(sink: HTTPServer) -> None:
    secret_url = f"http://admin:hunter2@127.0.0.1:{sink.port}/services/T0/B0/pathsecret?k=qs3cret"
    refused = f"http://admin:hunter2@127.0.0.1:{free_port()}/services/pathsecret?k=qs3cret"
    messages = []
    with pytest.raises(PermanentDeliveryError) as blocked:
        send(guarded_pool(False), "POST", secret_url, timeout=2)
    messages.append(str(blocked.value))
    with pytest.raises(RetryableDeliveryError) as failed:
        send(guarded_pool(True), "POST", refused, timeout=2)
    messages.append(str(failed.value))
    for message in messages:
        for secret in ("hunter2", "admin", "pathsecret", "qs3cret"):
            assert secret not in message
    assert sink.log == []


def test_safe_url() -> None:
    assert (
        safe_url("https://u:p@hooks.example.com/services/T/B/x?y=1#z")
        == "https://hooks.example.com/…"
    )
    assert safe_url("http://[::1]:8080/") == "http://[::1]:8080/"
    assert safe_url("http://example.com") == "http://example.com/"


# --- TLS -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA and a certificate for ``sink.example``, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str | Path) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        d / "ca.key",
        "-out",
        d / "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=group-relay test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    run("req", *ec, "-keyout", d / "sink.key", "-out", d / "sink.csr", "-subj", "/CN=sink.example")
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:sink.example\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    run(
        "x509",
        "-req",
        "-in",
        d / "sink.csr",
        "-CA",
        d / "ca.pem",
        "-CAkey",
        d / "ca.key",
        "-CAcreateserial",
        "-out",
        d / "sink.pem",
        "-days",
        "2",
        "-extfile",
        d / "ext.cnf",
    )
    return {"ca": d / "ca.pem", "cert": d / "sink.pem", "key": d / "sink.key"}


@pytest.fixture(scope="module")
def tls_sink(tls_files: dict[str, Path]) -> Iterator[HTTPServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files["cert"], tls_files["key"])
    server = start_server(ssl_context=context)
    yield server
    server.stop()


def test_https_verifies_the_certificate_against_the_host_name(
    tls_sink: HTTPServer, tls_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    tls_sink.clear()
    tls_sink.expect_request("/hook").respond_with_data("secure")
    monkeypatch.setattr(guard, "resolve", stub_resolver(lambda h: ["127.0.0.1"], []))
    ca = str(tls_files["ca"])
    good = f"https://sink.example:{tls_sink.port}/hook"
    result = classify(send(guarded_pool(True), "POST", good, timeout=5, ca_certs=ca))
    assert result.excerpt == "secure"

    wrong = f"https://other.example:{tls_sink.port}/hook"
    with pytest.raises(RetryableDeliveryError, match="https://other.example"):
        send(guarded_pool(True), "POST", wrong, timeout=5, ca_certs=ca)
    with pytest.raises(RetryableDeliveryError):  # unknown CA: the system store is used
        send(guarded_pool(True), "POST", good, timeout=5)
    assert len(tls_sink.log) == 1


def test_https_blocked_before_the_handshake(
    tls_sink: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls_sink.clear()
    monkeypatch.setattr(guard, "resolve", stub_resolver(lambda h: ["127.0.0.1"], []))
    url = f"https://sink.example:{tls_sink.port}/hook"
    with pytest.raises(PermanentDeliveryError, match="sink.example resolves to 127.0.0.1"):
        send(guarded_pool(False), "POST", url, timeout=5)
    assert tls_sink.log == []


def free_port() -> int:
    """A loopback port with nothing listening (bound, read, closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
