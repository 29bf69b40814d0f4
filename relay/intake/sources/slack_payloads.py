"""Slack payloads → ``GroupEvent``: Events API callbacks and slash commands.

Kept apart from ``slack.py`` (verification and the HTTP side) so the mapping can be
read as one table. Every field is read defensively: a signed body is authentic, not
necessarily well-formed, and a wrong type must become a 400/422, never a crash.
Field names follow Slack's event reference (docs.slack.dev/reference/events).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from pydantic import ValidationError

from relay.config.paths import path_of
from relay.errors import BadRequest, Unprocessable
from relay.events import GroupEvent

# <@U123> or <@U123|name>: the users a message mentions.
_MENTION = re.compile(r"<@([A-Z0-9]{1,64})(?:\|([^<>|]{0,1024}))?>")
# Any of Slack's angle-bracket forms: <@U…|name>, <#C…|name>, <!here>, <!subteam^S…|@team>,
# <!date^…|fallback>, <https://…|label>, <mailto:…|label>.
_MARKUP = re.compile(r"<([^<>|]{1,4096})(?:\|([^<>]{0,4096}))?>")
_TS = re.compile(r"([0-9]{1,11})(?:\.([0-9]{1,9}))?")
_LATEST = 4102444800  # 2100-01-01: a larger "ts" is not seconds (app_mention's event_ts is µs)
RESPONSE_URL_TTL = timedelta(minutes=30)  # Slack: a response_url works for 30 minutes
RESPONSE_URL_HOSTS = ("https://hooks.slack.com/", "https://hooks.slack-gov.com/")

CREATED_SUBTYPES = {None, "bot_message", "file_share", "thread_broadcast", "me_message"}
JOIN_SUBTYPES = {"channel_join", "group_join"}
LEAVE_SUBTYPES = {"channel_leave", "group_leave"}
GROUP_SUBTYPES = {
    f"{kind}_{change}"
    for kind in ("channel", "group")
    for change in ("name", "topic", "purpose", "archive", "unarchive")
}
GROUP_EVENTS = {
    f"{kind}_{change}"
    for kind in ("channel", "group")
    for change in ("rename", "archive", "unarchive")
}


def text_of(obj: dict[str, Any], key: str) -> str | None:
    """``obj[key]`` if it is a non-empty string, else ``None``."""
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def _dict(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _party(party_id: str | None, name: str | None = None) -> dict[str, Any] | None:
    """A dict rather than a ``Party`` so an over-long id is a 422 naming the field."""
    return {"id": party_id, "name": name} if party_id else None


def parse_ts(value: Any) -> datetime | None:
    """Slack's ``"1515449522.000016"`` (or a number of seconds) as UTC; ``None`` if not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        value = f"{value:.6f}" if value == value and abs(value) < _LATEST else ""
    if not isinstance(value, str) or not (match := _TS.fullmatch(value)):
        return None
    seconds = int(match.group(1))
    if not 0 < seconds < _LATEST:
        return None
    micros = int((match.group(2) or "0")[:6].ljust(6, "0"))
    return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=micros)


def plain_text(markup: str) -> str:
    """Slack's message markup as a person reads it, so every target gets plain text.

    ``<@U1|ada>`` → ``@ada`` (``@U1`` without a name), ``<#C1|ops>`` → ``#ops``,
    ``<!here>`` → ``@here``, ``<!subteam^S1|@team>`` → ``@team``, ``<url|label>`` →
    ``label (url)``, ``<url>`` → ``url``; then ``&lt;``, ``&gt;`` and ``&amp;``, the only
    escapes Slack writes, are undone. The markup itself stays in ``raw``.
    """

    def one(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        sigil, rest = target[:1], target[1:]
        if sigil == "@":
            return "@" + (label or rest)
        if sigil == "#":
            return "#" + (label or rest)
        if sigil == "!":
            if label:
                return label
            return "@" + rest.split("^", 1)[0]
        if label and label != target:
            return f"{label} ({target})"
        return target

    text = _MARKUP.sub(one, markup)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def mentions_in(text: str | None) -> list[dict[str, Any]]:
    """Each user mentioned as ``<@U…>`` / ``<@U…|name>``, once, in order of appearance."""
    found: dict[str, str | None] = {}
    for match in _MENTION.finditer(text or ""):
        user_id, name = match.group(1), match.group(2) or None
        if found.get(user_id) is None:
            found[user_id] = name
    return [{"id": user_id, "name": name} for user_id, name in found.items()]


def _inline(element: Any) -> str:
    """One rich-text element as Slack's own text markup would write it."""
    if not isinstance(element, dict):
        return ""
    kind = element.get("type")
    if kind == "text":
        return text_of(element, "text") or ""
    if kind == "link":
        return text_of(element, "text") or text_of(element, "url") or ""
    if kind == "user" and (user := text_of(element, "user_id")):
        return f"<@{user}>"
    if kind == "channel" and (channel := text_of(element, "channel_id")):
        return f"<#{channel}>"
    if kind == "usergroup" and (group := text_of(element, "usergroup_id")):
        return f"<!subteam^{group}>"
    if kind == "broadcast" and (scope := text_of(element, "range")):
        return f"<!{scope}>"
    if kind == "emoji" and (name := text_of(element, "name")):
        return f":{name}:"
    return text_of(element, "fallback") or text_of(element, "text") or ""


def _section(element: Any) -> str:
    if not isinstance(element, dict) or not isinstance(element.get("elements"), list):
        return ""
    if element.get("type") == "rich_text_list":
        return "\n".join("- " + _section(item) for item in element["elements"])
    return "".join(_inline(item) for item in element["elements"])


def flatten_blocks(blocks: Any) -> str | None:
    """Plain text of ``rich_text`` and ``section`` blocks, for messages without ``text``."""
    lines: list[str] = []
    for block in blocks if isinstance(blocks, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "rich_text" and isinstance(block.get("elements"), list):
            lines.extend(_section(element) for element in block["elements"])
        elif isinstance(block.get("text"), dict):
            lines.append(text_of(block["text"], "text") or "")
    return "\n".join(line for line in lines if line) or None


def _files(items: Any) -> list[dict[str, Any]]:
    """Slack file objects as ``FileRef`` fields; ``ref`` is the file id (``F…``)."""
    files = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not (file_id := text_of(item, "id")):
            continue
        size = item.get("size")
        files.append(
            {
                "name": text_of(item, "name") or text_of(item, "title") or file_id,
                "size": size if isinstance(size, int) and not isinstance(size, bool) else None,
                "mime": text_of(item, "mimetype"),
                "url": text_of(item, "url_private"),
                "ref": file_id,
            }
        )
    return files


def _message_fields(event: dict[str, Any], bot_user_id: str | None) -> dict[str, Any]:
    """Group, sender, text, mentions and files of a message-shaped event."""
    channel, ts = text_of(event, "channel"), text_of(event, "ts")
    # A reply in a thread carries the root's ts as ``thread_ts``; the root itself carries
    # its own ts there (once it has replies), so only a different value is a reply.
    thread_ts = text_of(event, "thread_ts")
    answers = thread_ts if thread_ts != ts else None
    text = text_of(event, "text") or flatten_blocks(event.get("blocks"))
    mentions = mentions_in(text)
    if event.get("subtype") == "bot_message":
        sender = _party(
            text_of(event, "bot_id") or text_of(event, "user"), text_of(event, "username")
        )
    else:
        sender = _party(text_of(event, "user"), text_of(event, "username"))
    return {
        "group": _party(channel),
        "sender": sender,
        "text": plain_text(text) if text is not None else None,
        "mentions": mentions,
        "mentions_bot": bool(bot_user_id) and any(m["id"] == bot_user_id for m in mentions),
        "message_id": f"{channel}:{ts}" if channel and ts else None,
        "in_reply_to": f"{channel}:{answers}" if channel and answers else None,
        "files": _files(event.get("files")),
    }


def _message(event: dict[str, Any], bot_user_id: str | None) -> dict[str, Any]:
    """A ``message`` event, by subtype."""
    subtype = event.get("subtype")
    fields = _message_fields(event, bot_user_id)
    if subtype in CREATED_SUBTYPES:
        fields["type"] = "file.shared" if fields["files"] else "message.created"
    elif subtype in JOIN_SUBTYPES or subtype in LEAVE_SUBTYPES:
        user = text_of(event, "user")
        fields["type"] = "member.joined" if subtype in JOIN_SUBTYPES else "member.left"
        named = [m for m in fields["mentions"] if m["id"] == user]  # "<@U…|cal> has joined"
        fields["mentions"] = named or ([_party(user)] if user else [])
        fields["sender"] = _party(text_of(event, "inviter") or user)
    elif subtype in GROUP_SUBTYPES:
        fields["type"] = "group.updated"
        if subtype.endswith("_name") and (name := text_of(event, "name")):
            fields["group"] = _party(text_of(event, "channel"), name)
    elif subtype in ("message_changed", "message_deleted"):
        # The edited message (or what was deleted), identified as it was posted.
        inner = _dict(event, "message") or _dict(event, "previous_message")
        channel = text_of(event, "channel")
        fields = _message_fields({**inner, "channel": channel}, bot_user_id)
        ts = text_of(inner, "ts") if subtype == "message_changed" else text_of(event, "deleted_ts")
        fields.update(
            type="custom", files=[], message_id=f"{channel}:{ts}" if channel and ts else None
        )
    else:
        fields["type"] = "custom"
    return fields


def _other(kind: Any, event: dict[str, Any], bot_user_id: str | None) -> dict[str, Any]:
    """Every event type other than ``message``."""
    if kind == "app_mention":
        fields = _message_fields(event, bot_user_id)
        fields.update(type="file.shared" if fields["files"] else "message.created")
        fields["mentions_bot"] = True
        return fields
    channel = text_of(event, "channel") or text_of(event, "channel_id")
    user = text_of(event, "user") or text_of(event, "user_id")
    fields = {"type": "custom", "group": _party(channel), "sender": _party(user)}
    if kind == "file_shared" and (file_id := text_of(event, "file_id")):
        fields.update(type="file.shared", files=_files([{**_dict(event, "file"), "id": file_id}]))
    elif kind in ("member_joined_channel", "member_left_channel"):
        fields["type"] = "member.joined" if kind == "member_joined_channel" else "member.left"
        fields["mentions"] = [_party(user)] if user else []
        fields["sender"] = _party(text_of(event, "inviter") or user)
    elif kind in GROUP_EVENTS:
        fields["type"] = "group.updated"
        if isinstance(event.get("channel"), dict):
            info = event["channel"]
            fields["group"] = _party(text_of(info, "id"), text_of(info, "name"))
    return fields


def _build(source_id: str, raw: Any, fields: dict[str, Any]) -> GroupEvent:
    """The ``GroupEvent``; a field Slack would never send this way is a 422 naming it."""
    fields = {k: v for k, v in fields.items() if v is not None}
    try:
        return GroupEvent(source=source_id, raw=raw, **fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise Unprocessable(f"{path_of(first['loc']) or 'body'}: {first['msg']}") from None


def event_from_callback(
    source_id: str,
    body: dict[str, Any],
    *,
    bot_user_id: str | None,
    workspace_url: str | None = None,
) -> GroupEvent:
    """An ``event_callback`` envelope (``{team_id, event, event_id, event_time, ...}``);
    ``workspace_url`` gives messages their ``link``."""
    event = body.get("event")
    if not isinstance(event, dict):
        raise BadRequest("event_callback without an event object", code="invalid_payload")
    kind = event.get("type")
    if kind == "message":
        fields = _message(event, bot_user_id)
    else:
        fields = _other(kind, event, bot_user_id)
    fields["link"] = permalink(workspace_url, fields)
    fields["occurred_at"] = (
        parse_ts(event.get("ts"))
        or parse_ts(event.get("event_ts"))
        or parse_ts(body.get("event_time"))
    )
    return _build(source_id, body, fields)


def permalink(workspace_url: str | None, fields: dict[str, Any]) -> str | None:
    """Slack's permalink of a message event's message, as ``chat.getPermalink`` makes
    it: ``<workspace>/archives/<channel>/p<ts without the dot>``, and for a reply in a
    thread ``?thread_ts=<root ts>&cid=<channel>``; none without ``workspace_url``."""
    message_id, answers = fields.get("message_id"), fields.get("in_reply_to")
    if not workspace_url or not message_id:
        return None
    if fields.get("type") not in ("message.created", "file.shared"):
        return None
    channel, _, ts = message_id.partition(":")
    path = f"{quote(channel, safe='')}/p{quote(ts.replace('.', ''), safe='')}"
    base = f"{workspace_url.rstrip('/')}/archives/{path}"
    root = answers.partition(":")[2] if answers else None
    return f"{base}?{urlencode({'thread_ts': root, 'cid': channel})}" if root else base


def event_from_other(source_id: str, body: dict[str, Any]) -> GroupEvent:
    """Any other envelope type (``app_rate_limited``, ...): a ``custom`` event."""
    occurred = parse_ts(body.get("minute_rate_limited")) or parse_ts(body.get("event_time"))
    return _build(source_id, body, {"type": "custom", "occurred_at": occurred})


def event_from_command(
    source_id: str, form: dict[str, str], *, bot_user_id: str | None, sent: datetime
) -> GroupEvent:
    """A slash command: ``/command text`` from ``user_id`` in ``channel_id``."""
    command, text = form["command"], form.get("text", "")
    full = f"{command} {text}" if text else command
    mentions = mentions_in(text)
    response_url = form.get("response_url", "")
    reply: dict[str, Any] | None = None
    if response_url.startswith(RESPONSE_URL_HOSTS):
        expires = sent + RESPONSE_URL_TTL
        reply = {"kind": "slack_response_url", "url": response_url, "expires_at": expires}
    fields = {
        "type": "message.created",
        "occurred_at": sent,
        "group": _party(form.get("channel_id"), form.get("channel_name") or None),
        "sender": _party(form.get("user_id"), form.get("user_name") or None),
        "text": plain_text(full),
        "mentions": mentions,
        "mentions_bot": bool(bot_user_id) and any(m["id"] == bot_user_id for m in mentions),
        "reply": reply,
    }
    return _build(source_id, dict(form), fields)
