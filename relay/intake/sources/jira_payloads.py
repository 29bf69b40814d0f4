"""Jira webhook JSON → ``task.*`` ``GroupEvent``: issue and comment events.

Kept apart from ``jira.py`` (the signature check, the delivery id and the sample
request) so the mapping reads as one table. Issue and comment events become ``task.*``
events keyed by the issue key (``OPS-12``), the key the ``jira`` target records; any
other event is a ``custom`` one. Every field is read defensively: a signed body is
authentic, not necessarily well-formed, so a wrong type is a thinner event or a 422.
Field names follow Atlassian's webhook reference (Cloud and Data Center).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from relay.config.paths import path_of
from relay.errors import Unprocessable
from relay.events import GroupEvent, Party, TaskChange
from relay.intake.sources.task_payloads import by_relay_account, strip_marker, task_event

# changelog fields a board or time tracking touches all day: no news for a chat thread
BOOKKEEPING = frozenset({"Rank", "WorklogId", "timespent", "timeestimate"})
_ADF_BLOCKS = frozenset(
    {"paragraph", "heading", "blockquote", "codeBlock", "listItem", "panel", "tableRow", "rule"}
)
MAX_ID = 256


def event_from_body(source_id: str, body: Any, relay_accounts: Sequence[str]) -> GroupEvent:
    """The ``task.*`` event of an issue or comment event, else a ``custom`` one: as
    the generic sources do, signed JSON that is no task change is kept, not lost."""
    data = _obj(body)
    issue = _obj(data.get("issue"))
    kind, changes = _kind(data, _obj(issue.get("fields")), _obj(data.get("comment")))
    key = _ident(issue.get("key"))
    occurred = _time(data.get("timestamp"))
    if kind is None or key is None:  # nothing a thread needs to hear, or no issue named
        return GroupEvent(
            source=source_id,
            type="custom",
            occurred_at=occurred or datetime.now(UTC),
            sender=_party(data.get("user")),
            text=_str(data.get("webhookEvent"), 256),
            raw=body,
        )
    change = task_change(data, kind, key, changes, relay_accounts)
    return task_event(source_id=source_id, type=kind, change=change, occurred_at=occurred, raw=body)


def task_change(
    body: dict[str, Any], kind: str, key: str, changes: list[str], relay_accounts: Sequence[str]
) -> TaskChange:
    """The issue as it now is, who changed it, and whether that was the relay."""
    issue, comment = _obj(body.get("issue")), _obj(body.get("comment"))
    fields = _obj(issue.get("fields"))
    actor = _party(body.get("user"))
    text, marked = None, False
    if kind == "task.commented":
        actor = _party(comment.get("author")) or actor
        text, marked = strip_marker(_text(comment.get("body")))
    elif kind == "task.created":  # the relay's own issues end their description with it
        marked = strip_marker(_text(fields.get("description")))[1]
    assignee = _party(fields.get("assignee"))
    project = _str(_obj(fields.get("project")).get("key"), 1024)
    try:
        return TaskChange(
            tool="jira",
            key=key,
            id=_ident(issue.get("id")),
            project=project or key.rpartition("-")[0] or None,
            url=_browse(issue.get("self"), key),
            title=_str(fields.get("summary"), 4096),
            status=_str(_obj(fields.get("status")).get("name"), 256),
            assignees=[assignee] if assignee else [],
            actor=actor,
            comment=text[:65536] if text else None,
            changes=changes,
            by_relay=marked or by_relay_account(actor, relay_accounts),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise Unprocessable(f"task.{path_of(first['loc'])}: {first['msg']}") from None


def comment_id(body: Any) -> str | None:
    """The id of the comment an event carries: one new comment may arrive as two events
    (``comment_created`` and an issue update), and this key tells the second apart."""
    return _ident(_obj(_obj(body).get("comment")).get("id"))


def _kind(
    body: dict[str, Any], fields: dict[str, Any], comment: dict[str, Any]
) -> tuple[str | None, list[str]]:
    """The ``task.*`` type of a webhook and the fields it changed; ``None`` for no news."""
    name = body.get("webhookEvent")
    if name == "jira:issue_created":
        return "task.created", []
    if name == "jira:issue_updated":
        return _update(body, fields, comment)
    if name == "comment_created" and comment:
        return "task.commented", []
    return None, []


def _update(
    body: dict[str, Any], fields: dict[str, Any], comment: dict[str, Any]
) -> tuple[str | None, list[str]]:
    """What an issue update is: a close, a reopen, an assignment, another edit, or a new
    comment (an update without a changelog that carries one); ``None`` for no news.

    Jira reports only the status the issue is now in, not the category it left: a move
    out of *done* is told by the resolution being cleared, which a reopen does."""
    changelog = _obj(body.get("changelog")).get("items")
    items = [i for i in changelog if isinstance(i, dict)] if isinstance(changelog, list) else []
    if not items:
        commented = comment and body.get("issue_event_type_name") in (None, "issue_commented")
        return ("task.commented" if commented else None), []
    names = list(dict.fromkeys(n for n in (_field(i) for i in items) if n))
    touched = set().union(*(_ids(i) for i in items))
    if set(names) <= BOOKKEEPING:
        return None, names
    if "status" in touched:
        category = _obj(_obj(fields.get("status")).get("statusCategory")).get("key")
        if category == "done":
            return "task.closed", names
        if any("resolution" in _ids(i) and _cleared(i) for i in items):
            return "task.reopened", names
    if "assignee" in touched:
        return "task.assigned", names
    return "task.updated", names


def _field(item: dict[str, Any]) -> str:
    """A changelog item's field as Jira names it (``status``, ``Story Points``)."""
    return (_str(item.get("field"), MAX_ID) or _str(item.get("fieldId"), MAX_ID) or "").strip()


def _ids(item: dict[str, Any]) -> set[str]:
    """The names an item's field goes by, lower-case: ``field`` and Cloud's ``fieldId``."""
    return {v.lower() for v in (item.get("field"), item.get("fieldId")) if isinstance(v, str)}


def _cleared(item: dict[str, Any]) -> bool:
    """The item went from a value to none (a resolution removed by a reopen)."""
    before = item.get("from") or item.get("fromString")
    after = item.get("to") or item.get("toString")
    return bool(before) and not after


def _browse(self_url: Any, key: str) -> str | None:
    """``<site>/browse/<key>`` from ``issue.self`` (``<site>/rest/api/2/issue/10001``),
    the link the ``jira`` target gives for an issue; a context path is kept."""
    if not isinstance(self_url, str) or not self_url.startswith(("https://", "http://")):
        return None
    site, found, _ = self_url.partition("/rest/api/")
    url = f"{site}/browse/{key}"
    return url if found and "://" in site and len(url) <= 4096 else None


def _party(user: Any) -> Party | None:
    """Cloud names a person by ``accountId``; Data Center by user ``name`` (or ``key``)."""
    user = _obj(user)
    for field in ("accountId", "name", "key"):
        ident = _ident(user.get(field))
        if ident:
            return Party(id=ident, name=_str(user.get("displayName"), 1024))
    return None


def _text(value: Any) -> str | None:
    """A description or comment body: wiki text as sent, or ADF flattened to text."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return re.sub(r"\n{3,}", "\n\n", _adf(value)).strip()
    return None


def _adf(node: Any, depth: int = 0) -> str:
    """Atlassian Document Format as plain text: text, mentions and links in order, a line
    after each block. Nesting is capped, so a hostile body cannot exhaust the stack."""
    if depth > 40 or not isinstance(node, dict):
        return ""
    kind, attrs = node.get("type"), _obj(node.get("attrs"))
    if kind == "text":
        return _str(node.get("text"), 65536) or ""
    if kind == "hardBreak":
        return "\n"
    if kind in ("mention", "emoji"):
        return _str(attrs.get("text"), 1024) or _str(attrs.get("shortName"), 1024) or ""
    if kind in ("inlineCard", "blockCard"):
        return _str(attrs.get("url"), 4096) or ""
    content = node.get("content")
    inner = "".join(_adf(c, depth + 1) for c in content) if isinstance(content, list) else ""
    return inner + "\n" if kind in _ADF_BLOCKS else inner


def _time(value: Any) -> datetime | None:
    """``timestamp``: milliseconds since the epoch; ``None`` if absent or absurd."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _ident(value: Any) -> str | None:
    """An id or key as text: Jira sends ids as strings, some as numbers."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and value.strip() and len(value) <= MAX_ID:
        return value.strip()
    return None
