"""Feishu / Lark event payloads (v2 ``"schema": "2.0"`` and v1 ``uuid``) → ``GroupEvent``.

Field names follow the Lark SDK's models (larksuite/oapi-sdk-python:
``lark_oapi/api/im/v1/model/``: ``EventMessage``, ``MentionEvent``, ``EventSender``,
``P2ImChatMemberUserAddedV1`` ...) and the open-platform pages "Received message
content" (``im-v1/message/events/message_content``) and, for v1, "Bot and message
events" and "Group chat events". Task events follow the SDK's ``lark_oapi/api/task/v1``
event models and the Task v2 event catalogue; they carry only ids, so a ``task.*`` event
says which task changed and how, rarely more. Every field is read defensively: a
verified payload of an unexpected shape maps to fewer fields, never to a crash.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from relay.errors import Unprocessable
from relay.events import FileRef, GroupEvent, Party, TaskChange
from relay.intake.sources.task_payloads import by_relay_account, task_event

MAX_ID = 256
MAX_NAME = 1024
MAX_REF = 4096
FILE_MESSAGES = ("image", "file", "audio", "media")
V2_MEMBERS = {
    "im.chat.member.user.added_v1": "member.joined",
    "im.chat.member.user.deleted_v1": "member.left",
    "im.chat.member.user.withdrawn_v1": "member.left",
}
V2_BOT = {
    "im.chat.member.bot.added_v1": "member.joined",
    "im.chat.member.bot.deleted_v1": "member.left",
}
V1_MEMBERS = {
    "add_user_to_chat": "member.joined",
    "remove_user_from_chat": "member.left",
    "revoke_add_user_from_chat": "member.left",
}
V1_BOT = {"add_bot": "member.joined", "remove_bot": "member.left"}
TaskMapping = tuple[str, tuple[str, ...], str | None]  # type, fields changed, status
TASK_UPDATED = {  # task.task.updated_v1 obj_type; v1 collaborators are v2 assignees
    1: ("task.updated", ("details",), None),
    2: ("task.assigned", ("assignees",), None),
    3: ("task.updated", ("followers",), None),
    4: ("task.updated", ("reminders",), None),
    5: ("task.closed", ("status",), "done"),
    6: ("task.reopened", ("status",), "todo"),
    7: ("task.updated", ("deleted",), "deleted"),
}
TASK_COMMENT = {1: "task.commented", 2: "task.commented"}  # created, replied; 3/4 edit, delete
TASK_TENANT = {"collaborator": "assignees", "follower": "followers"}  # update_tenant_v1
TASK_COMMITS = {  # task.task.update_user_access_v2 event_types → the field each touched
    "task_summary_update": "title",
    "task_desc_update": "description",
    "task_start_due_update": "due",
    "task_reminders_update": "reminders",
    "task_followers_update": "followers",
    "task_assignees_update": "assignees",
    "task_completed_update": "status",
}
DELETED: TaskMapping = ("task.updated", ("deleted",), "deleted")
_PLACEHOLDER = re.compile(r"@_user_\d+|@_all")
_V1_AT = re.compile(r"<at\b([^>]*)>(.*?)</at>", re.DOTALL)
_V1_OPEN_ID = re.compile(r"""open_id\s*=\s*["']([^"']*)["']""")
_V1_BREAK = re.compile(r"</p>|<br\s*/?>|</figure>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")


@dataclass(frozen=True)
class Context:
    """What the mapping needs besides the payload: who the bot is, and who the relay."""

    source_id: str
    bot_open_id: str | None = None
    app_id: str | None = None
    relay_accounts: tuple[str, ...] = ()

    def bot(self) -> Party | None:
        return _party(self.bot_open_id or self.app_id)


def is_v2(payload: dict[str, Any]) -> bool:
    """A v2 payload names its ``schema``; v1 has ``uuid`` and ``ts`` instead."""
    return bool(_str(payload.get("schema")))


def event_type(payload: dict[str, Any]) -> Any:
    """The type as the SDK reads it: ``header.event_type`` (v2), ``event.type`` (v1), else
    the top-level ``type`` (``url_verification``)."""
    if is_v2(payload):
        return _obj(payload.get("header")).get("event_type")
    if _str(payload.get("uuid")):
        return _obj(payload.get("event")).get("type")
    return payload.get("type")


def app_id_of(payload: dict[str, Any]) -> Any:
    """The app an event is for: ``header.app_id`` (v2) or ``event.app_id`` (v1)."""
    return _obj(payload.get("header" if is_v2(payload) else "event")).get("app_id")


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _id(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ID else None


def _party(pid: Any, name: Any = None) -> Party | None:
    if _id(pid) is None:
        return None
    return Party(id=pid, name=name[:MAX_NAME] if _str(name) else None)


def _user_id(ids: Any) -> str | None:
    """A ``UserId`` object's id: ``open_id`` first, the one bot APIs address users by."""
    ids = _obj(ids)
    return _str(ids.get("open_id")) or _str(ids.get("union_id")) or _str(ids.get("user_id"))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _time(value: Any, unit: float) -> datetime | None:
    """A timestamp in ms (v2 ``create_time``, a string) or s (v1 ``ts``, "1502199207.71")."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value / unit, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _file(message_id: str | None, key: Any, name: Any = None) -> FileRef | None:
    """``ref`` is ``<message_id>/<key>``: what the message-resource API needs to fetch it."""
    if message_id is None or not _str(key) or "/" in key:
        return None
    ref = f"{message_id}/{key}"
    if len(ref) > MAX_REF:
        return None
    return FileRef(name=(_str(name) or key)[:MAX_NAME], ref=ref)


def _answered(message: dict[str, Any], message_id: str | None) -> str | None:
    """The message this one answers: its thread's root (``root_id``), else the message it
    replies to (``parent_id``). Both are ``om_…`` ids, the form ``message_id`` takes."""
    target = _id(message.get("root_id")) or _id(message.get("parent_id"))
    return target if target != message_id else None


def _mentions(raw: list[Any]) -> tuple[list[Party], dict[str, str], set[str]]:
    """Parties, placeholder key → name, and every open_id among v2 ``mentions``."""
    parties, names, open_ids = [], {}, set()
    for item in map(_obj, raw):
        ids = _obj(item.get("id"))
        if party := _party(_user_id(ids), item.get("name")):
            parties.append(party)
        if (key := _str(item.get("key"))) and (name := _str(item.get("name"))):
            names[key] = name
        if open_id := _str(ids.get("open_id")):
            open_ids.add(open_id)
    return parties, names, open_ids


def _fill(text: str, names: dict[str, str]) -> str:
    """``@_user_1 hi`` → ``@Ada hi``, using the names the mentions carry."""

    def name(match: re.Match[str]) -> str:
        key = match.group(0)
        return "@" + names[key] if key in names else ("@all" if key == "@_all" else key)

    return _PLACEHOLDER.sub(name, text)


def _loads(content: Any) -> dict[str, Any]:
    """A message's ``content``: a JSON object serialised into a string."""
    if not isinstance(content, str):
        return {}
    try:
        return _obj(json.loads(content))
    except (ValueError, RecursionError):
        return {}


def _post_body(content: dict[str, Any]) -> dict[str, Any]:
    """Receive events carry ``{title, content}``; a post may also be wrapped by locale."""
    if isinstance(content.get("content"), list):
        return content
    for value in content.values():
        if isinstance(value, dict) and isinstance(value.get("content"), list):
            return value
    return {}


def _flatten_post(
    content: dict[str, Any], names: dict[str, str], message_id: str | None
) -> tuple[str | None, list[FileRef]]:
    """Rich text as plain lines (title first) plus its images and videos as files."""
    post = _post_body(content)
    lines = [title] if (title := _str(post.get("title"))) else []
    files: list[FileRef] = []
    for paragraph in _list(post.get("content")):
        parts: list[str] = []
        for element in map(_obj, _list(paragraph)):
            tag = element.get("tag")
            if tag in ("text", "a", "code_block", "md"):
                parts.append(_str(element.get("text")) or _str(element.get("href")) or "")
            elif tag == "at":
                key = _str(element.get("user_id")) or ""
                label = names.get(key) or _str(element.get("user_name"))
                parts.append("@" + (label or ("all" if key in ("all", "@_all") else key)))
            elif tag in ("img", "media"):
                file_key = element.get("image_key" if tag == "img" else "file_key")
                if ref := _file(message_id, file_key):
                    files.append(ref)
        if line := "".join(parts):
            lines.append(line)
    return ("\n".join(lines) or None), files


def _v2_message(ctx: Context, event: dict[str, Any]) -> dict[str, Any]:
    message = _obj(event.get("message"))
    message_id = _id(message.get("message_id"))
    mentions, names, open_ids = _mentions(_list(message.get("mentions")))
    kind = message.get("message_type")
    content = _loads(message.get("content"))
    text: str | None = None
    files: list[FileRef] = []
    if kind == "text" and (raw_text := _str(content.get("text"))):
        text = _fill(raw_text, names)
    elif kind == "post":
        text, files = _flatten_post(content, names, message_id)
    elif kind in FILE_MESSAGES:
        key = content.get("image_key" if kind == "image" else "file_key")
        files = [ref] if (ref := _file(message_id, key, content.get("file_name"))) else []
    return {
        "type": "file.shared" if kind in FILE_MESSAGES and files else "message.created",
        "group": _party(message.get("chat_id")),
        "sender": _party(_user_id(_obj(event.get("sender")).get("sender_id"))),
        "text": text,
        "mentions": mentions,
        "mentions_bot": bool(ctx.bot_open_id and ctx.bot_open_id in open_ids),
        "message_id": message_id,
        "in_reply_to": _answered(message, message_id),
        "files": files,
        "occurred_at": _time(message.get("create_time"), 1000),
    }


def _v2_fields(ctx: Context, event_type: Any, event: dict[str, Any]) -> dict[str, Any]:
    if event_type == "im.message.receive_v1":
        return _v2_message(ctx, event)
    fields: dict[str, Any] = {
        "type": "custom",
        "group": _party(event.get("chat_id"), event.get("name")),
        "sender": _party(_user_id(event.get("operator_id"))),
    }
    if event_type in V2_MEMBERS:
        fields["type"] = V2_MEMBERS[event_type]
        users = map(_obj, _list(event.get("users")))
        parties = (_party(_user_id(u.get("user_id")), u.get("name")) for u in users)
        fields["mentions"] = [p for p in parties if p]
    elif event_type in V2_BOT:
        fields.update(type=V2_BOT[event_type], mentions_bot=True)
        fields["mentions"] = [bot] if (bot := ctx.bot()) else []
    elif event_type == "im.chat.updated_v1":
        after = _obj(event.get("after_change"))
        fields.update(type="group.updated", group=_party(event.get("chat_id"), after.get("name")))
    return fields


def _v1_text(text: str) -> tuple[str, list[Party], set[str]]:
    """``<at open_id="ou_1">@Ada</at> hi`` → ``@Ada hi``, the mentioned party, its open_id."""
    parties: list[Party] = []
    open_ids: set[str] = set()
    for attributes, label in _V1_AT.findall(text):
        found = _V1_OPEN_ID.search(attributes)
        if found and (party := _party(found.group(1), label.lstrip("@"))):
            parties.append(party)
            open_ids.add(found.group(1))
    return _V1_AT.sub(lambda m: m.group(2), text), parties, open_ids


def _v1_message(ctx: Context, event: dict[str, Any]) -> dict[str, Any]:
    message_id = _id(event.get("open_message_id"))
    kind = event.get("msg_type")
    text: str | None = None
    mentions: list[Party] = []
    open_ids: set[str] = set()
    files: list[FileRef] = []
    if kind == "text" and (raw := _str(event.get("text"))):
        text, mentions, open_ids = _v1_text(raw)
    elif kind == "post":
        body = html.unescape(_TAG.sub("", _V1_BREAK.sub("\n", _str(event.get("text")) or "")))
        lines = [_str(event.get("title")), *(s.strip() for s in body.splitlines())]
        text = "\n".join(line for line in lines if line) or None
        refs = (_file(message_id, key) for key in _list(event.get("image_keys")))
        files = [ref for ref in refs if ref]
    elif kind in FILE_MESSAGES:
        key = event.get("image_key" if kind == "image" else "file_key")
        files = [ref] if (ref := _file(message_id, key, event.get("file_name"))) else []
    by_bot = bool(ctx.bot_open_id and ctx.bot_open_id in open_ids)
    return {
        "type": "file.shared" if kind in FILE_MESSAGES and files else "message.created",
        "group": _party(event.get("open_chat_id")),
        "sender": _party(event.get("open_id") or event.get("union_id")),
        "text": text,
        "mentions": mentions,
        "mentions_bot": event.get("is_mention") is True or by_bot,
        "message_id": message_id,
        "in_reply_to": _answered(event, message_id),
        "files": files,
    }


def _v1_fields(ctx: Context, event_type: Any, event: dict[str, Any]) -> dict[str, Any]:
    if event_type == "message":
        return _v1_message(ctx, event)
    operator = _obj(event.get("operator"))
    fields: dict[str, Any] = {
        "type": "custom",
        "group": _party(event.get("chat_id") or event.get("open_chat_id")),
        "sender": _party(operator.get("open_id") or operator.get("user_id")),
    }
    if event_type in V1_MEMBERS:
        users = map(_obj, _list(event.get("users")))
        parties = (_party(u.get("open_id") or u.get("user_id"), u.get("name")) for u in users)
        fields.update(type=V1_MEMBERS[event_type], mentions=[p for p in parties if p])
    elif event_type in V1_BOT:
        bot = ctx.bot()
        fields.update(type=V1_BOT[event_type], mentions_bot=True, mentions=[bot] if bot else [])
        fields["group"] = _party(event.get("open_chat_id"), event.get("chat_name"))
        fields["sender"] = _party(event.get("operator_open_id"), event.get("operator_name"))
    elif event_type == "group_setting_update":
        fields["type"] = "group.updated"
    return fields


def _task_mapping(event_type: Any, event: dict[str, Any]) -> TaskMapping | None:
    """How a task event maps, by its type and its ``obj_type``/``object_type``/commits."""
    if event_type == "task.task.updated_v1":
        return TASK_UPDATED.get(_int(event.get("obj_type")) or 0, ("task.updated", (), None))
    if event_type == "task.task.comment.updated_v1":
        kind = TASK_COMMENT.get(_int(event.get("obj_type")) or 0, "task.updated")
        return kind, ("comment",), None
    if event_type == "task.task.update_tenant_v1":
        what, action = event.get("object_type"), event.get("event_type")
        if what == "task" and action == "create":
            return "task.created", (), None
        if what == "task" and action == "delete":
            return DELETED
        field = TASK_TENANT.get(what) if isinstance(what, str) else None
        kind = "task.assigned" if field == "assignees" else "task.updated"
        return kind, (field,) if field else (), None
    if event_type == "task.task.update_user_access_v2":
        commits = [c for c in _list(event.get("event_types")) if isinstance(c, str)]
        if "task_create" in commits or "task_deleted" in commits:
            return ("task.created", (), None) if "task_create" in commits else DELETED
        fields = tuple(dict.fromkeys(TASK_COMMITS[c] for c in commits if c in TASK_COMMITS))
        return ("task.assigned" if "assignees" in fields else "task.updated"), fields, None
    return None


def _task_event(
    ctx: Context, header: dict[str, Any], event: dict[str, Any], raw: Any
) -> GroupEvent | None:
    """A ``task.*`` event for a Feishu task event that names its task, else ``None``.

    Task v1 events name the task by ``task_id``, which is the Task v2 ``guid`` (the id the
    relay's ``feishu_task`` target records); v2 names it ``task_guid``. Both are ``key``
    and ``id``. No comment text, title or link is sent, so those stay unset.
    """
    event_type = header.get("event_type")
    mapping = _task_mapping(event_type, event)
    if mapping is None:
        return None
    v2 = event_type == "task.task.update_user_access_v2"
    key = _id(event.get("task_guid" if v2 else "task_id"))
    if key is None:
        return None
    kind, changes, status = mapping
    actor = _party(_user_id(event.get("operator_id")))
    change = TaskChange(
        tool="feishu_task",
        key=key,
        id=key,
        status=status,
        actor=actor,
        changes=list(changes),
        by_relay=by_relay_account(actor, ctx.relay_accounts),
    )
    when = _time(header.get("create_time"), 1000)
    return task_event(source_id=ctx.source_id, type=kind, change=change, occurred_at=when, raw=raw)


def to_event(ctx: Context, payload: dict[str, Any], raw: Any) -> GroupEvent:
    """Map a verified, decrypted payload; ``raw`` is what the event keeps of it."""
    if is_v2(payload):
        header = _obj(payload.get("header"))
        task = _task_event(ctx, header, _obj(payload.get("event")), raw)
        if task is not None:
            return task
        fields = _v2_fields(ctx, header.get("event_type"), _obj(payload.get("event")))
        fallback_time = _time(header.get("create_time"), 1000)
    else:
        event = _obj(payload.get("event"))
        fields = _v1_fields(ctx, event.get("type"), event)
        fallback_time = _time(payload.get("ts"), 1)
    fields["occurred_at"] = fields.get("occurred_at") or fallback_time
    try:
        return GroupEvent(
            source=ctx.source_id,
            raw=raw,
            **{name: value for name, value in fields.items() if value is not None},
        )
    except ValidationError as exc:  # a safety net: the fields are checked as they are read
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "event"
        raise Unprocessable(f"{where}: {first['msg']}") from None
