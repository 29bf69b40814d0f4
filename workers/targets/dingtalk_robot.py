"""``dingtalk_robot`` target: a DingTalk group's custom robot (自定义机器人) webhook.

The ``url`` is the webhook DingTalk shows when the robot is added, access_token
included; it is a secret and only ever shown through ``safe_url``. With ``secret``
(the robot's 加签 ``SEC…`` secret) each request gets ``&timestamp=<ms>&sign=<…>``.
DingTalk answers HTTP 200 with an ``errcode``; see ``dingtalk_messages.robot_outcome``.
A robot takes 20 messages a minute; one more blocks it for 10 minutes (130101), hence
the default rate limit.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs, quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from relay.config.models import TargetConfig
from relay.errors import ConfigError
from relay.templates import check_template
from workers.net.addresses import check_url
from workers.targets.base import BaseTarget, DeliveryContext, DeliveryResult, TargetOptions
from workers.targets.dingtalk_messages import (
    DEFAULT_MARKDOWN_TEMPLATE,
    DEFAULT_TEXT_TEMPLATE,
    DEFAULT_TITLE,
    collect_mentions,
    post_json,
    render_message,
    render_option,
    robot_outcome,
    sign,
    text_or_markdown,
    with_keyword,
)

MsgType = Literal["text", "markdown", "link", "actionCard"]


class Button(BaseModel):
    """One button of an ``actionCard`` with several buttons; both fields are templates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(min_length=1)
    action_url: str = Field(min_length=1)

    @field_validator("title", "action_url")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return check_template(value)


class DingTalkRobotOptions(TargetOptions):
    """What a ``dingtalk_robot`` target adds to the common target fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: str = Field(repr=False, description="Webhook URL with its access_token.")
    secret: str | None = Field(None, repr=False, description="加签 secret (SEC…).")
    msgtype: MsgType = "markdown"
    title: str = Field(DEFAULT_TITLE, description="Template: markdown/link/actionCard title.")
    message_url: str | None = Field(None, description="Template: where a link message goes.")
    pic_url: str | None = Field(None, description="Template: a link message's picture.")
    single_title: str | None = None
    single_url: str | None = Field(None, description="Template: the one actionCard button.")
    btns: list[Button] = Field(default_factory=list)
    btn_orientation: Literal["vertical", "horizontal"] = "vertical"
    at_all: bool = False
    at_mobiles: list[str] = Field(default_factory=list)
    at_user_ids: list[str] = Field(default_factory=list)
    keyword: str | None = Field(None, min_length=1)

    @field_validator("url")
    @classmethod
    def _webhook_url(cls, value: str, info: ValidationInfo) -> str:
        context = info.context if isinstance(info.context, dict) else {}
        check_url(value, allow_private=bool(context.get("allow_private", True)))
        try:
            query = parse_qs(urlsplit(value).query)
        except ValueError:
            query = {}
        if not any(query.get("access_token", [])):
            raise ValueError("the webhook URL needs its access_token (copy it from DingTalk)")
        if "sign" in query or "timestamp" in query:
            raise ValueError("leave timestamp and sign out of the URL; set secret instead")
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("secret is empty (is its environment variable set?)")
        return value

    @field_validator("title", "message_url", "pic_url", "single_title", "single_url")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)

    @model_validator(mode="after")
    def _complete(self) -> DingTalkRobotOptions:
        kind = self.msgtype
        if kind == "link" and not self.message_url:
            raise ValueError("msgtype link needs message_url")
        if kind == "actionCard":
            single = self.single_title is not None or self.single_url is not None
            if single and self.btns:
                raise ValueError("actionCard: use single_title/single_url or btns, not both")
            if single and not (self.single_title and self.single_url):
                raise ValueError("actionCard: set both single_title and single_url")
            if not single and not self.btns:
                raise ValueError("actionCard needs single_title and single_url, or btns")
        mentions = self.at_all or self.at_mobiles or self.at_user_ids
        if mentions and kind not in ("text", "markdown"):
            raise ValueError(f"{kind} messages cannot @-mention; use text or markdown")
        return self


def signed_url(url: str, secret: str | None, timestamp_ms: int) -> str:
    """The webhook URL with ``&timestamp=<ms>&sign=<urlencoded sign>`` when signing."""
    if secret is None:
        return url
    encoded = quote(sign(secret, timestamp_ms), safe="")
    return f"{url}{'&' if urlsplit(url).query else '?'}timestamp={timestamp_ms}&sign={encoded}"


class DingTalkRobotTarget(BaseTarget):
    """Posts each event to one DingTalk custom robot."""

    kind: ClassVar[str] = "dingtalk_robot"
    family: ClassVar[str] = "notify"
    Options: ClassVar[type[DingTalkRobotOptions]] = DingTalkRobotOptions
    default_rate_limits: ClassVar[tuple[str, ...]] = ("20/min",)

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        options = config.options
        if not isinstance(options, DingTalkRobotOptions):
            options = DingTalkRobotOptions.model_validate(options or {})
        try:
            check_url(options.url, config.allow_private)
        except ValueError as exc:
            raise ConfigError([f"targets.{config.id}.url: {exc}"]) from None
        self.options: DingTalkRobotOptions = options

    def message(self, context: DeliveryContext) -> dict[str, Any]:
        """The JSON body for this event, per ``msgtype``."""
        opts = self.options
        kind = opts.msgtype
        mentions = collect_mentions(
            context,
            real=kind in ("text", "markdown"),
            user_ids=opts.at_user_ids,
            mobiles=opts.at_mobiles,
            at_all=opts.at_all,
        )
        plain = kind in ("text", "link")
        text = render_message(
            context, DEFAULT_TEXT_TEMPLATE if plain else DEFAULT_MARKDOWN_TEMPLATE, mentions
        )
        title = "" if kind == "text" else render_option(context, "title", opts.title)
        text = with_keyword(text, opts.keyword, title)
        if kind in ("text", "markdown"):
            return text_or_markdown(kind, text, title, mentions)
        if kind == "link":
            link = {
                "title": title,
                "text": text,
                "messageUrl": render_option(context, "message_url", opts.message_url or ""),
                "picUrl": render_option(context, "pic_url", opts.pic_url) if opts.pic_url else "",
            }
            return {"msgtype": "link", "link": link}
        card: dict[str, Any] = {
            "title": title,
            "text": text,
            "btnOrientation": "1" if opts.btn_orientation == "horizontal" else "0",
        }
        if opts.btns:
            card["btns"] = [
                {
                    "title": render_option(context, f"btns[{i}].title", button.title),
                    "actionURL": render_option(context, f"btns[{i}].action_url", button.action_url),
                }
                for i, button in enumerate(opts.btns)
            ]
        else:
            card["singleTitle"] = render_option(context, "single_title", opts.single_title or "")
            card["singleURL"] = render_option(context, "single_url", opts.single_url or "")
        return {"msgtype": "actionCard", "actionCard": card}

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        body = self.message(context)
        url = signed_url(self.options.url, self.options.secret, int(time.time() * 1000))
        timeout = self.config.timeout or context.timeout
        response = post_json(url, body, allow_private=self.config.allow_private, timeout=timeout)
        return robot_outcome(response, "DingTalk robot")
