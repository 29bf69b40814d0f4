"""``slack`` target: post each event to a Slack channel as an mrkdwn message.

Two modes, chosen by the options: an incoming webhook (``webhook_url``; the URL is the
credential and fixes the channel) or ``chat.postMessage`` with a bot token (``token``
+ ``channel``). Slack answers the two differently, and both must be read beyond the
HTTP status: a webhook says what is wrong in a plain-text body (switch on the text,
the status varies by code), the Web API says it in an HTTP 200 ``{"ok": false}``.

Slack has no idempotency key: a retry after a timeout that Slack had in fact accepted
posts the message twice. Rate limits are ~1 message a second per channel, so a 429
makes the whole target wait (``TargetThrottled``) rather than each queued delivery
spending an attempt on its own 429.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from markupsafe import Markup
from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from relay.config.models import TargetConfig
from relay.config.people import Mention
from relay.errors import (
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    TargetThrottled,
)
from workers.net.addresses import check_url
from workers.net.http import HttpAnswer, guarded_pool, send
from workers.net.outcomes import classify, excerpt, parse_retry_after, response_text
from workers.targets.base import BaseTarget, DeliveryContext, DeliveryResult, TargetOptions
from workers.targets.markup import slack_escape, slack_url
from workers.targets.placeholders import TOKEN, defuse, placeholders

SECTION_LIMIT = 3000  # characters of mrkdwn in one section block
MAX_SECTIONS = 50  # blocks in one message

# Every ``{{ … }}`` value is escaped for mrkdwn (``workers.targets.markup``): event text
# shows as typed. Extras: ``escape`` (the same escaping, for explicit use), ``link`` and
# ``at`` (real ``<@U…>`` mentions, or ``@name`` where the people map has none).
DEFAULT_TEMPLATE = """\
{% if event.group %}*{{ event.group.name or event.group.id }}*{% endif %}
{% if event.sender %} · {{ event.sender.name or event.sender.id }}{% endif %}

{% if event.text %}
{{ event.text }}
{% elif event.type != "message.created" %}
_{{ event.type }}_
{% endif %}
{% for file in event.files %}
:paperclip: {{ link(file.url, file.name) if file.url else file.name }}
{% endfor %}
{% if at %}
cc {{ at | join(" ") }}
{% endif %}
"""

_WEBHOOK_URL_GONE = "create a new incoming webhook and update webhook_url"
# Incoming webhook errors: plain-text codes in a 4xx body; all permanent.
WEBHOOK_ERRORS = {
    "invalid_payload": "Slack could not read the message; check the template and blocks",
    "no_text": "the rendered message is empty; check the template",
    "too_many_attachments": "the message has too many attachments",
    "action_prohibited": "a workspace admin restriction forbids posting through this webhook",
    "posting_to_general_channel_denied": (
        "only admins may post to the workspace's general channel; "
        "create the webhook for another channel"
    ),
    "invalid_token": f"the webhook URL's token is invalid; {_WEBHOOK_URL_GONE}",
    "team_disabled": f"the Slack workspace is disabled; {_WEBHOOK_URL_GONE}",
    "no_team": f"the Slack workspace no longer exists; {_WEBHOOK_URL_GONE}",
    "no_service": f"the webhook was removed or disabled; {_WEBHOOK_URL_GONE}",
    "no_service_id": f"the webhook URL is incomplete; {_WEBHOOK_URL_GONE}",
    "no_active_hooks": f"the webhook's app is disabled; {_WEBHOOK_URL_GONE}",
    "channel_not_found": f"the webhook's channel no longer exists; {_WEBHOOK_URL_GONE}",
    "channel_is_archived": (
        f"the webhook's channel is archived; unarchive it or {_WEBHOOK_URL_GONE}"
    ),
}
_TOKEN_BAD = "reinstall the app or update token (a bot token, xoxb-…)"
# chat.postMessage ``error`` values that a configuration change must fix.
API_ERRORS = {
    "channel_not_found": "channel {channel} was not found; check channel (an id such as "
    "C0123456789) and that the token belongs to that workspace",
    "not_in_channel": "the app is not in channel {channel}; invite it (/invite @app) "
    "or grant the chat:write.public scope",
    "is_archived": "channel {channel} is archived; unarchive it or change channel",
    "msg_too_long": "the message is too long for Slack; shorten the template (truncate_text)",
    "no_text": "the rendered message is empty; check the template",
    "invalid_auth": f"Slack rejected the token; {_TOKEN_BAD}",
    "not_authed": f"no token reached Slack; {_TOKEN_BAD}",
    "account_inactive": f"the token's user or workspace is deactivated; {_TOKEN_BAD}",
    "token_revoked": f"the token was revoked or the app removed; {_TOKEN_BAD}",
    "missing_scope": "the token lacks the {needed} scope; add it to the app and reinstall",
    "restricted_action": "a workspace preference forbids the app to post in {channel}",
    "restricted_action_read_only_channel": "channel {channel} is read-only",
    "restricted_action_thread_only_channel": "channel {channel} only accepts thread replies",
    "ekm_access_denied": "workspace admins have suspended posting (EKM)",
    "no_permission": "the token may not post to {channel}; add the app to the channel",
    "invalid_blocks": "Slack refused the blocks; check the template's mrkdwn",
}
# Slack's own transient failures: worth another attempt.
API_RETRYABLE = {
    "ratelimited",
    "rate_limited",
    "fatal_error",
    "internal_error",
    "service_unavailable",
    "request_timeout",
    "team_added_to_org",
    "org_login_required",
}


def escape(text: object) -> Markup:
    """User content as mrkdwn that shows exactly the text (``markup.slack_escape``)."""
    return Markup(slack_escape(str(text)))


def link(url: str, label: str) -> Markup:
    """``<url|label>``; ``|`` and ``>`` cannot appear raw inside the brackets."""
    return Markup(f"<{slack_url(str(url))}|{slack_escape(str(label))}>")


def mention_tag(mention: Mention) -> str:
    """A real ``<@U…>`` mention when the people map knows the Slack id, else ``@name``."""
    user_id = mention.id_on("slack")
    return f"<@{slack_url(user_id)}>" if user_id else "@" + slack_escape(mention.name)


def sections(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, never cut inside ``<…>`` or
    ``&…;`` (a mention, a link, an escaped character), preferring a line break."""
    chunks: list[str] = []
    while len(text) > limit:
        cut = limit
        head = text[:cut]
        if head.rfind("<") > head.rfind(">"):
            cut = head.rfind("<")
        elif head.rfind("&") > head.rfind(";") and head.rfind("&") > cut - 8:
            cut = head.rfind("&")
        if cut <= 0:
            cut = limit
        newline = text.rfind("\n", 0, cut)
        if newline > cut // 2:
            cut = newline + 1
        chunks.append(text[:cut])
        text = text[cut:]
    return [*chunks, text] if text else chunks


class SlackOptions(TargetOptions):
    """What a ``slack`` target adds: a webhook URL, or a bot token and a channel."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    webhook_url: str | None = Field(None, repr=False)
    token: str | None = Field(None, repr=False)
    channel: str | None = Field(None, min_length=1, max_length=256)
    api_base: str = "https://slack.com/api"
    blocks: bool = False
    in_thread: bool = Field(
        False,
        description="Post in the thread of the event's message (token mode; for "
        "confirmations of tasks and stored files).",
    )

    @field_validator("webhook_url", "api_base")
    @classmethod
    def _http_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            context = info.context if isinstance(info.context, dict) else {}
            check_url(value, allow_private=bool(context.get("allow_private", True)))
        return value

    @field_validator("token")
    @classmethod
    def _token_shape(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("xox") or any(c.isspace() for c in value)):
            raise ValueError("must be a Slack token (xoxb-… for a bot), without spaces")
        return value

    @model_validator(mode="after")
    def _one_mode(self) -> SlackOptions:
        if (self.webhook_url is None) == (self.token is None):
            raise ValueError("set webhook_url (incoming webhook) or token + channel, not both")
        if self.token is not None and self.channel is None:
            raise ValueError("channel is required with token")
        if self.webhook_url is not None and self.channel is not None:
            raise ValueError("channel is only used with token; a webhook posts to its own channel")
        return self


def thread_ts(context: DeliveryContext) -> str | None:
    """The ``ts`` of the thread the event belongs to: its root if it is a reply, else
    the message itself (Slack message ids are ``<channel>:<ts>``)."""
    thread = context.thread
    if thread.source_kind not in (None, "slack"):
        return None
    message = thread.root or thread.message_id
    return (message.rpartition(":")[2] or None) if message else None


class SlackTarget(BaseTarget):
    """One Slack channel, through an incoming webhook or ``chat.postMessage``."""

    kind: ClassVar[str] = "slack"
    family: ClassVar[str] = "notify"
    Options: ClassVar[type[SlackOptions]] = SlackOptions
    # Slack: about one message a second per channel, short bursts tolerated.
    default_rate_limits: ClassVar[tuple[str, ...]] = ("1/s",)

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        options = config.options
        if not isinstance(options, SlackOptions):
            options = SlackOptions.model_validate(options or {})
        key = "webhook_url" if options.webhook_url is not None else "api_base"
        try:
            check_url(getattr(options, key), config.allow_private)
        except ValueError as exc:
            raise ConfigError([f"targets.{config.id}.{key}: {exc}"]) from None
        self.options: SlackOptions = options

    def payload(self, context: DeliveryContext) -> dict[str, Any]:
        """``text`` (mrkdwn) always, for notifications; ``blocks`` when enabled."""
        mentions = context.mentions
        at, valid = placeholders(mentions, "slack")
        text = context.render(
            DEFAULT_TEMPLATE, markup_escape=slack_escape, escape=escape, link=link, at=at
        )
        text = TOKEN.sub(lambda m: mention_tag(mentions[int(m.group(1))]), defuse(text, valid, str))
        payload: dict[str, Any] = {"text": text}
        if self.options.blocks and text:
            chunks = sections(text)
            payload["blocks"] = [
                {"type": "section", "text": {"type": "mrkdwn", "text": chunk}}
                for chunk in chunks[:MAX_SECTIONS]
            ]
        if self.options.channel is not None:
            payload["channel"] = self.options.channel
        thread = thread_ts(context) if self.options.in_thread else None
        if thread is not None:
            payload["thread_ts"] = thread
        return payload

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        body = json.dumps(self.payload(context), ensure_ascii=False).encode()
        headers = {"content-type": "application/json; charset=utf-8"}
        timeout = self.config.timeout or context.timeout
        pools = guarded_pool(self.config.allow_private)
        if self.options.webhook_url is not None:
            url = self.options.webhook_url
            response = send(pools, "POST", url, timeout=timeout, data=body, headers=headers)
            return webhook_outcome(response)
        headers["authorization"] = f"Bearer {self.options.token}"
        url = self.options.api_base.rstrip("/") + "/chat.postMessage"
        response = send(pools, "POST", url, timeout=timeout, data=body, headers=headers)
        return api_outcome(response, self.options.channel or "?")


def _throttled(response: HttpAnswer, message: str, text: str) -> DeliveryError:
    """Slack limits per channel, which is the whole target: it waits, if Slack said how long."""
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    status = response.status
    if retry_after is None:
        return RetryableDeliveryError(message, status=status, excerpt=text)
    return TargetThrottled(message, retry_after=retry_after, status=status, excerpt=text)


def webhook_outcome(response: HttpAnswer) -> DeliveryResult:
    """``ok`` is success; a known plain-text code is permanent whatever the status."""
    text = excerpt(response_text(response))
    code = text.strip()
    if response.status == 429:
        raise _throttled(response, "Slack rate limit (HTTP 429)", text)
    if code in WEBHOOK_ERRORS:
        message = f"Slack webhook: {code}: {WEBHOOK_ERRORS[code]}"
        raise PermanentDeliveryError(message, status=response.status, excerpt=text)
    return classify(response)


def api_outcome(response: HttpAnswer, channel: str) -> DeliveryResult:
    """``{"ok": true}`` is success; ``ok: false`` is read by its ``error`` code."""
    text = excerpt(response_text(response))
    if response.status == 429:
        raise _throttled(response, "Slack rate limit (HTTP 429)", text)
    if not 200 <= response.status < 300:
        return classify(response)
    try:
        data = json.loads(response.body)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        raise PermanentDeliveryError(
            "chat.postMessage: the answer is not Slack Web API JSON; check api_base",
            status=response.status,
            excerpt=text,
        )
    if data["ok"]:
        return DeliveryResult(status=response.status, excerpt=text)
    code = str(data.get("error") or "unknown_error")
    if code in ("ratelimited", "rate_limited"):
        raise _throttled(response, f"chat.postMessage: {code}", text)
    if code in API_RETRYABLE:
        raise RetryableDeliveryError(
            f"chat.postMessage: {code} (a transient Slack failure)",
            status=response.status,
            excerpt=text,
        )
    needed = str(data.get("needed") or "chat:write")
    hint = API_ERRORS.get(code, "Slack refused the message").format(channel=channel, needed=needed)
    raise PermanentDeliveryError(
        f"chat.postMessage: {code}: {hint}", status=response.status, excerpt=text
    )
