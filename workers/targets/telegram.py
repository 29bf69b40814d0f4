"""``telegram`` target: post each event to a Telegram chat through the Bot API.

SafeW speaks a clone of the same API, so ``api_base: https://api.safew.org`` makes this
a SafeW target. The bot token sits in the URL path (``/bot<token>/sendMessage``), so
no URL built from it ever reaches a message: errors name the method and ``api_base``.

Text goes out with ``sendMessage``. A ``file.shared`` event whose files carry a plain
``url`` also gets one ``sendDocument`` per such file (Telegram fetches the URL itself);
files known only by a platform ``ref`` cannot be fetched by Telegram and appear by
name in the text. Telegram has no idempotency key, so when a delivery takes several
requests the steps already done are recorded in Redis and skipped on a retry.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import redis
from markupsafe import Markup
from markupsafe import escape as html_escape
from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from relay.config.models import TargetConfig
from relay.config.people import Mention
from relay.errors import (
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    TargetThrottled,
)
from relay.events import FileRef
from relay.state import keys
from workers.net.addresses import check_url, safe_url
from workers.net.http import BlockedAddress, HttpAnswer, guarded_pool, send, vetted_addresses
from workers.net.outcomes import classify, excerpt, parse_retry_after, response_text
from workers.targets.base import BaseTarget, DeliveryContext, DeliveryResult, TargetOptions

PROGRESS_TTL = 7 * 24 * 3600  # seconds a multi-request delivery remembers its done steps
DEFAULT_RETRY_AFTER = 30.0  # a 429 without retry_after (Telegram always sends one)

# Extras every template sees: ``escape``, ``link`` and ``at``. With
# parse_mode HTML the template is autoescaped, so ``{{ event.text }}`` is already safe.
HTML_TEMPLATE = """\
{% if event.group %}<b>{{ event.group.name or event.group.id }}</b>{% endif %}
{% if event.sender %} · {{ event.sender.name or event.sender.id }}{% endif %}

{% if event.text %}
{{ event.text }}
{% elif event.type != "message.created" %}
<i>{{ event.type }}</i>
{% endif %}
{% for file in event.files %}
📎 {{ link(file.url, file.name) if file.url else file.name }}
{% endfor %}
{% if at %}
cc {{ at | join(" ") }}
{% endif %}
"""
# parse_mode none: the same text without markup, and not escaped.
PLAIN_TEMPLATE = (
    HTML_TEMPLATE.replace("<b>", "").replace("</b>", "").replace("<i>", "[").replace("</i>", "]")
)

_TOKEN = re.compile(r"^[0-9]{1,20}:[A-Za-z0-9_-]{1,200}$")
_CHAT_ID = re.compile(r"^-?[0-9]{1,20}$")
_CHANNEL = re.compile(r"^@[A-Za-z][A-Za-z0-9_]{3,64}$")
# sendDocument descriptions meaning "Telegram could not use that URL": not fatal.
_URL_REFUSED = ("http url", "web page content", "file identifier", "too big", "remote file")
_CHAT_HINTS = {
    "chat not found": "check chat_id ({chat}), and that the bot was added to the chat",
    "message is too long": "the text is over 4096 characters; shorten the template (truncate_text)",
    "message text is empty": "the rendered message is empty; check the template",
    "can't parse entities": "Telegram could not parse the HTML; escape user content "
    "in the template",
    "message thread not found": "check message_thread_id",
    "not enough rights": "the bot may not post in chat {chat}; give it the right to send messages",
    "bot was blocked": "the user blocked the bot",
    "bot was kicked": "the bot was removed from chat {chat}; add it back",
    "bot is not a member": "add the bot to chat {chat}",
}


def html_link(url: str, label: str) -> Markup:
    return Markup('<a href="{}">{}</a>').format(url, label)


def plain_link(url: str, label: str) -> str:
    return f"{label}: {url}"


def mention_tag(mention: Mention, html: bool) -> str:
    """A numeric id becomes a ``tg://user`` link (HTML only); ``@username`` stays as it is;
    without a Telegram id the mention is ``@name`` text."""
    value = (mention.id_on("telegram") or "").strip()
    if value and value.lstrip("@") and not _CHAT_ID.match(value):
        tag = value if value.startswith("@") else "@" + value
    elif value and html:
        return Markup('<a href="tg://user?id={}">{}</a>').format(value, mention.name)
    else:
        tag = "@" + mention.name
    return html_escape(tag) if html else tag


def reply_to(context: DeliveryContext) -> int | None:
    """The id of the event's message in its chat (Telegram message ids are
    ``<chat_id>:<message_id>``), if the event came from a Telegram source."""
    thread = context.thread
    if thread.source_kind not in (None, "telegram"):
        return None
    tail = (thread.message_id or "").rpartition(":")[2]
    return int(tail) if tail.isdigit() else None


class TelegramOptions(TargetOptions):
    """What a ``telegram`` target adds: the bot, the chat and how text is parsed."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    bot_token: str = Field(repr=False)
    chat_id: int | str
    api_base: str = "https://api.telegram.org"
    parse_mode: Literal["HTML", "none"] = "HTML"
    disable_notification: bool = False
    message_thread_id: int | None = Field(None, ge=1)
    reply: bool = Field(
        False,
        description="Answer the event's own message (a Telegram source in the same chat; "
        "for confirmations of tasks and stored files).",
    )

    @field_validator("bot_token")
    @classmethod
    def _token_shape(cls, value: str) -> str:
        if not _TOKEN.match(value):
            raise ValueError("must be a bot token as BotFather gives it (digits:letters)")
        return value

    @field_validator("chat_id", mode="before")
    @classmethod
    def _chat(cls, value: object) -> object:
        if isinstance(value, str) and _CHAT_ID.match(value.strip()):
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _CHANNEL.match(value.strip()):
            return value.strip()
        raise ValueError("must be a numeric chat id (-100… for a supergroup) or @channelname")

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str, info: ValidationInfo) -> str:
        context = info.context if isinstance(info.context, dict) else {}
        check_url(value, allow_private=bool(context.get("allow_private", True)))
        return value.rstrip("/")


class TelegramTarget(BaseTarget):
    """One Telegram (or SafeW) chat, through a bot."""

    kind: ClassVar[str] = "telegram"
    family: ClassVar[str] = "notify"
    Options: ClassVar[type[TelegramOptions]] = TelegramOptions
    # Telegram's FAQ: at most 20 messages a minute in one group, about 1 a second per chat.
    default_rate_limits: ClassVar[tuple[str, ...]] = ("20/min", "1/s")

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        options = config.options
        if not isinstance(options, TelegramOptions):
            options = TelegramOptions.model_validate(options or {})
        try:
            check_url(options.api_base, config.allow_private)
        except ValueError as exc:
            raise ConfigError([f"targets.{config.id}.api_base: {exc}"]) from None
        self.options: TelegramOptions = options
        self.where = safe_url(options.api_base)

    @property
    def html(self) -> bool:
        return self.options.parse_mode == "HTML"

    def text(self, context: DeliveryContext) -> str:
        html = self.html
        return context.render(
            HTML_TEMPLATE if html else PLAIN_TEMPLATE,
            html=html,
            escape=html_escape if html else str,
            link=html_link if html else plain_link,
            at=[mention_tag(m, html) for m in context.mentions],
        )

    def steps(self, context: DeliveryContext) -> list[tuple[str, str, dict[str, Any]]]:
        """(step name, method, parameters) of every request this delivery makes."""
        common: dict[str, Any] = {"chat_id": self.options.chat_id}
        if self.options.disable_notification:
            common["disable_notification"] = True
        if self.options.message_thread_id is not None:
            common["message_thread_id"] = self.options.message_thread_id
        message = {**common, "text": self.text(context)}
        answered = reply_to(context) if self.options.reply else None
        if answered is not None:
            message["reply_parameters"] = {
                "message_id": answered,
                "allow_sending_without_reply": True,
            }
        if self.html:
            message["parse_mode"] = "HTML"
        steps = [("message", "sendMessage", message)]
        if context.event.type == "file.shared":
            for i, file in enumerate(context.event.files):
                if fetchable(file) and self.refused_file(str(file.url)) is None:
                    steps.append(
                        (f"document:{i}", "sendDocument", {**common, "document": file.url})
                    )
        return steps

    def refused_file(self, url: str) -> str | None:
        """Why a file URL from an event may not go to ``sendDocument``, or None.

        The Bot API server fetches the URL itself, so a self-hosted one inside the
        network (SafeW's clone, ``telegram-bot-api --local``) would fetch internal
        addresses for whoever sent the event: the URL meets the policy of every other
        outbound request, by name and by every address the name resolves to, whatever
        the target's ``allow_private`` (which is about the Bot API server, not the files).
        """
        try:
            check_url(url, allow_private=False)
            parts = urlsplit(url)
            host = (parts.hostname or "").strip("[]")
            vetted_addresses(host, parts.port or 443, allow_private=False)
        except (ValueError, BlockedAddress) as exc:
            return str(exc)
        except (OSError, UnicodeError):
            return None  # it does not resolve here; the Bot API says so if not there
        return None

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        steps = self.steps(context)
        progress = Progress(context.state, context.delivery_id) if len(steps) > 1 else None
        done = progress.done() if progress else set()
        notes: list[str] = []
        status: int | None = None
        for name, method, params in steps:
            if name in done:
                notes.append(f"{name}: sent before")
                continue
            response = self.call(method, params, context)
            status = response.status
            refused = outcome(response, method, self.where, self.options.chat_id)
            notes.append(f"{name}: not attached ({refused})" if refused else f"{name}: ok")
            if progress:
                progress.mark(name)
        if context.event.type == "file.shared":
            for i, file in enumerate(context.event.files):
                if fetchable(file) and (why := self.refused_file(str(file.url))):
                    notes.append(f"document:{i}: not attached (refused: {why})")
        return DeliveryResult(status=status, excerpt=excerpt("; ".join(notes)))

    def call(self, method: str, params: dict[str, Any], context: DeliveryContext) -> HttpAnswer:
        url = f"{self.options.api_base}/bot{self.options.bot_token}/{method}"
        body = json.dumps(params, ensure_ascii=False).encode()
        return send(
            guarded_pool(self.config.allow_private),
            "POST",
            url,
            timeout=self.config.timeout or context.timeout,
            data=body,
            headers={"content-type": "application/json; charset=utf-8"},
        )


def fetchable(file: FileRef) -> bool:
    """A plain URL Telegram can fetch; a ``ref`` means a platform file behind a login."""
    return bool(file.url) and not file.ref and str(file.url).startswith(("http://", "https://"))


class Progress:
    """The steps of one delivery already sent, so a retry does not send them twice."""

    def __init__(self, state: redis.Redis | None, delivery_id: str) -> None:
        self.state = state
        self.key = keys.sent_steps("telegram", delivery_id)

    def done(self) -> set[str]:
        if self.state is None:
            return set()
        return {
            m.decode() if isinstance(m, bytes) else str(m) for m in self.state.smembers(self.key)
        }

    def mark(self, name: str) -> None:
        if self.state is not None:
            pipe = self.state.pipeline()
            pipe.sadd(self.key, name)
            pipe.expire(self.key, PROGRESS_TTL)
            pipe.execute()


def bot_api_json(response: HttpAnswer) -> dict[str, Any] | None:
    """The Bot API's ``{"ok": …}`` object, or None if the body is something else."""
    try:
        data = json.loads(response.body)
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("ok"), bool) else None


def outcome(response: HttpAnswer, method: str, where: str, chat: int | str) -> str | None:
    """None on success; for a document Telegram could not fetch, its reason; else raises."""
    text = excerpt(response_text(response))
    status = response.status
    data = bot_api_json(response)
    if data is None:
        if status == 429:
            wait = parse_retry_after(response.headers.get("retry-after")) or DEFAULT_RETRY_AFTER
            raise TargetThrottled(
                f"{method}: HTTP 429", retry_after=wait, status=status, excerpt=text
            )
        if 200 <= status < 300:
            raise PermanentDeliveryError(
                f"{method} via {where}: the answer is not Bot API JSON; check api_base",
                status=status,
                excerpt=text,
            )
        classify(response)  # raises: every non-2xx is an error
        return None
    if data["ok"]:
        return None
    error = api_error(data, method, where, chat, status=status, excerpt=text)
    if error is None:
        return str(data.get("description"))
    raise error


def api_error(
    data: dict[str, Any], method: str, where: str, chat: int | str, *, status: int, excerpt: str
) -> DeliveryError | None:
    """The error an ``ok: false`` answer means; None for a document URL Telegram refused."""
    code = data["error_code"] if isinstance(data.get("error_code"), int) else status
    description = str(data.get("description") or f"error {code}")
    raw = data.get("parameters")
    params: dict[str, Any] = raw if isinstance(raw, dict) else {}
    lowered = description.lower()

    def fail(hint: str) -> PermanentDeliveryError:
        message = f"{method} via {where}: {description}: {hint}"
        return PermanentDeliveryError(message, status=status, excerpt=excerpt)

    if params.get("migrate_to_chat_id") is not None:
        return fail(f"the group became a supergroup; set chat_id to {params['migrate_to_chat_id']}")
    if code == 429 or params.get("retry_after") is not None:
        wait = params.get("retry_after")
        retry_after = float(wait) if isinstance(wait, int | float) else DEFAULT_RETRY_AFTER
        return TargetThrottled(
            f"{method}: Telegram throttles the bot in chat {chat} for {retry_after:g}s",
            retry_after=retry_after,
            status=status,
            excerpt=excerpt,
        )
    if code >= 500 or code == 420:
        return RetryableDeliveryError(f"{method}: {description}", status=status, excerpt=excerpt)
    if code == 401:
        return fail("the bot token was rejected; check bot_token")
    if code == 404:
        return fail("check bot_token and api_base")
    if method == "sendDocument" and code == 400 and any(p in lowered for p in _URL_REFUSED):
        return None
    hint = next((h.format(chat=chat) for p, h in _CHAT_HINTS.items() if p in lowered), None)
    if code == 403:
        return fail(hint or f"the bot may not post to chat {chat}")
    if 400 <= code < 500:
        return fail(hint or "Telegram refused the request")
    return RetryableDeliveryError(f"{method}: {description}", status=status, excerpt=excerpt)
