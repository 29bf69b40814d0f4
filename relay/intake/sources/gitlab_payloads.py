"""GitLab webhook JSON → ``task.*`` ``GroupEvent``: issue hooks and comments on issues.

Kept apart from ``gitlab.py`` (the token and signature checks, the delivery id and the
sample request) so the mapping reads as one table. Issue hooks and new comments on an
issue become ``task.*`` events keyed ``#<iid>``, the key the ``gitlab_issues`` target
records; any other hook is a ``custom`` event kept whole in ``raw``. Fields are read
defensively: a verified body is authentic, not necessarily well-formed, so a wrong type
becomes a thinner event or a 422, never a crash. Field names follow GitLab's webhook
events reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from relay.errors import Unprocessable
from relay.events import GroupEvent, Party, TaskChange
from relay.intake.sources.task_payloads import by_relay_account, strip_marker, task_event

ISSUE_ACTIONS = {"open": "task.created", "close": "task.closed", "reopen": "task.reopened"}
# Fields GitLab lists in ``changes`` on every update: not what the person changed.
BOOKKEEPING = frozenset({"updated_at", "updated_by_id", "last_edited_at", "last_edited_by_id"})
# Some GitLab versions follow a close or reopen hook with an ``update`` hook whose
# changes are only these: the same change told twice.
STATE_FIELDS = frozenset({"state_id", "closed_at", "closed_by_id", "state"})
MAX_LISTED = 100  # assignees and changed fields kept per event
Mapped = tuple[str, dict[str, Any], datetime | None]


def event_from_hook(
    source_id: str, body: Any, relay_accounts: Sequence[str], hook: str | None = None
) -> GroupEvent:
    """An issue hook or a comment on an issue as a ``task.*`` event; anything else (push,
    merge requests, other work items, edited comments) as ``custom``, kept whole in ``raw``
    so routes can still use it."""
    mapped = _task(body) if isinstance(body, dict) else None
    if mapped is None:
        return _custom(source_id, body, hook)
    event_type, fields, occurred = mapped
    change = TaskChange(tool="gitlab_issues", **fields)
    change.by_relay = change.by_relay or by_relay_account(change.actor, relay_accounts)
    return task_event(
        source_id=source_id, type=event_type, change=change, occurred_at=occurred, raw=body
    )


def _custom(source_id: str, body: Any, hook: str | None) -> GroupEvent:
    """Named by the hook (``Push Hook``) and its action; the user who caused it as sender
    (push hooks name them with top-level ``user_*`` fields)."""
    fields = body if isinstance(body, dict) else {}
    attrs = fields.get("object_attributes")
    action = attrs.get("action") if isinstance(attrs, dict) else None
    name = hook or _text(fields.get("object_kind")) or "GitLab hook"
    text = f"{name} {action}" if isinstance(action, str) and action else name
    user = fields.get("user")
    if not isinstance(user, dict):
        user = {"id": fields.get("user_id"), "username": fields.get("user_username")}
    return GroupEvent(
        source=source_id, type="custom", sender=_party(user), text=text[:4096], raw=body
    )


def _task(body: dict[str, Any]) -> Mapped | None:
    attrs = body.get("object_attributes")
    if not isinstance(attrs, dict):
        return None
    if body.get("object_kind") == "issue":  # confidential issues too (event_type says so)
        return _issue(body, attrs)
    if body.get("object_kind") == "note" and attrs.get("noteable_type") == "Issue":
        return _comment(body, attrs)
    return None


def _issue(body: dict[str, Any], attrs: dict[str, Any]) -> Mapped | None:
    """``open``/``close``/``reopen``; ``update`` is ``task.assigned`` when the assignees
    changed. The relay's own new issues carry its marker in the description."""
    action = attrs.get("action")
    changes = body.get("changes")
    changes = changes if isinstance(changes, dict) else {}
    if action == "update":
        if changes and set(changes) <= BOOKKEEPING | STATE_FIELDS:
            return None  # the state half of a close or reopen, which its own hook tells
        event_type = "task.assigned" if "assignees" in changes else "task.updated"
    elif isinstance(action, str) and action in ISSUE_ACTIONS:
        event_type = ISSUE_ACTIONS[action]
    else:
        return None  # no action: an old GitLab, or a hook's test payload
    iid = _iid(attrs, "object_attributes")
    described = _text(attrs.get("description"))
    fields = {
        **_issue_fields(body, attrs, iid),
        "url": _text(attrs.get("url"), 4096),
        "assignees": _assignees(body.get("assignees"), attrs.get("assignee_ids")),
        "changes": [str(k)[:256] for k in changes if k not in BOOKKEEPING][:MAX_LISTED],
        "by_relay": action == "open" and strip_marker(described)[1],
    }
    return event_type, fields, _time(attrs.get("updated_at"))


def _comment(body: dict[str, Any], attrs: dict[str, Any]) -> Mapped | None:
    """A new comment on an issue; edits and system notes are not new comments."""
    if attrs.get("action") not in (None, "create") or attrs.get("system") is True:
        return None
    issue = body.get("issue")
    if not isinstance(issue, dict):
        raise Unprocessable("issue: a comment hook on an issue must carry the issue")
    iid = _iid(issue, "issue")
    comment, marked = strip_marker(_text(attrs.get("note")))
    note_url = _text(attrs.get("url"), 4096)
    fields = {
        **_issue_fields(body, issue, iid),
        "url": _text(issue.get("url"), 4096) or (note_url and note_url.split("#note_")[0]),
        "assignees": _assignees(None, issue.get("assignee_ids")),
        "comment": comment[:65536] if comment else None,
        "by_relay": marked,
    }
    return "task.commented", fields, _time(attrs.get("created_at"))


def _issue_fields(body: dict[str, Any], issue: dict[str, Any], iid: int) -> dict[str, Any]:
    """What issue and comment hooks share: ``#iid`` as the relay's target records it."""
    project = body.get("project")
    return {
        "key": f"#{iid}",
        "id": str(iid),
        "project": _text(project.get("path_with_namespace"), 1024)
        if isinstance(project, dict)
        else None,
        "title": _text(issue.get("title"), 4096),
        "status": _text(issue.get("state"), 256),
        "actor": _party(body.get("user")),
    }


def _iid(issue: dict[str, Any], where: str) -> int:
    iid = issue.get("iid")
    if isinstance(iid, bool) or not isinstance(iid, int) or not 0 < iid < 2**63:
        raise Unprocessable(f"{where}.iid: the issue's iid must be a positive number")
    return iid


def _text(value: Any, limit: int | None = None) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63


def _party(user: Any) -> Party | None:
    """A GitLab user: the numeric id (what the ``gitlab`` people map holds), the username."""
    if not isinstance(user, dict):
        return None
    username = _text(user.get("username"), 1024)
    ident = str(user["id"]) if _is_id(user.get("id")) else username
    return Party(id=ident[:256], name=username) if ident else None


def _assignees(people: Any, ids: Any) -> list[Party]:
    """``assignees`` (users), paired with ``assignee_ids`` where a user lacks its id: both
    list the issue's assignees in one order."""
    id_list = [i for i in ids if _is_id(i)] if isinstance(ids, list) else []
    users = [p for p in people if isinstance(p, dict)] if isinstance(people, list) else []
    if not users:
        return [Party(id=str(i)) for i in id_list[:MAX_LISTED]]
    if len(users) == len(id_list):
        users = [
            u if _is_id(u.get("id")) else {**u, "id": i}
            for u, i in zip(users, id_list, strict=True)
        ]
    return [p for p in map(_party, users[:MAX_LISTED]) if p is not None]


def _time(value: Any) -> datetime | None:
    """GitLab writes ``2013-12-03T17:15:43Z`` or ``2015-05-17 18:08:09 UTC``."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.strip().removesuffix(" UTC"))
        return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    except (ValueError, OverflowError):  # not a time, or one past year 9999 in UTC
        return None
