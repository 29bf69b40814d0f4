"""The Feishu fetcher against a loopback token endpoint and message-resource API."""

from __future__ import annotations

from typing import Any

import redis
from pytest_httpserver import HTTPServer
from werkzeug import Response

from relay.config.models import SourceConfig
from relay.errors import PermanentDeliveryError, RetryableDeliveryError
from relay.events import FileRef
from relay.intake.sources.feishu import FeishuOptions
from tests.fetch.fakes import (
    FakeFeishu,
    MiB,
    assert_hidden,
    fetch_bytes,
    payload,
    refusal,
    sha256,
)
from workers.fetch.registry import fetcher_for

APP_ID = "cli_a5f2b1c3d4e5f607"
APP_SECRET = "feishu-app-secret-Qm3X59gmyu58zvHICAFp8o"
MESSAGE = "om_dc13264520392913993dd051dba21dcf"
FETCHER = fetcher_for("feishu")


def source(base: str, **options: Any) -> SourceConfig:
    opts = FeishuOptions(
        verification_token="v-token",
        app_id=APP_ID,
        app_secret=options.pop("app_secret", APP_SECRET),
        api_base=base,
        allow_private=True,
        **options,
    )
    return SourceConfig(id="team", kind="feishu", options=opts)


def test_a_file_streams_with_the_tenant_token(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    fake = FakeFeishu(httpserver, APP_ID, APP_SECRET)
    data = payload(5 * MiB + 1)
    fake.add(MESSAGE, "file_v3_00a1_1f3e", data)
    file = FileRef(name="budget.xlsx", ref=f"{MESSAGE}/file_v3_00a1_1f3e")
    download, got = fetch_bytes(FETCHER, file, source(fake.base), state=redis_client)
    assert sha256(got) == sha256(data)
    assert (download.size, download.mime) == (len(data), "application/pdf")
    [request] = fake.requests
    assert request.args["type"] == "file"
    assert request.headers["Authorization"].startswith("Bearer t-")
    fetch_bytes(FETCHER, file, source(fake.base), state=redis_client)
    assert fake.token_calls == 1  # the token is shared through Redis


def test_an_image_key_is_fetched_as_an_image(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    fake = FakeFeishu(httpserver, APP_ID, APP_SECRET)
    fake.add(MESSAGE, "img_v3_02ab_9c8d", b"\x89PNG...", mime="image/png")
    fake.add(MESSAGE, "file_v3_0cd1", b"%PDF")
    image = FileRef(name="img_v3_02ab_9c8d", ref=f"{MESSAGE}/img_v3_02ab_9c8d")
    download, got = fetch_bytes(FETCHER, image, source(fake.base), state=redis_client)
    assert (got, download.mime) == (b"\x89PNG...", "image/png")
    typed = FileRef(name="doc.pdf", ref=f"{MESSAGE}/file_v3_0cd1/file")
    assert fetch_bytes(FETCHER, typed, source(fake.base), state=redis_client)[1] == b"%PDF"
    assert [r.args["type"] for r in fake.requests] == ["image", "file"]


def test_a_refused_token_is_fetched_anew_once(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    fake = FakeFeishu(httpserver, APP_ID, APP_SECRET)
    fake.add(MESSAGE, "file_v3_1", b"first")
    file = FileRef(name="a.txt", ref=f"{MESSAGE}/file_v3_1")
    fetch_bytes(FETCHER, file, source(fake.base), state=redis_client)
    fake.revoke()  # Feishu dropped the cached token early
    assert fetch_bytes(FETCHER, file, source(fake.base), state=redis_client)[1] == b"first"
    assert fake.token_calls == 2


def test_a_merge_forwarded_message_is_permanent_with_feishus_message(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    fake = FakeFeishu(httpserver, APP_ID, APP_SECRET)
    fake.merge_forwarded.add(MESSAGE)
    file = FileRef(name="a.txt", ref=f"{MESSAGE}/file_v3_1")
    error = refusal(
        FETCHER, file, source(fake.base), PermanentDeliveryError, "234043", state=redis_client
    )
    assert "Unsupported message type" in str(error) and "merge-forwarded" in str(error)
    assert_hidden(error, APP_SECRET, *fake.tokens)


def test_a_wrong_secret_is_permanent_and_not_shown(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    fake = FakeFeishu(httpserver, APP_ID, APP_SECRET)
    file = FileRef(name="a.txt", ref=f"{MESSAGE}/file_v3_1")
    wrong = source(fake.base, app_secret="not-the-secret-0123456789")
    error = refusal(FETCHER, file, wrong, PermanentDeliveryError, "app_secret", state=redis_client)
    assert_hidden(error, "not-the-secret-0123456789")


def test_a_server_error_without_feishus_json_is_retryable(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    fake = FakeFeishu(httpserver, APP_ID, APP_SECRET)
    fake.forced.append(Response("upstream down", 503, mimetype="text/plain"))
    file = FileRef(name="a.txt", ref=f"{MESSAGE}/file_v3_9")
    refusal(
        FETCHER, file, source(fake.base), RetryableDeliveryError, "HTTP 503", state=redis_client
    )


def test_a_ref_without_a_message_id_is_permanent() -> None:
    file = FileRef(name="a.txt", ref="file_v3_1")
    refusal(FETCHER, file, source("https://open.feishu.cn"), PermanentDeliveryError, "message_id")


def test_without_app_secret_the_options_are_named() -> None:
    opts = FeishuOptions(verification_token="v-token", app_id=APP_ID)
    config = SourceConfig(id="team", kind="feishu", options=opts)
    file = FileRef(name="a.txt", ref=f"{MESSAGE}/file_v3_1")
    refusal(FETCHER, file, config, PermanentDeliveryError, "app_id and app_secret on source team")


def test_a_json_file_is_the_file_not_a_refusal(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    fake = FakeFeishu(httpserver, APP_ID, APP_SECRET)
    document = b'{"rows": [1, 2, 3], "code": "A-7"}'
    fake.add(MESSAGE, "file_v3_json", document, mime="application/json")
    file = FileRef(name="export.json", ref=f"{MESSAGE}/file_v3_json")
    download, got = fetch_bytes(FETCHER, file, source(fake.base), state=redis_client)
    assert (got, download.mime, download.size) == (document, "application/json", len(document))
