"""The Telegram / SafeW fetcher against a loopback Bot API (``FakeTelegram``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Response

from relay.config.models import SourceConfig
from relay.errors import PermanentDeliveryError, RetryableDeliveryError
from relay.events import FileRef
from relay.intake.sources.telegram import TelegramOptions
from tests.fetch.fakes import (
    FakeTelegram,
    MiB,
    assert_hidden,
    fetch_bytes,
    payload,
    refusal,
    sha256,
)
from workers.fetch.registry import fetcher_for

TOKEN = "123456789:AAFD39kkdpWt3ywyRZergyOLMaJhac60qcX"
FILE_ID = "BQACAgIAAxkBAAIBZ2ZkYWJjZGVmZ2hpams"
FETCHER = fetcher_for("telegram")


def source(base: str, **options: Any) -> SourceConfig:
    opts = TelegramOptions(bot_token=TOKEN, api_base=base, allow_private=True, **options)
    return SourceConfig(id="tg", kind="telegram", options=opts)


def document(ref: str = FILE_ID) -> FileRef:
    return FileRef(name="report.pdf", ref=ref, mime="application/pdf")


def test_a_file_streams_through_getfile_and_the_file_link(httpserver: HTTPServer) -> None:
    fake = FakeTelegram(httpserver, TOKEN)
    data = payload(3 * MiB + 17)
    fake.add(FILE_ID, data)
    download, got = fetch_bytes(FETCHER, document(), source(fake.base))
    assert sha256(got) == sha256(data)
    assert download.size == len(data)
    assert download.mime == "application/pdf"
    assert fake.get_file_calls == [FILE_ID]
    assert fake.downloads == [f"/file/bot{TOKEN}/documents/file_0.pdf"]
    assert TOKEN not in repr(download)  # the reader shows no token-bearing URL


def test_safew_links_take_the_shape_the_source_gives(httpserver: HTTPServer) -> None:
    fake = FakeTelegram(httpserver, TOKEN, safew=True)
    data = payload(MiB)
    fake.add(FILE_ID, data, path="photos/file_7.jpg")
    safew = source(fake.base, file_url="{api_base}/file/{token}/{file_path}")
    _, got = fetch_bytes(FETCHER, document(), safew)
    assert got == data
    assert fake.downloads == [f"/file/{TOKEN}/photos/file_7.jpg"]


def test_a_file_over_20_mb_is_permanent_with_telegrams_words_and_a_way_out(
    httpserver: HTTPServer,
) -> None:
    fake = FakeTelegram(httpserver, TOKEN)
    fake.add_too_big(FILE_ID)
    error = refusal(FETCHER, document(), source(fake.base), PermanentDeliveryError, "too big")
    assert "Bad Request: file is too big" in str(error)
    assert "local_api" in str(error)
    assert fake.downloads == []
    assert_hidden(error, TOKEN)


def test_a_revoked_token_is_permanent_and_never_shown(httpserver: HTTPServer) -> None:
    fake = FakeTelegram(httpserver, "987654321:AAnotTheSameBotTokenAtAll00000000")
    fake.add(FILE_ID, b"x")
    error = refusal(FETCHER, document(), source(fake.base), PermanentDeliveryError, "Unauthorized")
    assert "bot_token" in str(error)
    assert_hidden(error, TOKEN)


def test_flood_control_is_retried_after_telegrams_wait(httpserver: HTTPServer) -> None:
    fake = FakeTelegram(httpserver, TOKEN)
    fake.add(FILE_ID, b"x")
    body = {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 12",
        "parameters": {"retry_after": 12},
    }
    fake.forced.append(Response(json.dumps(body), 429, mimetype="application/json"))
    error = refusal(FETCHER, document(), source(fake.base), RetryableDeliveryError, "retry after")
    assert isinstance(error, RetryableDeliveryError) and error.retry_after == 12
    fake.forced.append(Response("Bad Gateway", 502, mimetype="text/plain"))
    refusal(FETCHER, document(), source(fake.base), RetryableDeliveryError, "HTTP 502")


def test_a_missing_file_link_is_permanent_and_hides_the_token(httpserver: HTTPServer) -> None:
    fake = FakeTelegram(httpserver, TOKEN)
    fake.add(FILE_ID, b"x")
    wrong = source(fake.base, file_url="{api_base}/file/bot{token}/gone/{file_path}")
    error = refusal(FETCHER, document(), wrong, PermanentDeliveryError, "HTTP 404")
    assert "Telegram file download" in str(error)
    assert_hidden(error, TOKEN)


def test_an_unknown_file_id_is_permanent(httpserver: HTTPServer) -> None:
    fake = FakeTelegram(httpserver, TOKEN)
    refusal(FETCHER, document("nope"), source(fake.base), PermanentDeliveryError, "invalid file_id")


def test_without_bot_token_the_source_is_named() -> None:
    opts = TelegramOptions(secret_token="s3cret")
    config = SourceConfig(id="tg", kind="telegram", options=opts)
    refusal(FETCHER, document(), config, PermanentDeliveryError, "bot_token on source tg")


def test_a_local_bot_api_server_file_is_read_from_disk(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    root = tmp_path / "bot-api"
    (root / "documents").mkdir(parents=True)
    data = payload(2 * MiB)
    on_disk = root / "documents" / "file_3.pdf"
    on_disk.write_bytes(data)
    fake = FakeTelegram(httpserver, TOKEN)
    fake.add(FILE_ID, b"", path=str(on_disk))  # --local answers with an absolute path
    local = source(fake.base, local_api=True, local_root=str(root))
    download, got = fetch_bytes(FETCHER, document(), local)
    assert got == data and download.size == len(data)
    assert fake.downloads == []


def test_a_local_path_outside_local_root_is_refused(httpserver: HTTPServer, tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "bot-api", tmp_path / "secrets"
    root.mkdir()
    elsewhere.mkdir()
    (elsewhere / "key.pem").write_bytes(b"private")
    (root / "link.pem").symlink_to(elsewhere / "key.pem")
    fake = FakeTelegram(httpserver, TOKEN)
    local = source(fake.base, local_api=True, local_root=str(root))
    for path in (elsewhere / "key.pem", root / "link.pem", root / ".." / "secrets" / "key.pem"):
        fake.add(FILE_ID, b"", path=str(path))
        refusal(FETCHER, document(), local, PermanentDeliveryError, "outside local_root")
    fake.add(FILE_ID, b"", path=str(root / "absent.pdf"))
    refusal(FETCHER, document(), local, PermanentDeliveryError, "not under local_root")
    no_root = source(fake.base, local_api=True)
    refusal(FETCHER, document(), no_root, PermanentDeliveryError, "set local_root")
