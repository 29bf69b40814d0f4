"""The WeCom fetcher against a loopback ``gettoken`` and ``media/get`` with Range answers."""

from __future__ import annotations

from typing import Any

import redis
from pytest_httpserver import HTTPServer

from relay.config.models import SourceConfig
from relay.errors import PermanentDeliveryError, RetryableDeliveryError
from relay.events import FileRef
from relay.intake.sources.wecom import WecomOptions
from relay.state import keys
from tests.fetch.fakes import (
    FakeWecom,
    MiB,
    assert_hidden,
    fetch_bytes,
    payload,
    refusal,
    reply,
    sha256,
)
from workers.fetch.registry import fetcher_for

CORP_ID = "wwcorp0123456789ab"
SECRET = "wecom-app-secret-NDBjZmRiN2RhZDhmOTk0ZjQ"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
MEDIA_ID = "2-G6nrLmr5EC3MMb_-zK1dDdzmd0p7cNliYu9V5w7o8K0"
FETCHER = fetcher_for("wecom")
CHUNK = 256 * 1024


def source(base: str, **options: Any) -> SourceConfig:
    fields: dict[str, Any] = {
        "token": "callback-token",
        "encoding_aes_key": AES_KEY,
        "corp_id": CORP_ID,
        "corp_secret": SECRET,
        "api_base": base,
        "allow_private": True,
        "range_chunk": CHUNK,
        **options,
    }
    return SourceConfig(id="corp", kind="wecom", options=WecomOptions(**fields))


def media(ref: str = MEDIA_ID) -> FileRef:
    return FileRef(name="file-1234", ref=ref)


def test_a_large_file_is_read_in_range_parts_and_reassembled(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    fake = FakeWecom(httpserver, CORP_ID, SECRET, range_limit=MiB)
    data = payload(3 * MiB + 12345)
    served = fake.add(MEDIA_ID, data, mime="application/zip")
    download, got = fetch_bytes(FETCHER, media(), source(fake.base), state=redis_client)
    assert sha256(got) == sha256(data)
    assert (download.size, download.mime) == (len(data), "application/zip")
    starts = range(0, len(data), CHUNK)
    assert served.asked == [f"bytes={s}-{s + CHUNK - 1}" for s in starts]
    assert fake.token_calls == 1
    assert redis_client.exists(*redis_client.keys(f"{keys.PREFIX}wecom:token:*")) == 1


def test_parts_end_with_a_short_one_when_wecom_gives_no_size(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    fake = FakeWecom(httpserver, CORP_ID, SECRET, range_limit=MiB)
    fake.hide_total = True
    for size in (2 * CHUNK + 5, 2 * CHUNK):  # the second ends with an empty part: 416
        data = payload(size)
        served = fake.add(MEDIA_ID, data)
        download, got = fetch_bytes(FETCHER, media(), source(fake.base), state=redis_client)
        assert got == data and download.size is None
        assert len(served.asked) == 3


def test_the_fake_refuses_a_large_file_without_range_as_wecom_does(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    """830002 when WeCom is asked for more than 20 MB at once: here, a Range larger than
    the fake's limit. The fetcher says what to change."""
    fake = FakeWecom(httpserver, CORP_ID, SECRET, range_limit=CHUNK)
    fake.add(MEDIA_ID, payload(3 * CHUNK))
    too_big = source(fake.base, range_chunk=2 * CHUNK)
    error = refusal(FETCHER, media(), too_big, PermanentDeliveryError, "830002", state=redis_client)
    assert "range_chunk" in str(error)
    assert_hidden(error, SECRET, *fake.tokens)


def test_a_small_file_comes_in_one_part(httpserver: HTTPServer, redis_client: redis.Redis) -> None:
    fake = FakeWecom(httpserver, CORP_ID, SECRET)
    served = fake.add(MEDIA_ID, b"tiny", mime="image/jpeg")
    download, got = fetch_bytes(FETCHER, media(), source(fake.base), state=redis_client)
    assert (got, download.size, download.mime) == (b"tiny", 4, "image/jpeg")
    assert served.asked == [f"bytes=0-{CHUNK - 1}"]


def test_an_expired_media_id_is_permanent_with_the_3_day_rule(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    fake = FakeWecom(httpserver, CORP_ID, SECRET)
    error = refusal(
        FETCHER,
        media("gone"),
        source(fake.base),
        PermanentDeliveryError,
        "40007",
        state=redis_client,
    )
    assert "invalid media_id" in str(error) and "3 days" in str(error)
    assert_hidden(error, SECRET, *fake.tokens)


def test_an_expired_token_is_replaced_even_between_parts(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    fake = FakeWecom(httpserver, CORP_ID, SECRET, range_limit=MiB)
    data = payload(3 * CHUNK)
    fake.add(MEDIA_ID, data)
    with FETCHER.open(media(), source(fake.base), timeout=5, state=redis_client) as download:
        first = download.read(CHUNK)
        fake.expire_tokens()  # WeCom expires the token after the first part
        rest = b"".join(download.chunks(64 * 1024))
    assert first + rest == data
    assert fake.token_calls == 2


def test_a_wrong_secret_is_permanent_and_not_shown(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    fake = FakeWecom(httpserver, CORP_ID, "the-real-secret")
    error = refusal(
        FETCHER, media(), source(fake.base), PermanentDeliveryError, "40001", state=redis_client
    )
    assert "corp_secret" in str(error)
    assert_hidden(error, SECRET)


def test_smart_bot_media_is_decrypted_with_the_encoding_aes_key(httpserver: HTTPServer) -> None:
    fake = FakeWecom(httpserver, CORP_ID, SECRET)
    for size in (0, 31, 32, MiB + 7):
        data = payload(size)
        url = fake.add_bot_file(AES_KEY, data)
        bot = source(fake.base, corp_id="", corp_secret=None)
        _, got = fetch_bytes(FETCHER, FileRef(name="image-1", url=url), bot)
        assert sha256(got) == sha256(data), size


def test_smart_bot_media_under_a_wrong_key_is_refused(httpserver: HTTPServer) -> None:
    fake = FakeWecom(httpserver, CORP_ID, SECRET)
    url = fake.add_bot_file("a" * 43, payload(1000))
    bot = source(fake.base, corp_id="", corp_secret=None)
    refusal(FETCHER, FileRef(name="image-1", url=url), bot, PermanentDeliveryError, "padding")


def test_without_corp_secret_a_media_id_cannot_be_fetched() -> None:
    config = source("https://qyapi.weixin.qq.com", corp_secret=None)
    refusal(FETCHER, media(), config, PermanentDeliveryError, "corp_secret")


def test_a_busy_wecom_is_retryable(httpserver: HTTPServer, redis_client: redis.Redis) -> None:
    fake = FakeWecom(httpserver, CORP_ID, SECRET)
    fake.add(MEDIA_ID, b"x")
    fake.forced.append(reply({"errcode": -1, "errmsg": "system busy"}))
    refusal(FETCHER, media(), source(fake.base), RetryableDeliveryError, "busy", state=redis_client)
    fake.forced.append(reply({"errcode": 45009, "errmsg": "api freq out of limit"}))
    error = refusal(
        FETCHER, media(), source(fake.base), RetryableDeliveryError, "45009", state=redis_client
    )
    assert isinstance(error, RetryableDeliveryError) and error.retry_after == 60
