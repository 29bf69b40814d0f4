"""The URL fetcher (``hmac``, ``standard_webhooks``, kinds without a fetcher) and the
registry, against a loopback file server."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.config.models import SourceConfig
from relay.errors import PermanentDeliveryError, RetryableDeliveryError
from relay.events import FileRef
from relay.intake.sources.hmac import HmacOptions
from relay.intake.sources.standard_webhooks import StandardWebhooksOptions
from relay.intake.sources.telegram import TelegramOptions
from tests.conftest import TEST_SECRET
from tests.fetch import test_dingtalk, test_feishu, test_slack, test_telegram
from tests.fetch.fakes import MiB, assert_hidden, fetch_bytes, payload, refusal, sha256
from workers.fetch.dingtalk import DingTalkFetcher
from workers.fetch.feishu import FeishuFetcher
from workers.fetch.registry import fetcher_for
from workers.fetch.slack import SlackFetcher
from workers.fetch.telegram import TelegramFetcher
from workers.fetch.url import UrlFetcher
from workers.fetch.wecom import WecomFetcher

AUTH = "Bearer files-api-token-7Hc1Jd5Fg0Vx9q2LmT"


def webhooks(**options: Any) -> SourceConfig:
    opts = StandardWebhooksOptions(secrets=[TEST_SECRET], **options)
    return SourceConfig(id="ops", kind="standard_webhooks", options=opts)


def hmac_source(**options: Any) -> SourceConfig:
    opts = HmacOptions(secrets=["s3cret"], header="X-Signature", **options)
    return SourceConfig(id="gh", kind="hmac", options=opts)


def test_a_url_file_streams_with_the_sources_headers(httpserver: HTTPServer) -> None:
    data = payload(3 * MiB)
    seen: list[Request] = []

    def serve(request: Request) -> Response:
        seen.append(request)
        return Response(data, 200, mimetype="image/png")

    httpserver.expect_request("/files/shot.png").respond_with_handler(serve)
    file = FileRef(name="shot.png", url=httpserver.url_for("/files/shot.png"))
    for config in (
        webhooks(allow_private=True, file_headers={"Authorization": AUTH}),
        hmac_source(allow_private=True, file_headers={"Authorization": AUTH}),
    ):
        download, got = fetch_bytes(fetcher_for(config.kind), file, config)
        assert sha256(got) == sha256(data)
        assert (download.size, download.mime) == (len(data), "image/png")
    assert [r.headers.get("Authorization") for r in seen] == [AUTH, AUTH]


def test_redirects_are_followed_and_headers_stay_with_the_first_host(
    httpserver: HTTPServer,
) -> None:
    seen: list[tuple[str, str | None]] = []

    def record(request: Request, answer: Response) -> Response:
        seen.append((request.host.split(":")[0], request.headers.get("Authorization")))
        return answer

    other = httpserver.url_for("/cdn/blob").replace("localhost", "127.0.0.1")
    httpserver.expect_request("/a").respond_with_handler(
        lambda r: record(r, Response("", 302, headers={"Location": "/b"}))
    )
    httpserver.expect_request("/b").respond_with_handler(
        lambda r: record(r, Response("", 307, headers={"Location": other}))
    )
    httpserver.expect_request("/cdn/blob").respond_with_handler(
        lambda r: record(r, Response(b"blob", 200, mimetype="text/plain"))
    )
    file = FileRef(name="blob.txt", url=httpserver.url_for("/a"))
    config = webhooks(allow_private=True, file_headers={"Authorization": AUTH})
    assert fetch_bytes(fetcher_for("standard_webhooks"), file, config)[1] == b"blob"
    assert seen == [("localhost", AUTH), ("localhost", AUTH), ("127.0.0.1", None)]
    only_localhost = webhooks(allow_private=True, file_hosts=["localhost"])
    error = refusal(
        fetcher_for("standard_webhooks"), file, only_localhost, PermanentDeliveryError, "file_hosts"
    )
    assert "127.0.0.1" in str(error)


@pytest.mark.parametrize(
    ("status", "error", "retry_after"),
    [
        (404, PermanentDeliveryError, None),
        (403, PermanentDeliveryError, None),
        (408, RetryableDeliveryError, None),
        (429, RetryableDeliveryError, 9.0),
        (503, RetryableDeliveryError, 9.0),
    ],
)
def test_statuses_are_classified(
    httpserver: HTTPServer, status: int, error: type[Exception], retry_after: float | None
) -> None:
    echo = f"denied for {AUTH}"  # a server that echoes the header back must not leak it
    headers = {"Retry-After": "9"} if retry_after else {}
    httpserver.expect_request("/f").respond_with_response(Response(echo, status, headers=headers))
    file = FileRef(name="f.bin", url=httpserver.url_for("/f") + "?sig=presigned-secret-value")
    config = hmac_source(allow_private=True, file_headers={"Authorization": AUTH})
    found = refusal(fetcher_for("hmac"), file, config, error, f"HTTP {status}")  # type: ignore[arg-type]
    assert getattr(found, "retry_after", None) == retry_after
    assert_hidden(found, AUTH, "presigned-secret-value")


def test_a_private_address_is_refused_unless_allowed(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/f").respond_with_data("x")
    file = FileRef(name="f.bin", url=httpserver.url_for("/f") + "?token=secret-in-query")
    error = refusal(fetcher_for("hmac"), file, hmac_source(), PermanentDeliveryError, "refused")
    assert_hidden(error, "secret-in-query")


def test_a_reference_without_url_is_refused_naming_the_kind() -> None:
    file = FileRef(name="x.bin", ref="opaque-123")
    refusal(fetcher_for("hmac"), file, hmac_source(), PermanentDeliveryError, "hmac source")
    odd = SourceConfig(id="odd", kind="carrier_pigeon", options=None)
    refusal(fetcher_for("carrier_pigeon"), file, odd, PermanentDeliveryError, "carrier_pigeon")


def test_each_kind_has_its_fetcher() -> None:
    expected: dict[str, type] = {
        "telegram": TelegramFetcher,
        "slack": SlackFetcher,
        "feishu": FeishuFetcher,
        "dingtalk_robot": DingTalkFetcher,
        "wecom": WecomFetcher,
        "standard_webhooks": UrlFetcher,
        "hmac": UrlFetcher,
        "dingtalk_events": UrlFetcher,
    }
    for kind, cls in expected.items():
        assert type(fetcher_for(kind)) is cls, kind
    assert fetcher_for("telegram") is fetcher_for("telegram")  # token caches live on


def test_file_header_values_stay_out_of_the_options_repr() -> None:
    assert AUTH not in repr(webhooks(file_headers={"Authorization": AUTH}).options)


def test_a_platform_sources_url_file_goes_without_its_credentials(httpserver: HTTPServer) -> None:
    """A file of a Telegram, Slack, Feishu or DingTalk source that carries a URL and no
    platform reference is fetched from that URL as it is: the platform's token never goes
    to a host it did not name."""
    data = payload(MiB)
    seen: list[Request] = []

    def serve(request: Request) -> Response:
        seen.append(request)
        return Response(data, 200, mimetype="application/pdf")

    httpserver.expect_request("/shared/plan.pdf").respond_with_handler(serve)
    file = FileRef(name="plan.pdf", url=httpserver.url_for("/shared/plan.pdf"))
    base = "http://127.0.0.1:9"  # the platform's API: never asked
    sources = [
        test_telegram.source(base),
        test_slack.source(base),
        test_feishu.source(base),
        test_dingtalk.source(base),
    ]
    for config in sources:
        download, got = fetch_bytes(fetcher_for(config.kind), file, config)
        assert sha256(got) == sha256(data) and download.mime == "application/pdf"
    assert len(seen) == len(sources)
    assert not [r for r in seen if "Authorization" in r.headers or "token" in r.url.lower()]
    private = SourceConfig(id="tg", kind="telegram", options=TelegramOptions(bot_token="1:x"))
    refusal(fetcher_for("telegram"), file, private, PermanentDeliveryError, "loopback")
