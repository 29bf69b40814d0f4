"""GitHub webhook JSON → ``task.*`` ``GroupEvent``: ``issues`` and ``issue_comment``.

Kept apart from ``github.py`` (the signature check, the headers, the ``ping`` answer and
the sample request) so the mapping reads as one table. Issue events and new comments on
issues become ``task.*`` events keyed ``#<number>``, the key the ``github_issues`` target
records; anything else (pull requests, pushes, comment edits) is a ``custom`` event with
the whole payload in ``raw``. Fields are read defensively: a signed body is authentic,
not necessarily well-formed, so a wrong type becomes a 422, never a crash. Field names
follow GitHub's webhook events and payloads reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from relay.errors import Unprocessable
from relay.events import GroupEvent, Party, TaskChange
from relay.intake.sources.task_payloads import by_relay_account, strip_marker, task_event

# issues actions with a task type of their own; every other action is task.updated
_ISSUE_TYPES = {"opened": "task.created", "closed": "task.closed", "reopened": "task.reopened"}
_ISSUE_TYPES |= dict.fromkeys(("assigned", "unassigned"), "task.assigned")
# the field an action touches, where its name is not the field's
_TOUCHED = {
    **dict.fromkeys(("closed", "reopened"), "status"),
    **dict.fromkeys(("assigned", "unassigned"), "assignees"),
    **dict.fromkeys(("labeled", "unlabeled"), "labels"),
    **dict.fromkeys(("milestoned", "demilestoned"), "milestone"),
}


def event_from_hook(
    source_id: str, body: Any, relay_accounts: Sequence[str], name: str
) -> GroupEvent:
    """The ``task.*`` event of an issue change, else a ``custom`` event; ``name`` is the
    ``X-GitHub-Event`` header the payload came with."""
    issue = body.get("issue") if isinstance(body, dict) else None
    on_pull_request = isinstance(issue, dict) and issue.get("pull_request") is not None
    if name == "issues" and not on_pull_request:
        return _issue_event(source_id, body, relay_accounts)
    created = isinstance(body, dict) and body.get("action") == "created"
    if name == "issue_comment" and created and not on_pull_request:
        return _comment_event(source_id, body, relay_accounts)
    return _custom(source_id, name, body)


def _issue_event(source_id: str, body: Any, relay_accounts: Sequence[str]) -> GroupEvent:
    if not isinstance(body, dict):
        raise Unprocessable("an issues payload must be a JSON object")
    action = body.get("action")
    if not isinstance(action, str) or not action:
        raise Unprocessable("action: missing from the issues payload")
    change = _change(body, relay_accounts)
    if action == "opened":
        issue_body = body["issue"].get("body")
        _, marked = strip_marker(issue_body if isinstance(issue_body, str) else None)
        change["by_relay"] = change["by_relay"] or marked  # the relay's own issue
    elif action == "edited":
        edits = body.get("changes")
        change["changes"] = sorted(edits) if isinstance(edits, dict) and edits else [action]
    else:
        change["changes"] = [_TOUCHED.get(action, action)]
    issue = body["issue"]
    return _task(
        source_id, _ISSUE_TYPES.get(action, "task.updated"), change, issue.get("updated_at"), body
    )


def _comment_event(
    source_id: str, body: dict[str, Any], relay_accounts: Sequence[str]
) -> GroupEvent:
    comment = body.get("comment")
    if not isinstance(comment, dict):
        raise Unprocessable("comment: missing from the issue_comment payload")
    text = comment.get("body")
    stripped, marked = strip_marker(text if isinstance(text, str) else None)
    change = _change(body, relay_accounts)
    change["comment"] = stripped[:65536] if stripped else None
    change["by_relay"] = change["by_relay"] or marked
    return _task(source_id, "task.commented", change, comment.get("created_at"), body)


def _change(body: dict[str, Any], relay_accounts: Sequence[str]) -> dict[str, Any]:
    """The ``TaskChange`` fields every issue event carries."""
    issue = body.get("issue")
    if not isinstance(issue, dict):
        raise Unprocessable("issue: missing from the payload")
    number = issue.get("number")
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise Unprocessable("issue.number: not a positive whole number")
    repository = body.get("repository")
    repo = repository.get("full_name") if isinstance(repository, dict) else None
    state, reason = issue.get("state"), issue.get("state_reason")
    status = state if isinstance(state, str) and state else None
    if status and isinstance(reason, str) and reason:
        status = f"{status} ({reason})"
    actor = _user(body.get("sender"))
    assignees = issue.get("assignees")
    return {
        "tool": "github_issues",
        "key": f"#{number}",  # as workers/pm/github_issues.py records it
        "id": str(number),
        "project": _text(repo, 1024),
        "url": _text(issue.get("html_url"), 4096, cut=False),
        "title": _text(issue.get("title"), 4096),
        "status": _text(status, 256),
        "assignees": [
            user for user in map(_user, assignees if isinstance(assignees, list) else []) if user
        ],
        "actor": actor,
        "by_relay": by_relay_account(actor, relay_accounts),
    }


def _task(source_id: str, type: str, change: dict[str, Any], when: Any, raw: Any) -> GroupEvent:
    try:
        return task_event(
            source_id=source_id,
            type=type,
            change=TaskChange.model_validate(change),
            occurred_at=_time(when),
            raw=raw,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "task"
        raise Unprocessable(f"{where}: {first['msg']}") from None


def _user(value: Any) -> Party | None:
    """A GitHub user object as a ``Party`` named by its login (what ``people`` maps)."""
    login = value.get("login") if isinstance(value, dict) else None
    if not isinstance(login, str) or not 0 < len(login) <= 256:
        return None
    return Party(id=login)


def _text(value: Any, limit: int, *, cut: bool = True) -> str | None:
    """A string field within ``limit``: cut to it, or dropped where a cut one would lie."""
    if not isinstance(value, str) or not value:
        return None
    if len(value) > limit:
        return value[:limit] if cut else None
    return value


def _time(value: Any) -> datetime | None:
    """GitHub's ISO 8601 time; ``None`` (now) for anything else."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _custom(source_id: str, name: str, body: Any) -> GroupEvent:
    """An event the relay does not map: queued as ``custom`` so routes can still use it."""
    action = body.get("action") if isinstance(body, dict) else None
    text = f"{name} {action}" if isinstance(action, str) and action else name
    sender = _user(body.get("sender")) if isinstance(body, dict) else None
    return GroupEvent(source=source_id, type="custom", sender=sender, text=text[:4096], raw=body)
