"""``jira``: Jira Cloud and Data Center issue webhooks as ``task.*`` events.

An admin webhook (System → WebHooks) saved with a secret signs the raw body:
``X-Hub-Signature: sha256=<hex HMAC>``, WebSub's ``method=signature``. Issue and comment
events become ``task.*`` events keyed by the issue key (``OPS-12``), the key the ``jira``
target records, so the workers find the thread a task came from; every other event is
acknowledged as ``custom``. Jira resends a delivery with the same
``X-Atlassian-Webhook-Identifier``, the dedupe key. One new comment may arrive twice
(``comment_created`` and ``jira:issue_updated``/``issue_commented`` when both are ticked),
so comment events are keyed by the comment's id instead and the second is a duplicate.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import ValidationError

from relay.config.paths import path_of
from relay.errors import BadRequest, Unauthorized, Unprocessable
from relay.events import GroupEvent, Party, TaskChange
from relay.intake.sources.base import BaseSource, InboundRequest, Parsed, SignedRequest
from relay.intake.sources.generic_payloads import read_json
from relay.intake.sources.task_payloads import (
    TaskSourceOptions,
    by_relay_account,
    signature_matches,
    strip_marker,
    task_event,
)

SIGNATURE_HEADER = "X-Hub-Signature"
IDENTIFIER_HEADER = "X-Atlassian-Webhook-Identifier"
# WebSub methods; Atlassian signs with sha256 and warns it may change the method later
_SIGNATURE = re.compile(r"(sha256|sha384|sha512)=([0-9a-fA-F]+)")
_HEX_DIGITS = {"sha256": 64, "sha384": 96, "sha512": 128}
# changelog fields a board or time tracking touches all day: no news for a chat thread
BOOKKEEPING = frozenset({"Rank", "WorklogId", "timespent", "timeestimate"})
_ADF_BLOCKS = frozenset(
    {"paragraph", "heading", "blockquote", "codeBlock", "listItem", "panel", "tableRow", "rule"}
)
MAX_ID = 256


class JiraOptions(TaskSourceOptions):
    """Options of the ``jira`` source: the webhook's secrets and the relay's accounts."""


class JiraSource(BaseSource):
    """Verifies Jira's HMAC and maps issue and comment events to ``task.*`` events."""

    kind: ClassVar[str] = "jira"
    Options = JiraOptions
    default_dedupe_ttl: ClassVar[float] = 3 * 86400  # Jira retries for minutes; keep days

    def verify(self, request: InboundRequest) -> None:
        value = (request.header(SIGNATURE_HEADER) or "").strip()
        if not value:
            raise Unauthorized(
                f"missing header {SIGNATURE_HEADER}; is the webhook saved with a secret?",
                code="missing_signature",
            )
        match = _SIGNATURE.fullmatch(value)
        if not match or len(match.group(2)) != _HEX_DIGITS[match.group(1)]:
            raise Unauthorized(
                f"{SIGNATURE_HEADER} is not 'sha256=' and a 64-digit hex digest",
                code="malformed_signature",
            )
        method, digest = match.groups()
        if not signature_matches(self.options.secrets, request.body, digest, algorithm=method):
            raise Unauthorized(
                f"{SIGNATURE_HEADER} matches no configured secret", code="invalid_signature"
            )

    def parse(self, request: InboundRequest) -> Parsed:
        body = read_json(request)
        event = self.event(body)
        comment_id = _ident(_obj(_obj(body).get("comment")).get("id"))
        if event.type == "task.commented" and comment_id:
            return Parsed(event, f"comment:{comment_id}")
        return Parsed(event, _delivery_id(request))

    def event(self, body: Any) -> GroupEvent:
        """The ``task.*`` event of an issue or comment event, else a ``custom`` one: as
        the generic sources do, signed JSON that is no task change is kept, not lost."""
        data = _obj(body)
        issue = _obj(data.get("issue"))
        kind, changes = _kind(data, _obj(issue.get("fields")), _obj(data.get("comment")))
        key = _ident(issue.get("key"))
        occurred = _time(data.get("timestamp"))
        if kind is None or key is None:  # nothing a thread needs to hear, or no issue named
            return GroupEvent(
                source=self.config.id,
                type="custom",
                occurred_at=occurred or datetime.now(UTC),
                sender=_party(data.get("user")),
                text=_str(data.get("webhookEvent"), 256),
                raw=body,
            )
        change = self.change(data, kind, key, changes)
        return task_event(
            source_id=self.config.id, type=kind, change=change, occurred_at=occurred, raw=body
        )

    def change(self, body: dict[str, Any], kind: str, key: str, changes: list[str]) -> TaskChange:
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
                by_relay=marked or by_relay_account(actor, self.options.relay_accounts),
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            raise Unprocessable(f"task.{path_of(first['loc'])}: {first['msg']}") from None

    def sample(self, body: bytes | None = None) -> SignedRequest:
        """A new issue in OPS as Jira Cloud sends it, or ``body``, signed with the first
        secret and carrying a fresh delivery identifier."""
        if body is None:
            body = json.dumps(sample_payload()).encode()
        key = self.options.secrets[0].encode()
        digest = hmac.new(key, body, hashlib.sha256).hexdigest()
        return SignedRequest(
            headers={
                "content-type": "application/json; charset=UTF-8",
                SIGNATURE_HEADER: f"sha256={digest}",
                IDENTIFIER_HEADER: str(uuid.uuid4()),
                "X-Atlassian-Webhook-Flow": "Primary",
            },
            body=body,
        )


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


def _delivery_id(request: InboundRequest) -> str:
    """``X-Atlassian-Webhook-Identifier`` (the same on each retry); where a server sends
    none, a digest of the body, which a retry repeats byte for byte."""
    value = (request.header(IDENTIFIER_HEADER) or "").strip()
    if not value:
        return "sha256:" + hashlib.sha256(request.body).hexdigest()
    if len(value) > MAX_ID:
        raise BadRequest(
            f"{IDENTIFIER_HEADER} is longer than {MAX_ID} characters", code="invalid_delivery_id"
        )
    return value


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


def sample_payload() -> dict[str, Any]:
    """A ``jira:issue_created`` shaped as Atlassian's documented example."""
    site = "https://acme.atlassian.net"
    ada = {"accountId": "5b10a2844c20165700ede21g", "displayName": "Ada Lovelace"}
    status = {"name": "To Do", "statusCategory": {"key": "new", "name": "To Do"}}
    fields = {
        "summary": "Fix the login timeout",
        "issuetype": {"name": "Task"},
        "project": {"key": "OPS", "name": "Operations"},
        "status": status,
        "assignee": ada,
        "description": "Sessions end after 5 minutes instead of 30.",
    }
    return {
        "timestamp": int(time.time() * 1000),
        "webhookEvent": "jira:issue_created",
        "issue_event_type_name": "issue_created",
        "user": {**ada, "accountType": "atlassian", "active": True},
        "issue": {
            "id": "10012",
            "self": f"{site}/rest/api/2/issue/10012",
            "key": "OPS-12",
            "fields": fields,
        },
    }
