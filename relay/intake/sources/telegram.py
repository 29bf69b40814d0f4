"""``telegram``: Telegram Bot API webhooks (and SafeW, a clone of that API).

Telegram signs nothing: ``setWebhook(url, secret_token=...)`` makes it send the token
back verbatim in ``X-Telegram-Bot-Api-Secret-Token``, and that header is all there is
to check (in constant time). There is no timestamp, so no replay window: resends are
dropped by ``update_id``. The same source also feeds ``relay poll`` (``getUpdates``
long polling, the only mode SafeW documents), which needs ``bot_token``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from relay.errors import BadRequest, Unauthorized
from relay.intake.sources.base import (
    BaseSource,
    InboundRequest,
    Parsed,
    Reply,
    SignedRequest,
    SourceOptions,
)
from relay.intake.sources.generic_payloads import read_json
from relay.intake.sources.telegram_payloads import BotIdentity, event_from_update

DEFAULT_HEADER = "X-Telegram-Bot-Api-Secret-Token"
DEFAULT_API = "https://api.telegram.org"
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")  # setWebhook's rule for secret_token
_BOT_TOKEN = re.compile(r"([0-9]{1,20}):[A-Za-z0-9_-]{1,200}")  # "<bot id>:<secret part>"
_USERNAME = re.compile(r"@?([A-Za-z0-9_]{1,64})")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name (RFC 9110)


class TelegramOptions(SourceOptions):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    secret_token: str | None = Field(
        None, repr=False, description="setWebhook's secret_token; without it, poll only."
    )
    secret_header: str = Field(DEFAULT_HEADER, description="Header carrying secret_token.")
    bot_token: str | None = Field(None, repr=False, description="For relay poll (getUpdates).")
    api_base: str = Field(DEFAULT_API, description="Bot API server; SafeW: api.safew.org.")
    bot_username: str | None = Field(None, description="The bot's @username, for mentions.")
    bot_id: int | None = Field(None, ge=1, description="The bot's user id (else from token).")
    poll_timeout: int = Field(25, ge=0, le=300, description="getUpdates long-poll seconds.")
    poll_limit: int = Field(100, ge=1, le=100, description="Updates per getUpdates call.")
    allowed_updates: list[str] | None = Field(
        None, description="Update types getUpdates asks for; unset keeps the bot's setting."
    )
    allow_private: bool = Field(
        False, description="Let relay poll reach an api_base on a private address."
    )
    file_url: str = Field(
        "{api_base}/file/bot{token}/{file_path}",
        pattern=r"^\S*\{file_path\}\S*$",
        description="Download URL of getFile's file_path (SafeW: {api_base}/file/{token}/…).",
    )
    local_api: bool = Field(
        False,
        description="api_base is a self-hosted Bot API server (--local): read files from disk.",
    )
    local_root: str | None = Field(
        None, min_length=1, description="With local_api: only files under this folder are read."
    )
    message_links: str | None = Field(
        None,
        description="Base of links to messages (https://t.me); unset: https://t.me when "
        "api_base is Telegram's, none otherwise (SafeW); empty: none.",
    )

    @field_validator("secret_token")
    @classmethod
    def _secret_shape(cls, value: str | None) -> str | None:
        if value is not None and not _SECRET.fullmatch(value):
            raise ValueError(
                "secret_token must be 1-256 characters of A-Z, a-z, 0-9, _ and - "
                "(the rule of setWebhook; is its environment variable set?)"
            )
        return value

    @field_validator("bot_token")
    @classmethod
    def _token_shape(cls, value: str | None) -> str | None:
        if value is not None and not _BOT_TOKEN.fullmatch(value):
            raise ValueError("bot_token must look like 123456:ABC-DEF... (from @BotFather)")
        return value

    @field_validator("secret_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _TOKEN.fullmatch(value):
            raise ValueError(f"{value!r} is not an HTTP header name")
        return value

    @field_validator("message_links")
    @classmethod
    def _links(cls, value: str | None) -> str | None:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("message_links must be an https URL such as https://t.me")
        return value.rstrip("/")

    @property
    def link_base(self) -> str | None:
        """Where links to messages point: ``message_links``, else t.me for Telegram's own
        Bot API (a SafeW or other server's chats have no t.me links)."""
        if self.message_links is not None:
            return self.message_links or None
        return "https://t.me" if self.api_base == DEFAULT_API else None

    @field_validator("api_base")
    @classmethod
    def _api_base(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("api_base must be an http(s) URL such as https://api.telegram.org")
        if parts.query or parts.fragment or "@" in parts.netloc:
            raise ValueError("api_base must have no credentials, query or fragment")
        return value.rstrip("/")

    @field_validator("bot_username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _USERNAME.fullmatch(value)
        if not match:
            raise ValueError("bot_username must be the bot's @username (letters, digits, _)")
        return match.group(1)

    @field_validator("allowed_updates")
    @classmethod
    def _update_types(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            if not re.fullmatch(r"[a-z_]{1,64}", item):
                raise ValueError(f"{item!r} is not an update type such as message")
        return value

    @model_validator(mode="after")
    def _some_way_in(self) -> TelegramOptions:
        if self.secret_token is None and self.bot_token is None:
            raise ValueError(
                "set secret_token (webhook at /hooks/<id>) or bot_token (relay poll), or both"
            )
        return self


def sample_update(bot_username: str | None) -> dict[str, Any]:
    """A supergroup text message that @-mentions the bot and one person."""
    handle = "@" + (bot_username or "relay_bot")
    text = f"{handle} deploy finished, cc @grace"
    now = int(time.time())
    return {
        "update_id": 100_000_000 + secrets.randbelow(800_000_000),
        "message": {
            "message_id": secrets.randbelow(1_000_000) + 1,
            "from": {
                "id": 4242,
                "is_bot": False,
                "first_name": "Ada",
                "last_name": "Lovelace",
                "username": "ada",
            },
            "chat": {"id": -1001234567890, "title": "Ops", "type": "supergroup"},
            "date": now,
            "text": text,
            "entities": [
                {"type": "mention", "offset": 0, "length": len(handle)},
                {"type": "mention", "offset": len(text) - len("@grace"), "length": len("@grace")},
            ],
        },
    }


class TelegramSource(BaseSource):
    kind: ClassVar[str] = "telegram"
    Options = TelegramOptions
    # Telegram keeps an undelivered update for at most 24 h; two days covers its retries.
    default_dedupe_ttl: ClassVar[float] = 2 * 86400

    def __init__(self, config: object) -> None:
        super().__init__(config)  # type: ignore[arg-type]
        opts: TelegramOptions = self.options
        self._secret = _digest(opts.secret_token) if opts.secret_token else None
        bot_id = opts.bot_id
        if bot_id is None and opts.bot_token:
            match = _BOT_TOKEN.fullmatch(opts.bot_token)
            bot_id = int(match.group(1)) if match else None
        username = opts.bot_username.lower() if opts.bot_username else None
        self.bot = BotIdentity(username=username, id=bot_id)

    def verify(self, request: InboundRequest) -> None:
        opts: TelegramOptions = self.options
        if self._secret is None:
            raise Unauthorized(
                "this source has no secret_token: it receives updates through relay poll only",
                code="webhook_disabled",
            )
        value = request.header(opts.secret_header)
        if not value:
            raise Unauthorized(f"missing header {opts.secret_header}", code="missing_secret")
        if not hmac.compare_digest(_digest(value), self._secret):
            raise Unauthorized(
                f"{opts.secret_header} does not match secret_token", code="invalid_secret_token"
            )

    def parse(self, request: InboundRequest) -> Parsed:
        return self.parse_update(read_json(request))

    def parse_update(self, update: Any) -> Parsed:
        """An ``Update`` from a webhook body or a ``getUpdates`` result, deduped by id."""
        if not isinstance(update, dict):
            raise BadRequest("a Telegram update is a JSON object", code="invalid_update")
        update_id = update.get("update_id")
        if not isinstance(update_id, int) or isinstance(update_id, bool) or update_id < 0:
            raise BadRequest("update_id is missing or not an integer", code="invalid_update")
        event = event_from_update(
            self.config.id, update, self.bot, link_base=self.options.link_base
        )
        return Parsed(event, str(update_id))

    def reply(self, request: InboundRequest, event_id: str, *, duplicate: bool) -> Reply:
        """200 either way. The body has no ``method`` key, so Telegram runs nothing."""
        body: dict[str, Any] = {"event_id": event_id}
        if duplicate:
            body["duplicate"] = True
        return Reply(200, json.dumps(body).encode())

    def sample(self, body: bytes | None = None) -> SignedRequest:
        opts: TelegramOptions = self.options
        if body is None:
            body = json.dumps(sample_update(opts.bot_username)).encode()
        headers = {"content-type": "application/json"}
        if opts.secret_token:
            headers[opts.secret_header] = opts.secret_token
        return SignedRequest(headers=headers, body=body)

    def method_url(self, method: str) -> str:
        """``{api_base}/bot<token>/<method>``. It holds the token: never log or store it."""
        return f"{self.options.api_base}/bot{self.options.bot_token}/{method}"


def _digest(value: str) -> bytes:
    """Fixed-length digests, so the comparison time does not depend on the lengths."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()
