"""The ``webhook`` target against a real loopback sink, verified with the official
``standardwebhooks`` library."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import ValidationError
from pytest_httpserver import HTTPServer
from standardwebhooks.webhooks import Webhook
from werkzeug import Request, Response

from relay import __version__
from relay.errors import ConfigError, PermanentDeliveryError, RetryableDeliveryError
from relay.events import Party
from relay.signing import generate_secret
from tests.workers.support import assert_hidden, assert_registered, build_target, delivery_context
from workers.targets.base import DeliveryContext
from workers.targets.webhook import WebhookTarget

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = generate_secret()


def make_target(
    url: str, *, allow_private: bool = True, timeout: float | None = None, **options: Any
) -> WebhookTarget:
    return build_target(
        WebhookTarget, "sink", allow_private=allow_private, timeout=timeout, url=url, **options
    )


def context(
    delivery_id: str = "dlv_0001",
    attempt: int = 1,
    timeout: float = 5.0,
    text: str = "deploy finished ✅",
) -> DeliveryContext:
    return delivery_context(
        delivery_id,
        attempt=attempt,
        timeout=timeout,
        text=text,
        group=Party(id="g1", name="ops room"),
        sender=Party(id="u1"),
    )


def received(server: HTTPServer, index: int = -1) -> tuple[bytes, dict[str, str]]:
    request, _ = server.log[index]
    return request.get_data(), {k.lower(): v for k, v in request.headers.items()}


def test_registered_as_entry_point() -> None:
    assert_registered(WebhookTarget, "webhook", "webhook")


def test_delivers_signed_json_that_standard_webhooks_verifies(server: HTTPServer) -> None:
    server.expect_request("/hook", method="POST").respond_with_data("ok", status=200)
    ctx = context()
    result = make_target(server.url_for("/hook"), secret=SECRET).deliver(ctx)
    assert (result.status, result.excerpt) == (200, "ok")
    body, headers = received(server)
    assert body == ctx.event_json.encode()
    assert "✅".encode() in body and b"\\u" not in body  # UTF-8, not ASCII escapes
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["user-agent"] == f"group-relay/{__version__}"
    assert headers["webhook-id"] == "dlv_0001"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 10
    payload = Webhook(SECRET).verify(body, headers)
    assert payload["id"] == "evt_1" and payload["text"] == "deploy finished ✅"


def test_two_secrets_during_rotation_each_verify(server: HTTPServer) -> None:
    server.expect_request("/hook").respond_with_data("ok")
    make_target(server.url_for("/hook"), secrets=[SECRET, OTHER_SECRET]).deliver(context())
    body, headers = received(server)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, OTHER_SECRET):
        Webhook(secret).verify(body, headers)
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(generate_secret()).verify(body, headers)


def test_unsigned_when_no_secret(server: HTTPServer) -> None:
    server.expect_request("/hook").respond_with_data("ok")
    make_target(server.url_for("/hook")).deliver(context())
    _, headers = received(server)
    assert "webhook-signature" not in headers
    assert headers["webhook-id"] == "dlv_0001"


def test_webhook_id_is_the_delivery_id_on_every_retry(server: HTTPServer) -> None:
    answers = iter(
        [
            Response("busy", status=503),
            Response("slow", status=429, headers={"retry-after": "3"}),
            Response("ok", status=202),
        ]
    )

    def handler(request: Request) -> Response:
        return next(answers)

    server.expect_request("/hook").respond_with_handler(handler)
    target = make_target(server.url_for("/hook"), secret=SECRET)
    with pytest.raises(RetryableDeliveryError):
        target.deliver(context("dlv_stable", attempt=1))
    with pytest.raises(RetryableDeliveryError) as info:
        target.deliver(context("dlv_stable", attempt=2))
    assert info.value.retry_after == 3.0
    assert target.deliver(context("dlv_stable", attempt=3)).status == 202
    assert len(server.log) == 3
    for i in range(3):
        body, headers = received(server, i)
        assert headers["webhook-id"] == "dlv_stable"
        Webhook(SECRET).verify(body, headers)


def test_static_headers_are_sent(server: HTTPServer) -> None:
    server.expect_request("/hook", headers={"x-team": "ops"}).respond_with_data("ok")
    target = make_target(server.url_for("/hook"), headers={"X-Team": "ops"})
    assert target.deliver(context()).status == 200


@pytest.mark.parametrize("name", ["webhook-id", "Webhook-Signature", "Content-Type", "host"])
def test_relay_headers_cannot_be_overridden(name: str) -> None:
    with pytest.raises(ValidationError, match="cannot be overridden"):
        WebhookTarget.Options(url="https://example.com/", headers={name: "x"})


def test_options_validation_is_clear_and_hides_secrets() -> None:
    with pytest.raises(ValidationError, match="scheme must be http or https"):
        WebhookTarget.Options(url="file:///etc/passwd")
    with pytest.raises(ValidationError, match="starts with 'whsec_'") as info:
        WebhookTarget.Options(url="https://example.com/", secret="hunter2-not-a-secret")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ValidationError, match=r"secrets\[1\]: .*base64") as info:
        WebhookTarget.Options(url="https://example.com/", secrets=[SECRET, "whsec_!!hunter2!!"])
    assert "hunter2" not in str(info.value)
    with pytest.raises(ValidationError, match="secret or secrets, not both"):
        WebhookTarget.Options(url="https://example.com/", secret=SECRET, secrets=[SECRET])
    with pytest.raises(ValidationError, match="extra"):
        WebhookTarget.Options(url="https://example.com/", sceret=SECRET)  # type: ignore[call-arg]
    assert SECRET not in repr(WebhookTarget.Options(url="https://example.com/", secret=SECRET))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/",
        "http://169.254.169.254/",
        "http://[::ffff:127.0.0.1]/",
        "http://0x7f.1/",
    ],
)
def test_private_url_refused_at_init(url: str) -> None:
    with pytest.raises(ConfigError, match=r"targets\.sink\.url: .*allow_private: true"):
        make_target(url, allow_private=False, secret=SECRET)
    make_target(url, allow_private=True)


def test_loopback_sink_without_allow_private_is_refused_at_connect(server: HTTPServer) -> None:
    """The URL names a host (so it passes at save time); the address check still holds."""
    server.expect_request("/hook").respond_with_data("ok")
    target = make_target(server.url_for("/hook").replace("127.0.0.1", "localhost"), secret=SECRET)
    target.config = target.config.model_copy(update={"allow_private": False})
    with pytest.raises(PermanentDeliveryError, match="loopback address"):
        target.deliver(context())
    assert server.log == []


def test_config_timeout_wins_over_the_context(server: HTTPServer) -> None:
    def slow(request: Request) -> Response:
        time.sleep(1.0)
        return Response("late")

    server.expect_request("/hook").respond_with_handler(slow)
    target = make_target(server.url_for("/hook"), timeout=0.2)
    started = time.monotonic()
    with pytest.raises(RetryableDeliveryError, match="did not answer within 0.2s"):
        target.deliver(context(timeout=30))
    assert time.monotonic() - started < 0.9


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, RetryableDeliveryError), (400, PermanentDeliveryError), (410, PermanentDeliveryError)],
)
def test_errors_never_carry_secrets(
    server: HTTPServer, status: int, error: type[Exception]
) -> None:
    server.expect_request("/hook").respond_with_data("no", status=status)
    url = server.url_for("/hook?token=qs3cret").replace("http://", "http://user:pw5ecret@")
    with pytest.raises(error) as info:
        make_target(url, secret=SECRET).deliver(context())
    assert_hidden(info.value, SECRET, SECRET.removeprefix("whsec_"), "qs3cret", "pw5ecret")


def test_options_check_the_address_when_given_allow_private_as_context() -> None:
    """How the config loader can refuse private URLs at ``relay check`` time."""
    data = {"url": "http://169.254.169.254/latest", "secret": SECRET}
    with pytest.raises(ValidationError, match="link-local address"):
        WebhookTarget.Options.model_validate(data, context={"allow_private": False})
    WebhookTarget.Options.model_validate(data, context={"allow_private": True})
    WebhookTarget.Options.model_validate(data)
