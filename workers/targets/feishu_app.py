"""``feishu_app`` target: a Feishu/Lark app bot that posts into a group, or replies to
the event's own message, through the IM API.

A custom bot (``feishu_bot``) can only post into its group; an app bot can also
answer a message in its thread (``POST /im/v1/messages/{id}/reply`` with
``reply_in_thread``), which is where a task's confirmation or a stored file's link
belongs. The tenant token is shared by every worker (``workers.net.feishu_auth``);
each message carries a ``uuid`` derived from the delivery id, which Feishu uses to
send a message once however often it is asked within an hour, so a retry after a
lost answer does not post twice.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from relay.addresses import check_url
from relay.config.models import TargetConfig
from relay.errors import ConfigError, PermanentDeliveryError
from workers.net.feishu_auth import FEISHU_API, TenantTokens, bearer, feishu_data, with_token
from workers.net.http import guarded_pool, send
from workers.targets.base import BaseTarget, DeliveryContext, DeliveryResult, TargetOptions

DEFAULT_TEMPLATE = (
    "{% if event.sender %}{{ event.sender.name or event.sender.id }}: {% endif %}"
    "{{ event.text or event.type }}"
)
MAX_TEXT = 30_000  # characters; Feishu caps a text message's body at 150 KB


class FeishuAppOptions(TargetOptions):
    """What a ``feishu_app`` target adds to the common target fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    app_id: str = Field(min_length=1)
    app_secret: str = Field(min_length=1, repr=False)
    api_base: str = Field(FEISHU_API, description="Lark: https://open.larksuite.com.")
    mode: Literal["group", "reply"] = "group"
    chat_id: str | None = Field(None, min_length=1, description="The group (oc_…); mode group.")
    reply_in_thread: bool = Field(True, description="mode reply: answer inside the thread.")

    @field_validator("api_base")
    @classmethod
    def _base(cls, value: str, info: ValidationInfo) -> str:
        context = info.context if isinstance(info.context, dict) else {}
        check_url(value, allow_private=bool(context.get("allow_private", True)))
        return value.rstrip("/")

    @model_validator(mode="after")
    def _chat_for_group(self) -> FeishuAppOptions:
        if self.mode == "group" and self.chat_id is None:
            raise ValueError("chat_id is required in mode group")
        return self


def message_uuid(delivery_id: str) -> str:
    """Feishu's ``uuid`` (≤ 50 characters): the same on every attempt of a delivery."""
    return hashlib.sha256(delivery_id.encode()).hexdigest()[:32]


class FeishuAppTarget(BaseTarget):
    """Posts text as a Feishu app bot: to ``chat_id``, or in reply to the event."""

    kind: ClassVar[str] = "feishu_app"
    family: ClassVar[str] = "notify"
    Options: ClassVar[type[FeishuAppOptions]] = FeishuAppOptions
    # Feishu: 5 messages a second to one group, shared by the bots in it.
    default_rate_limits: ClassVar[tuple[str, ...]] = ("5/s",)

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        options = config.options
        if not isinstance(options, FeishuAppOptions):
            options = FeishuAppOptions.model_validate(options or {})
        try:
            check_url(options.api_base, config.allow_private)
        except ValueError as exc:
            raise ConfigError([f"targets.{config.id}.api_base: {exc}"]) from None
        self.options: FeishuAppOptions = options
        self.tokens = TenantTokens(
            options.api_base, options.app_id, options.app_secret, config.allow_private
        )

    def request(self, context: DeliveryContext) -> tuple[str, dict[str, Any]]:
        """The URL and body of the one call this delivery makes."""
        text = context.render(DEFAULT_TEMPLATE)[:MAX_TEXT]
        body: dict[str, Any] = {
            "msg_type": "text",
            "content": json.dumps({"text": text}, ensure_ascii=False),
            "uuid": message_uuid(context.delivery_id),
        }
        base = f"{self.options.api_base}/open-apis/im/v1/messages"
        if self.options.mode == "group":
            body["receive_id"] = self.options.chat_id
            return f"{base}?receive_id_type=chat_id", body
        thread = context.thread
        message_id = thread.message_id
        if thread.source_kind not in (None, "feishu") or not message_id:
            raise PermanentDeliveryError(
                "mode reply: the event has no Feishu message to answer "
                "(only events from a feishu source carry one)"
            )
        body["reply_in_thread"] = self.options.reply_in_thread
        return f"{base}/{message_id}/reply", body

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        url, body = self.request(context)
        timeout = self.config.timeout or context.timeout
        pools = guarded_pool(self.config.allow_private)

        def call(token: str) -> dict[str, Any]:
            response = send(pools, "POST", url, timeout=timeout, json=body, headers=bearer(token))
            return feishu_data(response, "Feishu refused the message")

        data = with_token(self.tokens, context.state, timeout, call)
        return DeliveryResult(status=200, excerpt=f"sent {data.get('message_id', '')}".strip())
