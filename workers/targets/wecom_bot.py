"""``wecom_bot`` target: a WeCom (企业微信) group robot (群机器人).

POSTs to the robot's webhook, ``https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY``.
The key is the robot's credential: messages, excerpts and logs show only the host.

Two message types: ``markdown`` (the default) mentions people inline as
``<@userid>``; ``text`` mentions through ``mentioned_list`` (userids, ``@all``) and
``mentioned_mobile_list``, which WeCom shows after the text. WeCom caps the content
at 4096 (markdown) or 2048 (text) bytes of UTF-8; longer messages are cut at a
character boundary, ending in "…".

WeCom answers ``{"errcode": 0, "errmsg": "ok"}``, errors too inside an HTTP 200.
``45009`` (over 20 messages a minute) blocks the whole robot for a while, so it is a
``TargetThrottled``: every delivery to the robot waits, not just this one.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from relay.config.models import TargetConfig
from relay.config.people import Mention
from relay.errors import (
    ConfigError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    TargetThrottled,
)
from workers.net.addresses import check_url, safe_url
from workers.net.http import HttpAnswer, guarded_pool, send
from workers.net.outcomes import classify_redacted, excerpt, json_object, response_text
from workers.targets.base import BaseTarget, DeliveryContext, DeliveryResult, TargetOptions
from workers.targets.markup import markdown_escaper
from workers.targets.placeholders import TOKEN, defuse, fit, placeholders

LIMITS = {"text": 2048, "markdown": 4096}  # bytes of UTF-8 content
THROTTLE_SECONDS = 60.0  # how long to hold the robot after 45009
_MOBILE = re.compile(r"^\+?\d{5,20}$|^@all$")
# Markdown: every value the template outputs shows as typed (``<@`` included).
ESCAPE = markdown_escaper()

DEFAULT_MARKDOWN_TEMPLATE = """\
**{{ (event.group.name or event.group.id) if event.group else event.source }}**
{% if event.sender %}<font color="comment">{{ event.sender.name or event.sender.id }}</font>: \
{% endif %}{{ event.text or event.type }}
{% for file in event.files %}
📎 {% if file.url %}[{{ file.name }}]({{ file.url }}){% else %}{{ file.name }}{% endif %}

{% endfor %}
{% if at %}
{{ at | join(" ") }}
{% endif %}
"""
DEFAULT_TEXT_TEMPLATE = """\
[{{ (event.group.name or event.group.id) if event.group else event.source }}]
{{ (event.sender.name or event.sender.id) ~ ": " if event.sender else "" }}\
{{ event.text or event.type }}
{% for file in event.files %}
📎 {{ file.name }}{{ " " ~ file.url if file.url else "" }}
{% endfor %}
{% if at %}
{{ at | join(" ") }}
{% endif %}
"""

# errcode → what to fix; all of them fail the delivery permanently.
PERMANENT = {
    93000: "the webhook key is not valid; copy the robot's current webhook URL "
    "(the robot may have been removed from the group)",
    40008: "WeCom does not accept this message type; set msgtype to text or markdown",
    40058: "WeCom refused the content or a parameter (too long, or a field is invalid)",
    44004: "the message is empty; check the template",
}


def utf8_json(body: dict[str, Any]) -> bytes:
    """UTF-8 JSON, as WeCom's SDKs send it: its limits count UTF-8 bytes of the text,
    and ``\\u`` escapes would double a Chinese message's size on the wire."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False).encode()


class WeComBotOptions(TargetOptions):
    """What a ``wecom_bot`` target adds to the common target fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: str = Field(repr=False, description="The robot's webhook URL; its key is a secret.")
    msgtype: Literal["markdown", "text"] = "markdown"
    mentioned_mobile_list: list[str] = Field(
        default_factory=list, description="Mobile numbers to @ on every message (text only)."
    )
    at_all: bool = Field(False, description="@all on every message (text only).")

    @field_validator("url")
    @classmethod
    def _webhook_url(cls, value: str, info: ValidationInfo) -> str:
        context = info.context if isinstance(info.context, dict) else {}
        check_url(value, allow_private=bool(context.get("allow_private", True)))
        parts = urlsplit(value)
        keys = parse_qs(parts.query).get("key", [])
        if not parts.path.endswith("/webhook/send") or not any(k.strip() for k in keys):
            raise ValueError(
                "expected the robot's webhook URL, "
                "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=<key>"
            )
        return value

    @field_validator("mentioned_mobile_list")
    @classmethod
    def _mobiles(cls, value: list[str]) -> list[str]:
        for i, mobile in enumerate(value):
            if not _MOBILE.match(mobile):
                raise ValueError(f"[{i}] is not a mobile number (digits, optional +) or @all")
        return value

    @model_validator(mode="after")
    def _text_only(self) -> WeComBotOptions:
        if self.msgtype == "markdown" and (self.at_all or self.mentioned_mobile_list):
            raise ValueError(
                "at_all and mentioned_mobile_list need msgtype: text "
                "(WeCom markdown messages mention only by userid)"
            )
        return self


def _unmention(text: str) -> str:
    """``<@`` that did not come from ``at`` becomes ``<\u200b@``: shown the same, no
    longer a mention."""
    return text.replace("<@", "<\u200b@")


class WeComBotTarget(BaseTarget):
    """Send each event to a WeCom group through its robot webhook."""

    kind: ClassVar[str] = "wecom_bot"
    family: ClassVar[str] = "notify"
    Options: ClassVar[type[WeComBotOptions]] = WeComBotOptions
    default_rate_limits: ClassVar[tuple[str, ...]] = ("20/min",)

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        options = config.options
        if not isinstance(options, WeComBotOptions):
            options = WeComBotOptions.model_validate(options or {})
        try:
            check_url(options.url, config.allow_private)
        except ValueError as exc:
            raise ConfigError([f"targets.{config.id}.url: {exc}"]) from None
        self.options: WeComBotOptions = options
        self._keys = [k for k in parse_qs(urlsplit(options.url).query).get("key", []) if k]
        self.where = safe_url(options.url)

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        mentions = context.mentions
        kind = self.options.msgtype
        if kind == "text":  # real mentions travel in mentioned_list, not in the text
            at = [f"@{m.name}" for m in mentions if not m.id_on("wecom")]
            text = defuse(context.render(DEFAULT_TEXT_TEMPLATE, at=at), set(), _unmention)
        else:
            at, valid = placeholders(mentions, "wecom")
            rendered = context.render(DEFAULT_MARKDOWN_TEMPLATE, markup_escape=ESCAPE, at=at)
            text = defuse(rendered, valid, str)
        text = fit(text, lambda t: len(_content(t, mentions).encode()) <= LIMITS[kind])
        response = send(
            guarded_pool(self.config.allow_private),
            "POST",
            self.options.url,
            timeout=self.config.timeout or context.timeout,
            data=utf8_json(self.payload(_content(text, mentions), mentions)),
            headers={"content-type": "application/json; charset=utf-8"},
        )
        return self.outcome(response)

    def payload(self, content: str, mentions: list[Mention]) -> dict[str, Any]:
        """The robot message for ``msgtype``."""
        if self.options.msgtype == "markdown":
            return {"msgtype": "markdown", "markdown": {"content": content}}
        users = [uid for m in mentions if (uid := m.id_on("wecom"))]
        if self.options.at_all:
            users.append("@all")
        text: dict[str, Any] = {"content": content}
        if users:
            text["mentioned_list"] = list(dict.fromkeys(users))
        if self.options.mentioned_mobile_list:
            text["mentioned_mobile_list"] = list(self.options.mentioned_mobile_list)
        return {"msgtype": "text", "text": text}

    def outcome(self, response: HttpAnswer) -> DeliveryResult:
        """``errcode`` 0 is success; every other code raises what it means."""
        status = response.status
        if status == 429 or status >= 500 or 300 <= status < 400:
            return classify_redacted(response, self._redact)
        text = self._redact(response_text(response))
        data = json_object(text)
        code = data.get("errcode")
        if not isinstance(code, int) or isinstance(code, bool):
            if 200 <= status < 300:
                raise RetryableDeliveryError(
                    f"{self.where} answered HTTP {status} without an errcode",
                    status=status,
                    excerpt=excerpt(text),
                )
            return classify_redacted(response, self._redact)
        if code == 0 and 200 <= status < 300:
            return DeliveryResult(status=status, excerpt=excerpt(text))
        message = self._redact(str(data.get("errmsg") or "")).split(", hint:")[0]
        said = f"WeCom answered errcode {code}" + (f" ({message})" if message else "")
        if code == 45009:
            raise TargetThrottled(
                f"{said}: the robot sent more than 20 messages a minute and is blocked",
                retry_after=THROTTLE_SECONDS,
                status=status,
                excerpt=excerpt(text),
            )
        if code == -1:
            raise RetryableDeliveryError(
                f"{said}: WeCom is busy", status=status, excerpt=excerpt(text)
            )
        hint = PERMANENT.get(code, "the robot refused the message")
        raise PermanentDeliveryError(f"{said}: {hint}", status=status, excerpt=excerpt(text))

    def _redact(self, text: str) -> str:
        for key in self._keys:
            text = text.replace(key, "***")
        return text


def _content(text: str, mentions: list[Mention]) -> str:
    """Placeholders → ``<@userid>``."""
    return TOKEN.sub(lambda m: f"<@{mentions[int(m.group(1))].id_on('wecom')}>", text)
