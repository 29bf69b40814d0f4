"""Linear webhook JSON → ``task.*`` ``GroupEvent``: Issue and Comment payloads.

Kept apart from ``linear.py`` (the signature and timestamp checks, the delivery id and
the sample request) so the mapping reads as one table. Issue changes and new comments
on an issue become ``task.*`` events keyed by the issue's identifier (``ENG-12``), the
key the ``linear`` target records; any other payload is a ``custom`` event. Fields are
read defensively: a signed body is authentic, not necessarily well-formed, so a wrong
type becomes a thinner event or a 422, never a crash. Field names follow Linear's
webhook reference (linear.app/developers/webhooks).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from relay.errors import Unprocessable
from relay.events import GroupEvent, Party, TaskChange
from relay.intake.sources.task_payloads import by_relay_account, strip_marker, task_event

TIMESTAMP = "webhookTimestamp"  # the send time, in ms: signed, and checked by ``linear``
MAX_LISTED = 100  # changed fields kept per event
CLOSED_STATES = frozenset({"completed", "canceled"})  # workflow state types of a closed issue
# updatedFrom keys that only follow from another change: a reorder, a state's timestamps
FOLLOWERS = frozenset(
    "updatedAt sortOrder prioritySortOrder subIssueSortOrder completedAt canceledAt "
    "startedAt startedTriageAt triagedAt autoClosedAt".split()
)
RENAMED = {"stateId": "status", "assigneeId": "assignee"}
# the linear target writes its marker as inline code, which strip_marker does not unwrap
_CODE_MARKER = re.compile(r"`(group-relay:[0-9a-f]{24})`")


def linear_event(source_id: str, body: dict[str, Any], relay_accounts: Sequence[str]) -> GroupEvent:
    """The event for one payload: a ``task.*`` event for an issue change or a new issue
    comment, else ``custom`` (other resources, comment edits, reorders)."""
    kind, action = body.get("type"), body.get("action")
    data = _dict(body.get("data"))
    actor = _party(body.get("actor"))
    change: dict[str, Any] | None = None
    event_type = "custom"
    if kind == "Issue" and action in ("create", "update", "remove"):
        event_type, change = _issue_change(body, data)
    elif kind == "Comment" and action == "create" and isinstance(data.get("issue"), dict):
        event_type, change = _comment_change(body, data)
        actor = actor or _party(data.get("user"))
    when = _occurred_at(body)
    if change is None:
        fields: dict[str, Any] = {"occurred_at": when} if when else {}
        text = " ".join(str(part) for part in (kind, action) if isinstance(part, str) and part)
        fields["text"] = text[:4096] or None
        return GroupEvent(source=source_id, type="custom", sender=actor, raw=body, **fields)
    change["by_relay"] = change["by_relay"] or by_relay_account(actor, relay_accounts)
    task = TaskChange(tool="linear", actor=actor, **change)
    return task_event(source_id=source_id, type=event_type, change=task, occurred_at=when, raw=body)


def _issue_change(body: dict[str, Any], data: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """``create`` → created, ``remove`` → updated (``removed``), ``update`` by what
    ``updatedFrom`` names (see ``update_type``); an update of bookkeeping only → none."""
    action = body["action"]
    updated_from = _dict(body.get("updatedFrom"))
    if action == "create":
        event_type, changes = "task.created", []
    elif action == "remove":
        event_type, changes = "task.updated", ["removed"]
    else:
        event_type, changes = update_type(updated_from, data), changed_fields(updated_from)
        if event_type == "task.updated" and not changes:
            return "custom", None
    key = _key(data.get("identifier"), "data.identifier")
    assignee = _party(data.get("assignee"))
    # the relay's own new issue carries its marker in the description; later changes to
    # that issue still do, so only a create is told apart by it
    _, marked = _unmarked(data.get("description")) if action == "create" else (None, False)
    return event_type, {
        "key": key,
        "id": _text(data.get("id"), 256),
        "project": _text(_dict(data.get("team")).get("key"), 1024) or _team_of(key),
        "url": _url(data.get("url")) or _url(body.get("url")),
        "title": _text(data.get("title"), 4096),
        "status": _text(_dict(data.get("state")).get("name"), 256),
        "assignees": [assignee] if assignee else [],
        "changes": changes,
        "by_relay": marked,
    }


def _comment_change(body: dict[str, Any], data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A new comment on an issue; its text without the relay's marker."""
    issue = _dict(data.get("issue"))
    key = _key(issue.get("identifier"), "data.issue.identifier")
    text, marked = _unmarked(data.get("body"))
    return "task.commented", {
        "key": key,
        "id": _text(issue.get("id"), 256),
        "project": _text(_dict(issue.get("team")).get("key"), 1024) or _team_of(key),
        "url": _url(issue.get("url")) or _url(body.get("url")),
        "title": _text(issue.get("title"), 4096),
        "comment": text[:65536] if text is not None else None,
        "by_relay": marked,
    }


def update_type(updated_from: dict[str, Any], data: dict[str, Any]) -> str:
    """Closed when the issue moved into a ``completed``/``canceled`` state; reopened when
    it moved out of one, which ``updatedFrom`` tells by an earlier ``completedAt`` or
    ``canceledAt`` (it carries only the old state's id, not its type); else assigned
    when the assignee changed; else updated."""
    if "stateId" in updated_from:
        if _dict(data.get("state")).get("type") in CLOSED_STATES:
            return "task.closed"
        if updated_from.get("completedAt") or updated_from.get("canceledAt"):
            return "task.reopened"
    if "assigneeId" in updated_from:
        return "task.assigned"
    return "task.updated"


def changed_fields(updated_from: dict[str, Any]) -> list[str]:
    """``updatedFrom``'s keys as field names: ``stateId`` is ``status``, ``assigneeId``
    ``assignee``, other ids the thing they point to (``projectId`` → ``project``,
    ``labelIds`` → ``labels``); bookkeeping that follows another change is left out."""
    names: list[str] = []
    for key in updated_from:
        if key in FOLLOWERS:
            continue
        name = RENAMED.get(key) or (
            key[:-3] + "s" if key.endswith("Ids") else key.removesuffix("Id")
        )
        if name and name != "s" and name[:256] not in names:
            names.append(name[:256])
    return names[:MAX_LISTED]


def _occurred_at(body: dict[str, Any]) -> datetime | None:
    """When the change happened: the payload's ``createdAt``, else its send time."""
    stamp = body.get("createdAt")
    if isinstance(stamp, str) and len(stamp) <= 64:
        try:
            when = datetime.fromisoformat(stamp)
        except ValueError:
            pass
        else:
            return when if when.tzinfo else when.replace(tzinfo=UTC)
    sent = body.get(TIMESTAMP)
    if isinstance(sent, int | float) and not isinstance(sent, bool):
        try:
            return datetime.fromtimestamp(sent / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _unmarked(text: object) -> tuple[str | None, bool]:
    if not isinstance(text, str):
        return None, False
    return strip_marker(_CODE_MARKER.sub(r"\1", text))


def _key(value: object, where: str) -> str:
    """The issue's identifier, which the workers find the chat thread by."""
    if not isinstance(value, str) or not value.strip() or len(value) > 256:
        raise Unprocessable(f"{where} is missing or not an issue identifier such as ENG-12")
    return value


def _party(value: object) -> Party | None:
    """A user (``actor``, ``assignee``) as a party; ``None`` unless it has a usable id."""
    item = _dict(value)
    user_id = _text(item.get("id"), 256)
    return Party(id=user_id, name=_text(item.get("name"), 1024)) if user_id else None


def _team_of(key: str) -> str | None:
    """The team key an identifier starts with (``ENG`` of ``ENG-12``)."""
    team, dash, _ = key.rpartition("-")
    return team if dash and team else None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _url(value: object) -> str | None:
    return value if isinstance(value, str) and value and len(value) <= 4096 else None
