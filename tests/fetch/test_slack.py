"""The Slack fetcher against a loopback Web API and file host (``FakeSlack``)."""

from __future__ import annotations

from typing import Any

from pytest_httpserver import HTTPServer

from relay.config.models import SourceConfig
from relay.errors import PermanentDeliveryError, RetryableDeliveryError
from relay.events import FileRef
from relay.intake.sources.slack import SlackOptions
from tests.fetch.fakes import (
    FakeSlack,
    MiB,
    assert_hidden,
    fetch_bytes,
    payload,
    refusal,
    sha256,
)
from workers.fetch.registry import fetcher_for

TOKEN = "xoxb-1111111111-2222222222222-AbCdEfGhIjKlMnOpQrStUvWx"
FETCHER = fetcher_for("slack")


def source(api_base: str, **options: Any) -> SourceConfig:
    opts = SlackOptions(
        signing_secret="8f742231b10e8888abcd99yyyzzz85a5",
        bot_token=options.pop("bot_token", TOKEN),
        api_base=api_base,
        allow_private=True,
        **options,
    )
    return SourceConfig(id="team", kind="slack", options=opts)


def shared(ref: str = "F0RELAY001") -> FileRef:
    return FileRef(name="plan.pdf", ref=ref, url="https://files.slack.com/files-pri/x/plan.pdf")


def test_a_file_streams_through_files_info_with_the_bot_token(httpserver: HTTPServer) -> None:
    fake = FakeSlack(httpserver, TOKEN)
    data = payload(4 * MiB + 3)
    fake.add("F0RELAY001", "plan.pdf", data)
    download, got = fetch_bytes(FETCHER, shared(), source(fake.api_base))
    assert sha256(got) == sha256(data)
    assert (download.size, download.mime) == (len(data), "application/pdf")
    [info] = fake.info_calls
    assert info.args["file"] == "F0RELAY001"
    assert info.headers["Authorization"] == f"Bearer {TOKEN}"
    [fetched] = fake.download_calls
    assert fetched.path.endswith("/download/plan.pdf")  # url_private_download
    assert fetched.headers["Authorization"] == f"Bearer {TOKEN}"


def test_the_login_page_means_the_token_lacks_files_read(httpserver: HTTPServer) -> None:
    """Slack answers a download it does not authorise with its login page, a 200 with
    HTML, not with an error."""
    fake = FakeSlack(httpserver, TOKEN)
    fake.add("F0RELAY001", "plan.pdf", payload(1024))
    fake.download_scopes = ("channels:history",)
    error = refusal(FETCHER, shared(), source(fake.api_base), PermanentDeliveryError, "login page")
    assert "files:read" in str(error)
    assert_hidden(error, TOKEN)


def test_an_html_file_someone_shared_is_not_mistaken_for_the_login_page(
    httpserver: HTTPServer,
) -> None:
    fake = FakeSlack(httpserver, TOKEN)
    page = b"<html><body>minutes</body></html>"
    fake.add("F0RELAY001", "minutes.html", page, mimetype="text/html")
    _, got = fetch_bytes(FETCHER, shared(), source(fake.api_base))
    assert got == page


def test_ok_false_errors_are_permanent_with_slacks_error(httpserver: HTTPServer) -> None:
    fake = FakeSlack(httpserver, TOKEN, scopes=("chat:write",))
    fake.add("F0RELAY001", "plan.pdf", b"x")
    error = refusal(
        FETCHER, shared(), source(fake.api_base), PermanentDeliveryError, "missing_scope"
    )
    assert "files:read" in str(error)
    fake.scopes = ("files:read",)
    refusal(
        FETCHER, shared("F0GONE"), source(fake.api_base), PermanentDeliveryError, "file_not_found"
    )
    revoked = source(fake.api_base, bot_token="xoxb-0000-revoked-token-value")
    error = refusal(FETCHER, shared(), revoked, PermanentDeliveryError, "invalid_auth")
    assert_hidden(error, "xoxb-0000-revoked-token-value")


def test_a_rate_limit_is_retried_after_slacks_wait(httpserver: HTTPServer) -> None:
    fake = FakeSlack(httpserver, TOKEN)
    fake.mode = "ratelimited"
    error = refusal(FETCHER, shared(), source(fake.api_base), RetryableDeliveryError, "ratelimited")
    assert isinstance(error, RetryableDeliveryError) and error.retry_after == 7


def test_without_bot_token_the_scope_is_named() -> None:
    config = source("https://slack.com/api", bot_token=None)
    refusal(FETCHER, shared(), config, PermanentDeliveryError, "files:read")
