"""``dingtalk_app`` target: an enterprise-internal app's robot (企业内部应用机器人).

``mode: group`` posts to ``/v1.0/robot/groupMessages/send`` with an app access token
(``AccessTokens``: cached in Redis for all workers); ``mode: reply`` answers through
the ``sessionWebhook`` DingTalk put on the inbound robot message (``event.reply``)
while it is valid. The
v1.0 API answers errors as HTTP status + ``{code, message}``: a rejected token is
refreshed once and the message re-sent in the same attempt; 429/5xx and QPS-limit
codes are retryable; anything else is permanent with DingTalk's own message.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from relay.config.models import TargetConfig
from relay.errors import ConfigError, PermanentDeliveryError
from relay.state import keys
from relay.templates import check_template
from workers.net.addresses import check_url, safe_url
from workers.net.http import HttpAnswer
from workers.net.outcomes import classify
from workers.net.shared_tokens import SharedToken, cache_life
from workers.targets.base import BaseTarget, DeliveryContext, DeliveryResult, TargetOptions
from workers.targets.dingtalk_messages import (
    DEFAULT_MARKDOWN_TEMPLATE,
    DEFAULT_TEXT_TEMPLATE,
    DEFAULT_TITLE,
    DINGTALK_SOURCES,
    api_outcome,
    collect_mentions,
    fit_param,
    json_body,
    post_json,
    render_message,
    render_option,
    robot_outcome,
    text_or_markdown,
    token_rejected,
)

SESSION_HOSTS = ["oapi.dingtalk.com", "api.dingtalk.com"]


class DingTalkAppOptions(TargetOptions):
    """What a ``dingtalk_app`` target adds to the common target fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    mode: Literal["group", "reply"] = "group"
    app_key: str | None = Field(None, description="The app's AppKey (Client ID).")
    app_secret: str | None = Field(None, repr=False, description="AppSecret (Client Secret).")
    robot_code: str | None = Field(None, description="The robot's code; default app_key.")
    open_conversation_id: str | None = Field(None, min_length=1)
    api_base: str = "https://api.dingtalk.com"
    msgtype: Literal["text", "markdown"] = "markdown"
    title: str = DEFAULT_TITLE
    session_hosts: list[str] = Field(default_factory=lambda: list(SESSION_HOSTS))

    @field_validator("api_base")
    @classmethod
    def _base(cls, value: str, info: ValidationInfo) -> str:
        context = info.context if isinstance(info.context, dict) else {}
        check_url(value, allow_private=bool(context.get("allow_private", True)))
        return value.rstrip("/")

    @field_validator("title")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return check_template(value)

    @field_validator("session_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        return [host.strip().lower().rstrip(".") for host in value]

    @model_validator(mode="after")
    def _credentials(self) -> DingTalkAppOptions:
        for name in ("app_key", "app_secret", "robot_code"):
            if getattr(self, name) == "":
                raise ValueError(f"{name} is empty (is its environment variable set?)")
        if self.mode == "group":
            missing = [n for n in ("app_key", "app_secret") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"mode group needs {' and '.join(missing)}")
        return self


class AccessTokens(SharedToken):
    """The app's access token, shared by every worker (``workers.net.shared_tokens``):
    DingTalk hands out the same token while it is valid."""

    def __init__(self, api_base: str, app_key: str, app_secret: str, allow_private: bool):
        digest = hashlib.sha256(f"{api_base}\n{app_key}".encode()).hexdigest()[:32]
        super().__init__(keys.dingtalk_token(digest))
        self.url = f"{api_base}/v1.0/oauth2/accessToken"
        self.credentials = {"appKey": app_key, "appSecret": app_secret}
        self.allow_private = allow_private

    def fetch(self, timeout: float) -> tuple[str, int]:
        """POST appKey/appSecret; the token and how long (s) it may be cached."""
        response = post_json(
            self.url, self.credentials, allow_private=self.allow_private, timeout=timeout
        )
        body = json_body(response) or {}
        token, expires = body.get("accessToken"), body.get("expireIn")
        if 200 <= response.status < 300 and isinstance(token, str) and token:
            return token, cache_life(expires)
        if response.status in (408, 425, 429) or response.status >= 500:
            classify(response)
        code, message = body.get("code") or "", str(body.get("message") or "")[:300]
        raise PermanentDeliveryError(
            f"DingTalk refused an access token (HTTP {response.status} {code}: {message}); "
            "check app_key and app_secret",
            status=response.status,
        )


class DingTalkAppTarget(BaseTarget):
    """Sends through an app robot: to a group, or as a reply in the inbound conversation."""

    kind: ClassVar[str] = "dingtalk_app"
    family: ClassVar[str] = "notify"
    Options: ClassVar[type[DingTalkAppOptions]] = DingTalkAppOptions
    default_rate_limits: ClassVar[tuple[str, ...]] = ("20/min",)

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        options = config.options
        if not isinstance(options, DingTalkAppOptions):
            options = DingTalkAppOptions.model_validate(options or {})
        try:
            check_url(options.api_base, config.allow_private)
        except ValueError as exc:
            raise ConfigError([f"targets.{config.id}.api_base: {exc}"]) from None
        self.options: DingTalkAppOptions = options
        self.tokens: AccessTokens | None = None
        if options.app_key and options.app_secret:
            self.tokens = AccessTokens(
                options.api_base, options.app_key, options.app_secret, config.allow_private
            )

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        if self.options.mode == "reply":
            return self.reply(context)
        return self.group(context)

    # -- mode: group ---------------------------------------------------------------

    def group_body(self, context: DeliveryContext) -> dict[str, Any]:
        """The groupMessages/send body; mentions are ``@name`` text (the API cannot @)."""
        opts = self.options
        conversation = opts.open_conversation_id
        group = context.event.group
        if conversation is None and context.source_kind in DINGTALK_SOURCES and group:
            conversation = group.id
        if not conversation:
            raise PermanentDeliveryError(
                "no group to send to: set open_conversation_id (only events from a "
                "DingTalk source bring their own group's id)"
            )
        mentions = collect_mentions(context, real=False)
        markdown = opts.msgtype == "markdown"
        text = render_message(
            context, DEFAULT_MARKDOWN_TEMPLATE if markdown else DEFAULT_TEXT_TEMPLATE, mentions
        )
        if markdown:
            title = render_option(context, "title", opts.title) or "message"
            key, param = "sampleMarkdown", fit_param({"title": title, "text": text}, "text")
        else:
            key, param = "sampleText", fit_param({"content": text}, "content")
        return {
            "msgKey": key,
            "msgParam": param,
            "openConversationId": conversation,
            "robotCode": opts.robot_code or opts.app_key,
        }

    def group(self, context: DeliveryContext) -> DeliveryResult:
        assert self.tokens is not None  # the options require app_key and app_secret
        body = self.group_body(context)  # template errors before any network call
        timeout = self.config.timeout or context.timeout
        url = f"{self.options.api_base}/v1.0/robot/groupMessages/send"
        token = self.tokens.get(context.state, timeout)
        response = self._post(url, body, token, timeout)
        if token_rejected(response):  # expired or revoked early: one refresh, one resend
            token = self.tokens.get(context.state, timeout, rejected=token)
            response = self._post(url, body, token, timeout)
        return api_outcome(response)

    def _post(self, url: str, body: dict[str, Any], token: str, timeout: float) -> HttpAnswer:
        return post_json(
            url,
            body,
            allow_private=self.config.allow_private,
            timeout=timeout,
            headers={"x-acs-dingtalk-access-token": token},
        )

    # -- mode: reply ---------------------------------------------------------------

    def session_url(self, context: DeliveryContext) -> str:
        """The event's sessionWebhook, if it is still valid and may be posted to."""
        handle = context.thread.reply
        if handle is None or handle.kind != "dingtalk_session":
            raise PermanentDeliveryError(
                "mode reply: the event has no DingTalk session webhook "
                "(only messages from a dingtalk_robot source carry one)"
            )
        expires = handle.expires_at
        if expires is not None:
            expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
            if datetime.now(UTC) >= expires:
                raise PermanentDeliveryError(
                    f"the session webhook expired at {expires.isoformat(timespec='seconds')}; "
                    "DingTalk keeps it for about 90 minutes after the message"
                )
        where = safe_url(handle.url)
        try:
            check_url(handle.url, self.config.allow_private)
            parts = urlsplit(handle.url)
            host = (parts.hostname or "").rstrip(".")
        except ValueError as exc:
            raise PermanentDeliveryError(f"session webhook {where}: {exc}") from None
        if host not in self.options.session_hosts:
            raise PermanentDeliveryError(
                f"session webhook {where}: host {host} is not in session_hosts"
            )
        if parts.scheme != "https" and not self.config.allow_private:
            raise PermanentDeliveryError(f"session webhook {where}: must be https")
        return handle.url

    def reply(self, context: DeliveryContext) -> DeliveryResult:
        """Custom-robot body (text/markdown with real @-mentions), no signature needed."""
        url = self.session_url(context)
        opts = self.options
        mentions = collect_mentions(context, real=True)
        markdown = opts.msgtype == "markdown"
        text = render_message(
            context, DEFAULT_MARKDOWN_TEMPLATE if markdown else DEFAULT_TEXT_TEMPLATE, mentions
        )
        title = render_option(context, "title", opts.title) if markdown else ""
        body = text_or_markdown(opts.msgtype, text, title, mentions)
        timeout = self.config.timeout or context.timeout
        response = post_json(url, body, allow_private=self.config.allow_private, timeout=timeout)
        return robot_outcome(response, "DingTalk session webhook")
