"""Loopback fakes of each platform's file download API, faithful to its documentation.

Each fake registers werkzeug handlers on a pytest-httpserver and keeps what it was
asked, so tests can check the requests as well as the bytes:

- ``FakeTelegram``: ``getFile`` and the file link (Telegram's ``/file/bot<token>/``, or
  SafeW's ``/file/<token>/``), the 20 MB "file is too big" refusal, 401 for a wrong token.
- ``FakeSlack``: ``files.info`` (bearer token, ``ok: false`` errors, 429 with
  Retry-After) and ``url_private_download``, which answers the HTML login page to a
  token without ``files:read``.
- ``FakeFeishu``: the tenant token endpoint and the message-resource API (234043 for a
  merge-forwarded message, 99991663 for a refused token).
- ``FakeDingTalk``: the access token endpoint and ``messageFiles/download``, whose
  ``downloadUrl`` works exactly once (404 the second time).
- ``FakeWecom``: ``gettoken`` and ``media/get`` with 206 Range answers, 830002 for a
  large file asked without a Range, errcode JSON with HTTP 200; and smart-bot media,
  encrypted with the EncodingAESKey.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.config.models import SourceConfig
from relay.errors import DeliveryError
from relay.events import FileRef
from workers.fetch.base import Download, Fetcher

MiB = 1024 * 1024


def payload(size: int) -> bytes:
    """``size`` random bytes: what a fake serves as a file."""
    return os.urandom(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def reply(body: Any, status: int = 200, **headers: str) -> Response:
    return Response(json.dumps(body), status, headers=headers, mimetype="application/json")


def bearer(request: Request) -> str | None:
    value = request.headers.get("Authorization") or ""
    return value[len("Bearer ") :] if value.startswith("Bearer ") else None


def binary(data: bytes, mime: str = "application/octet-stream", **headers: str) -> Response:
    return Response(data, 200, headers=headers, mimetype=mime)


# -- Telegram / SafeW -----------------------------------------------------------------------


@dataclass
class TelegramFile:
    path: str
    data: bytes
    too_big: bool = False


class FakeTelegram:
    """A Bot API server of one bot: ``getFile`` and file links. ``safew`` serves the links
    at ``/file/<token>/<path>`` as docs.safew.org documents, else Telegram's
    ``/file/bot<token>/<path>``."""

    def __init__(self, server: HTTPServer, token: str, *, safew: bool = False) -> None:
        self.token, self.safew = token, safew
        self.files: dict[str, TelegramFile] = {}
        self.forced: list[Response] = []  # answers getFile gives first, in order
        self.get_file_calls: list[str] = []
        self.downloads: list[str] = []
        self.base = server.url_for("").rstrip("/")
        server.expect_request(re.compile(r"^/bot[^/]+/getFile$")).respond_with_handler(
            self.get_file
        )
        server.expect_request(re.compile(r"^/file/.+$")).respond_with_handler(self.download)

    def add(self, file_id: str, data: bytes, path: str = "documents/file_0.pdf") -> None:
        self.files[file_id] = TelegramFile(path, data)

    def add_too_big(self, file_id: str) -> None:
        self.files[file_id] = TelegramFile("", b"", too_big=True)

    def get_file(self, request: Request) -> Response:
        file_id = request.args.get("file_id", "")
        self.get_file_calls.append(file_id)
        if self.forced:
            return self.forced.pop(0)
        if request.path != f"/bot{self.token}/getFile":
            return reply({"ok": False, "error_code": 401, "description": "Unauthorized"}, 401)
        found = self.files.get(file_id)
        if found is None:
            return reply(
                {"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"},
                400,
            )
        if found.too_big:
            return reply(
                {"ok": False, "error_code": 400, "description": "Bad Request: file is too big"},
                400,
            )
        result = {
            "file_id": file_id,
            "file_unique_id": "AgAD" + file_id[-6:],
            "file_size": len(found.data),
            "file_path": found.path,
        }
        return reply({"ok": True, "result": result})

    def download(self, request: Request) -> Response:
        prefix = f"/file/{self.token}/" if self.safew else f"/file/bot{self.token}/"
        self.downloads.append(request.path)
        if not request.path.startswith(prefix):
            return Response("Not Found", 404, mimetype="text/plain")
        path = request.path[len(prefix) :]
        for found in self.files.values():
            if found.path == path and not found.too_big:
                return binary(found.data, "application/pdf")
        return Response("Not Found", 404, mimetype="text/plain")


# -- Slack ------------------------------------------------------------------------------------

LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in</body></html>"


class FakeSlack:
    """``files.info`` and file downloads of one workspace. ``scopes`` are the bot token's
    as files.info sees them, ``download_scopes`` as the file host does (the same unless
    a test makes them differ); ``mode = "ratelimited"`` makes files.info answer 429."""

    def __init__(
        self, server: HTTPServer, token: str, *, scopes: tuple[str, ...] = ("files:read",)
    ):
        self.token, self.scopes, self.download_scopes = token, scopes, scopes
        self.mode: str | None = None
        self.files: dict[str, tuple[str, str, bytes]] = {}  # id -> name, mimetype, bytes
        self.info_calls: list[Request] = []
        self.download_calls: list[Request] = []
        self.base = server.url_for("").rstrip("/")
        server.expect_request("/api/files.info").respond_with_handler(self.info)
        server.expect_request(re.compile(r"^/files-pri/.+$")).respond_with_handler(self.download)

    @property
    def api_base(self) -> str:
        return f"{self.base}/api"

    def add(self, file_id: str, name: str, data: bytes, mimetype: str = "application/pdf") -> None:
        self.files[file_id] = (name, mimetype, data)

    def info(self, request: Request) -> Response:
        self.info_calls.append(request)
        if self.mode == "ratelimited":
            return reply({"ok": False, "error": "ratelimited"}, 429, **{"Retry-After": "7"})
        if bearer(request) != self.token:
            return reply({"ok": False, "error": "invalid_auth"})
        if "files:read" not in self.scopes:
            return reply(
                {
                    "ok": False,
                    "error": "missing_scope",
                    "needed": "files:read",
                    "provided": ",".join(self.scopes),
                }
            )
        file_id = request.args.get("file", "")
        found = self.files.get(file_id)
        if found is None:
            return reply({"ok": False, "error": "file_not_found"})
        name, mimetype, data = found
        url = f"{self.base}/files-pri/T0RELAY01-{file_id}/download/{name}"
        return reply(
            {
                "ok": True,
                "file": {
                    "id": file_id,
                    "name": name,
                    "mimetype": mimetype,
                    "size": len(data),
                    "url_private": f"{self.base}/files-pri/T0RELAY01-{file_id}/{name}",
                    "url_private_download": url,
                },
            }
        )

    def download(self, request: Request) -> Response:
        """Slack's answer to a request it does not authorise is its login page, a 200."""
        self.download_calls.append(request)
        if bearer(request) != self.token or "files:read" not in self.download_scopes:
            return Response(LOGIN_PAGE, 200, mimetype="text/html")
        file_id = request.path.split("/")[2].split("-", 1)[1]
        name, mimetype, data = self.files[file_id]
        return binary(data, mimetype)


# -- Feishu -------------------------------------------------------------------------------------


class FakeFeishu:
    """Tenant tokens of one app and the message-resource API."""

    def __init__(self, server: HTTPServer, app_id: str, app_secret: str) -> None:
        self.app_id, self.app_secret = app_id, app_secret
        self.tokens: set[str] = set()
        self.token_calls = 0
        self.resources: dict[tuple[str, str], tuple[str, bytes]] = {}  # (mid, key) -> mime, data
        self.merge_forwarded: set[str] = set()
        self.forced: list[Response] = []  # answers the resource API gives first, in order
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.base = server.url_for("").rstrip("/")
        server.expect_request(
            "/open-apis/auth/v3/tenant_access_token/internal", method="POST"
        ).respond_with_handler(self.token)
        server.expect_request(
            re.compile(r"^/open-apis/im/v1/messages/[^/]+/resources/[^/]+$"), method="GET"
        ).respond_with_handler(self.resource)

    def add(self, message_id: str, key: str, data: bytes, mime: str = "application/pdf") -> None:
        self.resources[(message_id, key)] = (mime, data)

    def revoke(self) -> None:
        self.tokens.clear()

    def token(self, request: Request) -> Response:
        body = json.loads(request.get_data() or b"{}")
        if body.get("app_id") != self.app_id or body.get("app_secret") != self.app_secret:
            return reply({"code": 10014, "msg": "app secret invalid"}, 400)
        with self.lock:
            self.token_calls += 1
            token = "t-" + secrets.token_hex(12)
            self.tokens.add(token)
        return reply({"code": 0, "msg": "ok", "tenant_access_token": token, "expire": 7200})

    def resource(self, request: Request) -> Response:
        self.requests.append(request)
        if self.forced:
            return self.forced.pop(0)
        if bearer(request) not in self.tokens:
            return reply(
                {
                    "code": 99991663,
                    "msg": "Invalid access token for authorization. Please make a request "
                    "with token attached.",
                },
                400,
            )
        parts = request.path.split("/")
        message_id, key = parts[5], parts[7]
        if message_id in self.merge_forwarded:
            return reply({"code": 234043, "msg": "Unsupported message type."}, 400)
        kind = request.args.get("type")
        if kind not in ("file", "image"):
            return reply({"code": 234001, "msg": "Invalid request param."}, 400)
        found = self.resources.get((message_id, key))
        if found is None or (kind == "image") != key.startswith("img_"):
            return reply({"code": 234003, "msg": "File not in msg."}, 400)
        mime, data = found
        return binary(data, mime, **{"Content-Disposition": f'attachment; filename="{key}"'})


# -- DingTalk -----------------------------------------------------------------------------------


class FakeDingTalk:
    """Access tokens of one app and robot message files; each ``downloadUrl`` serves once."""

    def __init__(self, server: HTTPServer, app_key: str, app_secret: str, robot_code: str):
        self.app_key, self.app_secret, self.robot_code = app_key, app_secret, robot_code
        self.tokens: set[str] = set()
        self.token_calls = 0
        self.files: dict[str, bytes] = {}  # downloadCode -> bytes
        self.urls: dict[str, str | None] = {}  # url id -> downloadCode, None once used
        self.download_calls: list[dict[str, Any]] = []
        self.expire_at_once = False  # URLs that no longer work when fetched
        self.base = server.url_for("").rstrip("/")
        expect = server.expect_request
        expect("/v1.0/oauth2/accessToken", method="POST").respond_with_handler(self.token)
        expect("/v1.0/robot/messageFiles/download", method="POST").respond_with_handler(
            self.message_file
        )
        expect(re.compile(r"^/dl/[0-9a-f]+$"), method="GET").respond_with_handler(self.serve)

    def add(self, code: str, data: bytes) -> None:
        self.files[code] = data

    def revoke(self) -> None:
        self.tokens.clear()

    def token(self, request: Request) -> Response:
        body = json.loads(request.get_data() or b"{}")
        if body.get("appKey") != self.app_key or body.get("appSecret") != self.app_secret:
            return reply(
                {"code": "invalidClientIdOrSecret", "message": "无效的clientId或者clientSecret"},
                400,
            )
        self.token_calls += 1
        token = secrets.token_hex(16)
        self.tokens.add(token)
        return reply({"accessToken": token, "expireIn": 7200})

    def message_file(self, request: Request) -> Response:
        body = json.loads(request.get_data() or b"{}")
        self.download_calls.append(body)
        if request.headers.get("x-acs-dingtalk-access-token") not in self.tokens:
            return reply({"code": "InvalidAuthentication", "message": "不合法的access_token"}, 401)
        if body.get("robotCode") != self.robot_code:
            return reply({"code": "invalidParameter.robotCode", "message": "robotCode无效"}, 400)
        code = body.get("downloadCode")
        if code not in self.files:
            return reply(
                {"code": "invalidParameter.downloadCode", "message": "downloadCode无效"}, 400
            )
        url_id = secrets.token_hex(8)
        self.urls[url_id] = None if self.expire_at_once else code
        return reply({"downloadUrl": f"{self.base}/dl/{url_id}"})

    def serve(self, request: Request) -> Response:
        url_id = request.path.rsplit("/", 1)[1]
        code = self.urls.get(url_id)
        if code is None:
            return Response(
                "<Error><Code>NoSuchKey</Code></Error>", 404, mimetype="application/xml"
            )
        self.urls[url_id] = None  # a temporary URL serves once
        return binary(self.files[code], "application/octet-stream")


# -- WeCom --------------------------------------------------------------------------------------

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def wecom_encrypt(encoding_aes_key: str, data: bytes) -> bytes:
    """How WeCom seals smart-bot media: AES-256-CBC, IV = key[:16], PKCS#7 to 32 bytes."""
    key = base64.b64decode(encoding_aes_key + "=")
    pad = 32 - len(data) % 32
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return encryptor.update(data + bytes([pad]) * pad) + encryptor.finalize()


@dataclass
class WecomMedia:
    data: bytes
    mime: str = "application/octet-stream"
    asked: list[str | None] = field(default_factory=list)  # Range headers, None for none


class FakeWecom:
    """``gettoken`` and ``media/get`` of one corp app. Media over ``range_limit`` bytes
    (20 MB on WeCom) are refused with 830002 unless asked for in Range parts no larger
    than that; Range answers are 206 with ``Content-Range``."""

    def __init__(
        self, server: HTTPServer, corp_id: str, corp_secret: str, *, range_limit: int = 20 * MiB
    ) -> None:
        self.corp_id, self.corp_secret, self.range_limit = corp_id, corp_secret, range_limit
        self.tokens: set[str] = set()
        self.token_calls = 0
        self.media: dict[str, WecomMedia] = {}
        self.bot_media: dict[str, bytes] = {}
        self.forced: list[Response] = []  # answers media/get gives first, in order
        self.hide_total = False  # Content-Range "bytes a-b/*": the size left unsaid
        self.base = server.url_for("").rstrip("/")
        expect = server.expect_request
        expect("/cgi-bin/gettoken", method="GET").respond_with_handler(self.gettoken)
        expect("/cgi-bin/media/get", method="GET").respond_with_handler(self.media_get)
        expect(re.compile(r"^/bot-media/[0-9a-f]+$"), method="GET").respond_with_handler(
            self.bot_file
        )

    def add(self, media_id: str, data: bytes, mime: str = "application/octet-stream") -> WecomMedia:
        self.media[media_id] = WecomMedia(data, mime)
        return self.media[media_id]

    def add_bot_file(self, encoding_aes_key: str, data: bytes) -> str:
        """The URL a smart-bot callback would carry for ``data``."""
        file_id = secrets.token_hex(8)
        self.bot_media[file_id] = wecom_encrypt(encoding_aes_key, data)
        return f"{self.base}/bot-media/{file_id}"

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def gettoken(self, request: Request) -> Response:
        if request.args.get("corpid") != self.corp_id:
            return reply({"errcode": 40013, "errmsg": "invalid corpid"})
        if request.args.get("corpsecret") != self.corp_secret:
            return reply({"errcode": 40001, "errmsg": "invalid credential"})
        self.token_calls += 1
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return reply({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200})

    def media_get(self, request: Request) -> Response:
        """Errors are JSON with HTTP 200, as WeCom answers them."""
        if self.forced:
            return self.forced.pop(0)
        if request.args.get("access_token") not in self.tokens:
            return reply({"errcode": 42001, "errmsg": "access_token expired"})
        found = self.media.get(request.args.get("media_id", ""))
        if found is None:
            return reply({"errcode": 40007, "errmsg": "invalid media_id"})
        asked = request.headers.get("Range")
        found.asked.append(asked)
        data = found.data
        disposition = {"Content-disposition": 'attachment; filename="media.bin"'}
        if asked is None:
            if len(data) > self.range_limit:
                return reply(
                    {"errcode": 830002, "errmsg": "invalid media size, please use range download"}
                )
            return binary(data, found.mime, **disposition)
        match = _RANGE.fullmatch(asked.strip())
        if match is None:
            return Response("", 416)
        start = int(match.group(1))
        end = min(int(match.group(2)) if match.group(2) else len(data) - 1, len(data) - 1)
        if start >= len(data) or end < start:
            return Response("", 416, headers={"Content-Range": f"bytes */{len(data)}"})
        total = "*" if self.hide_total else str(len(data))
        if end - start + 1 > self.range_limit:
            return reply(
                {"errcode": 830002, "errmsg": "invalid media size, please use range download"}
            )
        return Response(
            data[start : end + 1],
            206,
            mimetype=found.mime,
            headers={"Content-Range": f"bytes {start}-{end}/{total}", **disposition},
        )

    def bot_file(self, request: Request) -> Response:
        file_id = request.path.rsplit("/", 1)[1]
        if file_id not in self.bot_media:
            return Response("", 404)
        return binary(self.bot_media[file_id], "application/octet-stream")


# -- what the tests share ---------------------------------------------------------------------


def fetch_bytes(
    fetcher: Fetcher, file: FileRef, source: SourceConfig, *, state: Any = None
) -> tuple[Download, bytes]:
    """Open ``file`` and read it to the end in 64 KiB reads, as the storage flow does."""
    with fetcher.open(file, source, timeout=5.0, state=state) as download:
        data = b"".join(download.chunks(64 * 1024))
    return download, data


def refusal(
    fetcher: Fetcher,
    file: FileRef,
    source: SourceConfig,
    error: type[DeliveryError],
    match: str,
    *,
    state: Any = None,
) -> DeliveryError:
    """What opening (and reading) ``file`` raised, checked to be exactly ``error``."""
    with pytest.raises(error, match=match) as info:
        fetch_bytes(fetcher, file, source, state=state)
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    return info.value


def assert_hidden(error: BaseException, *secrets: str) -> None:
    """No way an error is shown (message, repr, excerpt, the errors it was raised from)
    carries a secret."""
    seen: BaseException | None = error
    while seen is not None:
        shown = (str(seen), repr(seen), str(getattr(seen, "excerpt", None) or ""))
        for text in shown:
            for secret in secrets:
                assert secret not in text, f"{secret!r} shown in {text!r}"
        seen = seen.__cause__ or seen.__context__
