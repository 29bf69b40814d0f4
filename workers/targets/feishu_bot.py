"""``feishu_bot`` target: a Feishu or Lark custom bot (自定义机器人) in one group chat.

The bot's hook URL, ``https://open.feishu.cn/open-apis/bot/v2/hook/<token>``
(``open.larksuite.com`` for Lark), is its credential: messages, excerpts and logs show
only its host. With ``secret`` set (the bot's signature verification), ``timestamp``
(seconds) and ``sign`` go *in the JSON body*, where
``sign = base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b""))``.

Feishu reports failures as a non-zero ``code`` (legacy: ``StatusCode``), mostly inside
an HTTP 200, so ``outcome`` reads the body before trusting the status.

Mentions reach the template as ``at``: one entry per mention, a placeholder that
becomes the message type's real markup after rendering, or ``@name`` when the people
map has no Feishu open_id. Mention markup that comes from anywhere else (the event's
text, a sender's name) is defused, so a chat message cannot @all the Feishu group.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from relay.config.models import TargetConfig
from relay.config.people import Mention
from relay.errors import (
    ConfigError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from relay.templates import TemplateError, check_template, render
from workers.net.addresses import check_url, safe_url
from workers.net.http import HttpAnswer, guarded_pool, send
from workers.net.outcomes import classify_redacted, excerpt, json_object, response_text
from workers.targets.base import BaseTarget, DeliveryContext, DeliveryResult, TargetOptions
from workers.targets.markup import FEISHU_CARD_CHARS, markdown_escaper
from workers.targets.placeholders import CLOSE, OPEN, TOKEN, defuse, fit, placeholders

MAX_BODY = 20_000  # bytes; Feishu refuses bodies over 20 KB with 9499
HOOK_PATH = re.compile(r"/bot/v2/hook/([^/]+)$")
_PIECE = re.compile(f"{OPEN}(\\d+){CLOSE}|\\[([^\\]\\n]+)\\]\\((https?://[^\\s)]+)\\)")
_AT_TAG = re.compile(r"<(?=at\b)", re.IGNORECASE)
BRACKET = "\ue002"  # a "[" from the event, never the start of a link
# Card markdown: Feishu documents HTML character references for literal markup.
CARD_ESCAPE = markdown_escaper(FEISHU_CARD_CHARS)

DEFAULT_TITLE = "{{ (event.group.name or event.group.id) if event.group else event.source }}"
DEFAULT_TEMPLATE = """\
{% if event.sender %}{{ event.sender.name or event.sender.id }}: {% endif %}\
{{ event.text or event.type }}
{% for file in event.files %}
📎 {% if file.url %}[{{ file.name }}]({{ file.url }}){% else %}{{ file.name }}{% endif %}

{% endfor %}
{% if at %}
{{ at | join(" ") }}
{% endif %}
"""
DEFAULT_TEXT_TEMPLATE = "[{{ title }}]\n" + DEFAULT_TEMPLATE

# Codes a retry can fix, and what each means.
RETRYABLE = {
    11232: "rate limited (5 messages a second, 100 a minute per bot)",
    2200: "internal error on Feishu's side",
}
# Codes only a human can fix, with what to fix.
PERMANENT = {
    19001: "the hook token in url is not valid; copy the bot's current webhook URL "
    "(the bot may have been removed from the group)",
    19021: "the signature was refused: check the secret and the clock "
    "(the timestamp must be within 1 hour of Feishu's time)",
    19022: "the request came from an IP address the bot does not allow; add the "
    "workers' outgoing address to the bot's IP allowlist",
    19024: "the message contains none of the bot's custom keywords; put one in the "
    "template or the title",
    9499: "bad request: the message was refused as malformed or too large",
}


class FeishuBotOptions(TargetOptions):
    """What a ``feishu_bot`` target adds to the common target fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: str = Field(repr=False, description="The bot's webhook URL; its token is a secret.")
    secret: str | None = Field(None, repr=False, description="Signature verification secret.")
    msg_type: Literal["text", "post", "interactive"] = "post"
    title: str | None = Field(None, description="Jinja2 template of the post or card title.")

    @field_validator("url")
    @classmethod
    def _hook_url(cls, value: str, info: ValidationInfo) -> str:
        context = info.context if isinstance(info.context, dict) else {}
        check_url(value, allow_private=bool(context.get("allow_private", True)))
        if not HOOK_PATH.search(urlsplit(value).path):
            raise ValueError(
                "expected the bot's webhook URL, "
                "https://open.feishu.cn/open-apis/bot/v2/hook/<token>"
            )
        return value

    @field_validator("secret")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("the secret is empty; remove the key to send unsigned")
        return value

    @field_validator("title")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)


def sign(secret: str, timestamp: int) -> str:
    """Feishu's signature: the string-to-sign is the HMAC *key*, the message is empty."""
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


class FeishuBotTarget(BaseTarget):
    """Send each event to a Feishu/Lark group through its custom bot."""

    kind: ClassVar[str] = "feishu_bot"
    family: ClassVar[str] = "notify"
    Options: ClassVar[type[FeishuBotOptions]] = FeishuBotOptions
    default_rate_limits: ClassVar[tuple[str, ...]] = ("100/min", "5/s")

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        options = config.options
        if not isinstance(options, FeishuBotOptions):
            options = FeishuBotOptions.model_validate(options or {})
        try:
            check_url(options.url, config.allow_private)
        except ValueError as exc:
            raise ConfigError([f"targets.{config.id}.url: {exc}"]) from None
        self.options: FeishuBotOptions = options
        match = HOOK_PATH.search(urlsplit(options.url).path)
        self._token = match.group(1) if match else ""
        self.where = safe_url(options.url)

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        mentions = context.mentions
        title = self.title(context)
        at, valid = placeholders(mentions, "feishu")
        kind = self.options.msg_type
        default = DEFAULT_TEXT_TEMPLATE if kind == "text" else DEFAULT_TEMPLATE
        escape = CARD_ESCAPE if kind == "interactive" else _plain_escape
        rendered = context.render(default, markup_escape=escape, title=title, at=at)
        text = defuse(rendered, valid, str)
        timestamp = int(time.time())
        text = fit(text, lambda t: len(self.body(t, title, mentions, timestamp)) <= MAX_BODY)
        response = send(
            guarded_pool(self.config.allow_private),
            "POST",
            self.options.url,
            timeout=self.config.timeout or context.timeout,
            data=self.body(text, title, mentions, timestamp),
            headers={"content-type": "application/json; charset=utf-8"},
        )
        return self.outcome(response)

    def title(self, context: DeliveryContext) -> str:
        """The post/card title (and ``title`` in templates); one line, no markup."""
        try:
            title = render(self.options.title or DEFAULT_TITLE, event=context.event)
        except TemplateError as exc:
            raise PermanentDeliveryError(f"title {exc}") from None
        return " ".join(title.split())

    def payload(self, text: str, title: str, mentions: list[Mention]) -> dict[str, Any]:
        """The message for ``msg_type``, placeholders replaced by real mentions."""
        if self.options.msg_type == "text":
            return {"msg_type": "text", "content": {"text": _as_text(text, mentions)}}
        if self.options.msg_type == "post":
            lines = [_paragraph(line, mentions) for line in text.split("\n")]
            post = {"zh_cn": {"title": title, "content": lines}}
            return {"msg_type": "post", "content": {"post": post}}
        markdown = TOKEN.sub(lambda m: f"<at id={_id(m, mentions)}></at>", text)
        card = {
            "config": {"wide_screen_mode": True},
            "header": {"title": {"tag": "plain_text", "content": title}},
            "elements": [{"tag": "markdown", "content": markdown}],
        }
        return {"msg_type": "interactive", "card": card}

    def body(self, text: str, title: str, mentions: list[Mention], timestamp: int) -> bytes:
        payload = self.payload(text, title, mentions)
        if self.options.secret is not None:
            signature = {"timestamp": str(timestamp), "sign": sign(self.options.secret, timestamp)}
            payload = {**signature, **payload}
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()

    def outcome(self, response: HttpAnswer) -> DeliveryResult:
        """``code`` 0 is success; every other code raises what it means."""
        status = response.status
        if status == 429 or status >= 500 or 300 <= status < 400:
            return classify_redacted(response, self._redact)
        text = self._redact(response_text(response))
        data = json_object(text)
        code = data.get("code", data.get("StatusCode"))
        if not isinstance(code, int) or isinstance(code, bool):
            if 200 <= status < 300:
                raise RetryableDeliveryError(
                    f"{self.where} answered HTTP {status} without a result code",
                    status=status,
                    excerpt=excerpt(text),
                )
            return classify_redacted(response, self._redact)
        if code == 0 and 200 <= status < 300:
            return DeliveryResult(status=status, excerpt=excerpt(text))
        message = self._redact(str(data.get("msg") or data.get("StatusMessage") or ""))
        said = f"Feishu answered code {code}" + (f" ({message})" if message else "")
        if code in RETRYABLE:
            raise RetryableDeliveryError(
                f"{said}: {RETRYABLE[code]}", status=status, excerpt=excerpt(text)
            )
        hint = PERMANENT.get(code, "the bot refused the message")
        raise PermanentDeliveryError(f"{said}: {hint}", status=status, excerpt=excerpt(text))

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text


def _id(match: re.Match[str], mentions: list[Mention]) -> str:
    return mentions[int(match.group(1))].id_on("feishu") or ""


def _name(mention: Mention) -> str:
    return mention.name.replace("<", "").replace(">", "")


def _zero_width(text: str) -> str:
    """``<at`` → ``<\\u200bat``: shown the same, no longer parsed as a mention."""
    return _AT_TAG.sub("<\u200b", text)


def _plain_escape(text: str) -> str:
    """Text and post messages show text as it is, but the relay reads ``[label](url)``
    and ``<at`` in them: a ``[`` from the event is set aside until that is done."""
    return _zero_width(text).replace("[", BRACKET)


def _unbracket(text: str) -> str:
    return text.replace(BRACKET, "[")


def _as_text(text: str, mentions: list[Mention]) -> str:
    def piece(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return f"{match.group(2)} ({match.group(3)})"  # a custom bot's text has no links
        mention = mentions[int(match.group(1))]
        return f'<at user_id="{mention.id_on("feishu")}">{_name(mention)}</at>'

    return _unbracket(_PIECE.sub(piece, text))


def _paragraph(line: str, mentions: list[Mention]) -> list[dict[str, str]]:
    """One post paragraph: text runs, ``[name](url)`` links and ``at`` elements."""
    elements: list[dict[str, str]] = []
    position = 0
    for match in _PIECE.finditer(line):
        if match.start() > position:
            elements.append({"tag": "text", "text": _unbracket(line[position : match.start()])})
        if match.group(1) is not None:
            mention = mentions[int(match.group(1))]
            user_id = mention.id_on("feishu") or ""
            elements.append({"tag": "at", "user_id": user_id, "user_name": _name(mention)})
        else:
            label = _unbracket(match.group(2))
            elements.append({"tag": "a", "text": label, "href": match.group(3)})
        position = match.end()
    if position < len(line) or not elements:
        elements.append({"tag": "text", "text": _unbracket(line[position:])})
    return elements
