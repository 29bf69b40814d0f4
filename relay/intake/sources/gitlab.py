"""``gitlab``: GitLab project and group webhooks; issue and comment hooks as ``task.*`` events.

GitLab proves a delivery in one of two ways. The **secret token** comes back verbatim in
``X-Gitlab-Token`` and is compared in constant time with each of ``secrets``; it covers
neither the body nor a time, so whoever learns it can forge any event. The **signing
token** (``whsec_...``, newer GitLab) signs ``{webhook-id}.{webhook-timestamp}.{body}``
as Standard Webhooks does: when ``signing_tokens`` are set and a request carries
``webhook-signature``, that signature must verify (never falling back to the token), and
``require_signature`` refuses requests without one, so a leaked secret token forges nothing.

Resends are dropped by ``Idempotency-Key``, which GitLab keeps across retries and "Resend
request" (GitLab 17.4+), else by ``X-Gitlab-Event-UUID`` (older GitLab). Hooks that are
not about an issue are acknowledged as ``custom`` events, never refused: GitLab disables a
hook that answers 4xx.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, model_validator

from relay import signing
from relay.config.models import SourceConfig
from relay.config.units import Duration
from relay.errors import BadRequest, Unauthorized, Unprocessable
from relay.events import GroupEvent, Party, TaskChange
from relay.intake.sources.base import (
    BaseSource,
    InboundRequest,
    Parsed,
    SignedRequest,
    SourceOptions,
)
from relay.intake.sources.generic_payloads import read_json
from relay.intake.sources.standard_webhooks import Secret
from relay.intake.sources.task_payloads import (
    TaskSourceOptions,
    by_relay_account,
    strip_marker,
    task_event,
)

TOKEN_HEADER = "X-Gitlab-Token"
# Idempotency-Key is the same on every resend of one delivery; X-Gitlab-Event-UUID (the
# only id before GitLab 17.4) is new on a resend, and shared by every hook that an API
# call carrying it triggers, so it is only the fallback.
DELIVERY_HEADERS = ("Idempotency-Key", "X-Gitlab-Event-UUID")
MAX_DELIVERY_ID = 256


class GitLabOptions(TaskSourceOptions):
    """Options of the ``gitlab`` source: the webhook's secret token, signing token, or both."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    secrets: list[str] = Field(
        default_factory=list,
        repr=False,
        description="The webhook's Secret token (sent in X-Gitlab-Token); several to rotate.",
    )
    signing_tokens: list[Secret] = Field(
        default_factory=list,
        repr=False,
        description="The webhook's signing token (whsec_...); several to rotate.",
    )
    require_signature: bool = Field(
        False, description="Refuse requests without a webhook-signature (needs signing_tokens)."
    )
    tolerance: Duration = Field(
        300, gt=0, description="Allowed clock skew of webhook-timestamp, each way."
    )

    @model_validator(mode="after")
    def _some_proof(self) -> GitLabOptions:
        if not self.secrets and not self.signing_tokens:
            raise ValueError(
                "set secrets (the webhook's Secret token) or signing_tokens (its signing token)"
            )
        if self.require_signature and not self.signing_tokens:
            raise ValueError("require_signature needs signing_tokens")
        return self


class GitLabSource(BaseSource):
    """Verifies GitLab's token or signature and maps its issue and comment hooks."""

    kind: ClassVar[str] = "gitlab"
    Options: ClassVar[type[SourceOptions]] = GitLabOptions
    default_dedupe_ttl: ClassVar[float] = 3 * 86400  # "Resend request" comes days later too

    def __init__(self, config: SourceConfig) -> None:
        super().__init__(config)
        opts: GitLabOptions = self.options
        self.tokens = [_digest(secret.encode("utf-8")) for secret in opts.secrets]
        self.keys = [signing.decode_secret(token) for token in opts.signing_tokens]

    def verify(self, request: InboundRequest) -> None:
        opts: GitLabOptions = self.options
        signature = request.header("webhook-signature")
        if self.keys and signature:
            self._check_signature(request, signature)
            return
        if opts.require_signature:
            raise Unauthorized(
                "missing header webhook-signature; this source requires GitLab's signing token",
                code="missing_signature",
            )
        if not self.tokens:
            raise Unauthorized(
                "missing header webhook-signature; this source has signing tokens only",
                code="missing_signature",
            )
        token = request.header(TOKEN_HEADER)
        if not token:
            raise Unauthorized(f"missing header {TOKEN_HEADER}", code="missing_token")
        given = _digest(_wire_bytes(token))
        matched = False
        for expected in self.tokens:  # no early exit: the time does not tell which matched
            matched |= hmac.compare_digest(given, expected)
        if not matched:
            raise Unauthorized(f"{TOKEN_HEADER} matches no configured secret", code="invalid_token")

    def _check_signature(self, request: InboundRequest, signature: str) -> None:
        """GitLab's signing token: Standard Webhooks over id, timestamp and raw body."""
        msg_id = request.header("webhook-id")
        stamp = request.header("webhook-timestamp")
        missing = [n for n, v in (("webhook-id", msg_id), ("webhook-timestamp", stamp)) if not v]
        if missing or not msg_id or not stamp:
            raise Unauthorized(f"missing header {', '.join(missing)}", code="missing_signature")
        if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
            raise Unauthorized(
                "webhook-timestamp is not a Unix time in seconds", code="invalid_timestamp"
            )
        skew = time.time() - int(stamp)
        tolerance = self.options.tolerance
        if abs(skew) > tolerance:
            raise Unauthorized(
                f"webhook-timestamp is {abs(int(skew))}s {'old' if skew > 0 else 'ahead'}; "
                f"the window is ±{tolerance:g}s",
                code="stale_timestamp",
            )
        if not signing.matches(self.keys, msg_id, stamp, request.body, signature):
            raise Unauthorized(
                "webhook-signature matches no configured signing token", code="invalid_signature"
            )

    def parse(self, request: InboundRequest) -> Parsed:
        body = read_json(request)
        hook = request.header("X-Gitlab-Event")
        event = event_from_hook(self.config.id, body, self.options.relay_accounts, hook)
        return Parsed(event, _delivery_id(request))

    def sample(self, body: bytes | None = None) -> SignedRequest:
        body = body if body is not None else json.dumps(SAMPLE_ISSUE_HOOK).encode()
        delivery = str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitLab/18.0.0",
            "X-Gitlab-Event": "Issue Hook",
            "X-Gitlab-Instance": "https://gitlab.com",
            "X-Gitlab-Webhook-UUID": str(uuid.uuid4()),
            "X-Gitlab-Event-UUID": str(uuid.uuid4()),
            "Idempotency-Key": delivery,
        }
        opts: GitLabOptions = self.options
        if opts.secrets:
            headers[TOKEN_HEADER] = opts.secrets[0]
        if self.keys:
            stamp = str(int(time.time()))
            headers["webhook-id"] = delivery  # GitLab signs with its Idempotency-Key
            headers["webhook-timestamp"] = stamp
            headers["webhook-signature"] = signing.sign_header(self.keys[:1], delivery, stamp, body)
        return SignedRequest(headers=headers, body=body)


def _delivery_id(request: InboundRequest) -> str | None:
    """The first delivery id header GitLab sent; ``None`` from GitLab before 14.8."""
    for name in DELIVERY_HEADERS:
        value = (request.header(name) or "").strip()
        if not value:
            continue
        if len(value) > MAX_DELIVERY_ID:
            raise BadRequest(
                f"{name} is longer than {MAX_DELIVERY_ID} characters", code="invalid_delivery_id"
            )
        return value
    return None


def _wire_bytes(value: str) -> bytes:
    """A header value as it was sent: WSGI hands over its bytes decoded as latin-1."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def _digest(value: bytes) -> bytes:
    """Fixed-length digests, so the comparison time depends on neither length."""
    return hashlib.sha256(value).digest()


# -- hooks → events ----------------------------------------------------------------------

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


SAMPLE_ISSUE_HOOK: dict[str, Any] = {
    "object_kind": "issue",
    "event_type": "issue",
    "user": {"id": 1234567, "name": "Ada Lovelace", "username": "ada"},
    "project": {
        "id": 42,
        "name": "ops",
        "path_with_namespace": "acme/ops",
        "web_url": "https://gitlab.com/acme/ops",
    },
    "object_attributes": {
        "iid": 13,
        "title": "Fix the login timeout",
        "description": "Sessions expire after 5 minutes instead of 30.",
        "state": "opened",
        "action": "open",
        "assignee_ids": [1234567],
        "created_at": "2026-05-04T09:30:00Z",
        "updated_at": "2026-05-04T09:30:00Z",
        "url": "https://gitlab.com/acme/ops/-/issues/13",
    },
    "assignees": [{"id": 1234567, "name": "Ada Lovelace", "username": "ada"}],
    "labels": [],
    "changes": {},
}
