"""What the two DingTalk targets share: templates, mentions, signing, robot-style answers.

DingTalk only notifies a mentioned person when two things agree: their userId (or
mobile) is listed in the message's ``at`` block *and* ``@<userId>`` (or ``@<mobile>``)
appears in the text. ``Mentions`` builds both from the people map, and
``ensure_mentions`` appends any tag a custom template left out, so a mention is
never silently lost. The custom robot and a robot message's ``sessionWebhook`` answer
alike (HTTP 200 with ``errcode``); ``robot_outcome`` classifies those answers, and
``api_outcome`` those of the app robots' v1.0 API (HTTP status + ``{code, message}``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from relay import __version__
from relay.config.people import Mention
from relay.errors import PermanentDeliveryError, RetryableDeliveryError, TargetThrottled
from relay.templates import TemplateError, render
from workers.net.http import HttpAnswer, guarded_pool, send
from workers.net.outcomes import classify, excerpt, parse_retry_after, response_text
from workers.targets.base import DeliveryContext, DeliveryResult
from workers.targets.markup import markdown_escaper
from workers.targets.placeholders import CLOSE, OPEN, TOKEN, defuse

DINGTALK_SOURCES = frozenset({"dingtalk_robot", "dingtalk_events"})
BLOCKED_FOR = 600.0  # 130101: DingTalk blocks the robot for 10 minutes
MAX_PARAM = 15_000  # bytes of msgParam the v1.0 robot API accepts
QPS_WAIT = 2.0  # seconds; DingTalk's advice for its QPS-limit codes is "wait about 1 s"
MARKDOWN_ESCAPE = markdown_escaper()  # markdown messages: event text shows as typed

DEFAULT_TITLE = "{{ event.group.name or event.group.id if event.group else event.source }}"
DEFAULT_TEXT_TEMPLATE = """\
{% if event.group %}[{{ event.group.name or event.group.id }}] {% endif %}\
{% if event.sender %}{{ event.sender.name or event.sender.id }}: {% endif %}\
{{ event.text or event.type }}
{% for file in event.files %}
📎 {{ file.name }}{% if file.url %} {{ file.url }}{% endif %}

{% endfor %}
{{ at | join(" ") }}"""
DEFAULT_MARKDOWN_TEMPLATE = """\
{% if event.group %}#### {{ event.group.name or event.group.id }}

{% endif %}
{% if event.sender %}**{{ event.sender.name or event.sender.id }}**: {% endif %}\
{{ event.text or event.type }}

{% for file in event.files %}
- 📎 {% if file.url %}[{{ file.name }}]({{ file.url }}){% else %}{{ file.name }}{% endif %}

{% endfor %}

{{ at | join(" ") }}"""


@dataclass
class Mentions:
    """One message's mentions: ``tags`` for the text (one per event mention, in order),
    ``user_ids`` and ``mobiles`` for the ``at`` block; ``real`` says whether the message
    type can @ at all."""

    real: bool
    tags: list[str] = field(default_factory=list)
    user_ids: list[str] = field(default_factory=list)
    mobiles: list[str] = field(default_factory=list)
    at_all: bool = False

    def at_block(self) -> dict[str, Any]:
        return {"atUserIds": self.user_ids, "atMobiles": self.mobiles, "isAtAll": self.at_all}

    def real_tags(self) -> list[str]:
        """The tags DingTalk needs in the text for the ``at`` block to notify anyone."""
        return [f"@{value}" for value in [*self.user_ids, *self.mobiles]]

    def tag(self, mention: Any) -> str:
        """A mention's tag: ``@<userId>``, else ``@<mobile>``, else ``@<name>``."""
        if not isinstance(mention, Mention):
            return f"@{mention}"
        user_id = mention.id_on("dingtalk") if self.real else None
        mobile = mention.id_on("dingtalk_mobile") if self.real and not user_id else None
        return f"@{user_id or mobile or mention.name}"


def collect_mentions(
    context: DeliveryContext,
    *,
    real: bool,
    user_ids: Iterable[str] = (),
    mobiles: Iterable[str] = (),
    at_all: bool = False,
) -> Mentions:
    """The event's mentions as DingTalk mentions (``real``) or as plain ``@name`` text.

    A person's userId wins over their mobile, so nobody is @-mentioned twice; people
    the map does not know on DingTalk appear as ``@name``. Static extras come last.
    """
    found = Mentions(real=real, at_all=at_all)
    for mention in context.mentions:
        tag = found.tag(mention)
        if real and mention.id_on("dingtalk"):
            _add(found.user_ids, tag[1:])
        elif real and mention.id_on("dingtalk_mobile"):
            _add(found.mobiles, tag[1:])
        found.tags.append(tag)
    for value in user_ids:
        _add(found.user_ids, value)
    for value in mobiles:
        _add(found.mobiles, value)
    return found


def _add(values: list[str], value: str) -> None:
    if value not in values:
        values.append(value)


def render_message(
    context: DeliveryContext, default: str, mentions: Mentions, *, markdown: bool | None = None
) -> str:
    """The configured (or default) template with ``at`` (each mention's tag, in the
    order of ``mentions``); every real mention tag is then made sure of.

    Markdown (``markdown``, else whether ``default`` is the markdown template) escapes
    every value the template outputs, so event text shows as typed; the tags go in as
    placeholders and come out as written, since DingTalk matches ``@<userId>`` verbatim.
    """
    if markdown is None:
        markdown = default == DEFAULT_MARKDOWN_TEMPLATE
    if not markdown:
        text = context.render(default, at=list(mentions.tags))
        return ensure_mentions(text, mentions.real_tags())
    tags = list(mentions.tags)
    at = [f"{OPEN}{i}{CLOSE}" for i in range(len(tags))]
    text = context.render(default, markup_escape=MARKDOWN_ESCAPE, at=at)
    text = defuse(text, set(range(len(tags))), str)
    real = set(mentions.real_tags())
    text = TOKEN.sub(lambda m: _markdown_tag(tags[int(m.group(1))], real), text)
    return ensure_mentions(text, mentions.real_tags())


def _markdown_tag(tag: str, real: set[str]) -> str:
    """A real ``@<userId>`` as it is; an ``@name`` escaped like any other text."""
    return tag if tag in real else "@" + MARKDOWN_ESCAPE(tag[1:])


def ensure_mentions(text: str, tags: Iterable[str]) -> str:
    """Append the tags a template did not write: without them DingTalk notifies nobody."""
    missing = [tag for tag in tags if not _contains_tag(text, tag)]
    return f"{text}\n\n{' '.join(missing)}".strip() if missing else text


def _contains_tag(text: str, tag: str) -> bool:
    start = text.find(tag)
    while start >= 0:
        end = start + len(tag)
        if end == len(text) or not (text[end].isalnum() or text[end] in "_-"):
            return True
        start = text.find(tag, start + 1)
    return False


def render_option(context: DeliveryContext, name: str, source: str) -> str:
    """A small templated option (title, URLs); a render error names the option."""
    try:
        return render(source, event=context.event, mentions=context.mentions)
    except TemplateError as exc:
        raise PermanentDeliveryError(f"{name}: {exc}") from None


def with_keyword(text: str, keyword: str | None, *also: str) -> str:
    """Prefix the robot's security keyword unless the message already carries it."""
    if not keyword or any(keyword in part for part in (text, *also)):
        return text
    return f"{keyword}\n{text}"


def sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's 加签: Base64(HMAC-SHA256(secret, "<timestamp>\\n<secret>")), not URL-encoded."""
    message = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def text_or_markdown(msgtype: str, text: str, title: str, mentions: Mentions) -> dict[str, Any]:
    """A custom-robot (or sessionWebhook) body of type text or markdown, with ``at``."""
    body: dict[str, Any] = {"msgtype": msgtype, "at": mentions.at_block()}
    if msgtype == "text":
        body["text"] = {"content": text}
    else:
        body["markdown"] = {"title": title or "message", "text": text}
    return body


def post_json(
    url: str,
    body: dict[str, Any],
    *,
    allow_private: bool,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> HttpAnswer:
    """POST ``body`` as UTF-8 JSON (DingTalk insists on UTF-8) through the guarded pools."""
    return send(
        guarded_pool(allow_private),
        "POST",
        url,
        timeout=timeout,
        data=json.dumps(body, ensure_ascii=False).encode(),
        headers={
            "content-type": "application/json; charset=utf-8",
            "user-agent": f"group-relay/{__version__}",
            **(headers or {}),
        },
    )


def json_body(response: HttpAnswer) -> dict[str, Any] | None:
    try:
        value = json.loads(response.body or b"null")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# errcode → what to fix; all of these end the delivery (the robot is misconfigured).
_HINTS = {
    310000: "the robot's security settings refused the message: set `keyword` to one of "
    "its keywords, check `secret` (加签), the IP allowlist, and this host's clock",
    40035: "the webhook URL has no access_token",
    300001: "the access_token in the webhook URL is not valid (robot removed or reset?)",
    400101: "the access_token in the webhook URL does not exist",
    400102: "the robot is disabled",
    400106: "the robot does not exist",
    400013: "the group was dissolved",
    400105: "DingTalk does not support this msgtype",
}


def robot_outcome(response: HttpAnswer, what: str) -> DeliveryResult:
    """Classify a custom-robot or sessionWebhook answer; ``what`` names the endpoint.

    Non-2xx goes through ``classify``. In a 2xx, ``errcode`` 0 is success; 130101 (and
    410100) mean DingTalk blocks the robot for 10 minutes; -1 is "system busy";
    every other code is permanent.
    """
    if not 200 <= response.status < 300:
        return classify(response)
    text = excerpt(response_text(response))
    status = response.status
    body = json_body(response)
    code = body.get("errcode") if body else None
    if isinstance(code, str) and code.lstrip("-").isdigit():
        code = int(code)
    if not isinstance(code, int) or isinstance(code, bool):
        raise RetryableDeliveryError(
            f"{what} answered HTTP {status} without an errcode", status=status, excerpt=text
        )
    if code == 0:
        return DeliveryResult(status=status, excerpt=text)
    errmsg = str((body or {}).get("errmsg") or "")[:300]
    said = f"{what} answered errcode {code} ({errmsg})" if errmsg else f"{what}: errcode {code}"
    if code in (130101, 410100):
        raise TargetThrottled(
            f"{said}: over 20 messages a minute, DingTalk blocks the robot for 10 minutes",
            retry_after=BLOCKED_FOR,
            status=status,
            excerpt=text,
        )
    if code == -1:
        raise RetryableDeliveryError(f"{said}: DingTalk is busy", status=status, excerpt=text)
    hint = _HINTS.get(code)
    raise PermanentDeliveryError(f"{said}: {hint}" if hint else said, status=status, excerpt=text)


# -- the v1.0 API (app robots) ------------------------------------------------------

_API_HINTS = {
    "invalidParameter.robotCode": "check robot_code (the app's robot, and the robot in the group)",
    "invalid.openConversationId": "check open_conversation_id; the robot must be in that group",
    "Forbidden.AccessDenied": "give the app the permission qyapi_robot_sendmsg",
    "bot.stopped": "the robot is disabled",
}


def token_rejected(response: HttpAnswer) -> bool:
    """DingTalk refuses an expired or revoked token with ``InvalidAuthentication``
    (seen with HTTP 400 and 401); a bare 401 means the same."""
    if response.status == 401:
        return True
    body = json_body(response) if 400 <= response.status < 500 else None
    return body is not None and body.get("code") == "InvalidAuthentication"


def fit_param(param: dict[str, str], field: str) -> str:
    """``param`` as the JSON string msgParam, ``field`` shortened to fit 15,000 bytes."""
    encoded = json.dumps(param, ensure_ascii=False)
    while len(encoded.encode()) > MAX_PARAM and len(param[field]) > 1:
        text = param[field]
        over = len(encoded.encode()) - MAX_PARAM
        param = {**param, field: text[: max(0, len(text) - max(over // 3, 1) - 1)] + "…"}
        encoded = json.dumps(param, ensure_ascii=False)
    return encoded


def api_outcome(response: HttpAnswer) -> DeliveryResult:
    """Classify a v1.0 API answer (HTTP status + ``{code, message}``)."""
    status = response.status
    if 200 <= status < 300:
        return DeliveryResult(status=status, excerpt=excerpt(response_text(response)))
    body = json_body(response) or {}
    code = str(body.get("code") or "")
    message = str(body.get("message") or "")[:300]
    said = f"DingTalk API HTTP {status} {code}: {message}".rstrip(": ")
    text = excerpt(response_text(response))
    if status in (408, 425, 429) or status >= 500:
        return classify(response)
    if "QpsLimit" in code or code.startswith("Throttling"):
        wait = parse_retry_after(response.headers.get("retry-after")) or QPS_WAIT
        raise TargetThrottled(said, retry_after=wait, status=status, excerpt=text)
    if token_rejected(response):  # even a token fetched a moment ago: try again later
        raise RetryableDeliveryError(f"{said} (after a token refresh)", status=status, excerpt=text)
    hint = next((h for prefix, h in _API_HINTS.items() if code.startswith(prefix)), None)
    raise PermanentDeliveryError(f"{said} ({hint})" if hint else said, status=status, excerpt=text)
