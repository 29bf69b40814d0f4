"""The DingTalk robot fetcher against a loopback v1.0 API whose download URLs serve once."""

from __future__ import annotations

import redis
from pytest_httpserver import HTTPServer

from relay.config.models import SourceConfig
from relay.errors import PermanentDeliveryError, RetryableDeliveryError
from relay.events import FileRef
from relay.intake.sources.dingtalk_robot import DingTalkRobotOptions
from tests.fetch.fakes import (
    FakeDingTalk,
    MiB,
    assert_hidden,
    fetch_bytes,
    payload,
    refusal,
    sha256,
)
from workers.fetch.registry import fetcher_for
from workers.net.http import guarded_pool, send

APP_KEY = "dingappkey0001"
APP_SECRET = "app-secret-Vx9q2LmT7pZr4Ks8Nw3Yb6Hc1Jd5Fg0"
CODE = "mIofN681YE3f/+m+NntqpT2bXYZ="
FETCHER = fetcher_for("dingtalk_robot")


def source(base: str, *, robot_code: str | None = None) -> SourceConfig:
    opts = DingTalkRobotOptions(
        app_secret=APP_SECRET,
        app_key=APP_KEY,
        robot_code=robot_code,
        api_base=base,
        allow_private=True,
    )
    return SourceConfig(id="ding", kind="dingtalk_robot", options=opts)


def shared() -> FileRef:
    return FileRef(name="contract.pdf", ref=CODE)


def test_a_file_streams_through_a_temporary_url(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    fake = FakeDingTalk(httpserver, APP_KEY, APP_SECRET, robot_code=APP_KEY)
    data = payload(3 * MiB)
    fake.add(CODE, data)
    download, got = fetch_bytes(FETCHER, shared(), source(fake.base), state=redis_client)
    assert sha256(got) == sha256(data) and download.size == len(data)
    assert fake.download_calls == [{"downloadCode": CODE, "robotCode": APP_KEY}]


def test_every_attempt_derives_a_new_url(httpserver: HTTPServer, redis_client: redis.Redis) -> None:
    """The fake's URLs work once: a second attempt only succeeds with a new one."""
    fake = FakeDingTalk(httpserver, APP_KEY, APP_SECRET, robot_code="dingrobot01")
    fake.add(CODE, b"contract bytes")
    config = source(fake.base, robot_code="dingrobot01")
    assert fetch_bytes(FETCHER, shared(), config, state=redis_client)[1] == b"contract bytes"
    [used] = list(fake.urls)
    again = send(guarded_pool(True), "GET", f"{fake.base}/dl/{used}", timeout=5)
    assert again.status == 404  # the first URL is spent
    assert fetch_bytes(FETCHER, shared(), config, state=redis_client)[1] == b"contract bytes"
    assert len(fake.download_calls) == 2 and len(fake.urls) == 2
    assert fake.token_calls == 1


def test_an_expired_url_is_retryable(httpserver: HTTPServer, redis_client: redis.Redis) -> None:
    fake = FakeDingTalk(httpserver, APP_KEY, APP_SECRET, robot_code=APP_KEY)
    fake.add(CODE, b"x")
    fake.expire_at_once = True
    error = refusal(
        FETCHER, shared(), source(fake.base), RetryableDeliveryError, "HTTP 404", state=redis_client
    )
    assert "derives a new one" in str(error)


def test_a_revoked_token_is_replaced_once(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    fake = FakeDingTalk(httpserver, APP_KEY, APP_SECRET, robot_code=APP_KEY)
    fake.add(CODE, b"x")
    fetch_bytes(FETCHER, shared(), source(fake.base), state=redis_client)
    fake.revoke()
    assert fetch_bytes(FETCHER, shared(), source(fake.base), state=redis_client)[1] == b"x"
    assert fake.token_calls == 2


def test_a_wrong_robot_code_is_permanent_with_dingtalks_message(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    fake = FakeDingTalk(httpserver, APP_KEY, APP_SECRET, robot_code="dingrobot01")
    fake.add(CODE, b"x")
    error = refusal(
        FETCHER,
        shared(),
        source(fake.base),
        PermanentDeliveryError,
        "robotCode",
        state=redis_client,
    )
    assert "messageFiles/download" in str(error)
    assert_hidden(error, APP_SECRET, *fake.tokens)


def test_without_app_key_the_option_is_named() -> None:
    opts = DingTalkRobotOptions(app_secret=APP_SECRET)
    config = SourceConfig(id="ding", kind="dingtalk_robot", options=opts)
    refusal(FETCHER, shared(), config, PermanentDeliveryError, "app_key on source ding")
