"""``linear``: Linear's issue and comment webhooks as ``task.*`` events.

Linear signs the raw body with the webhook's signing secret (``Linear-Signature``: hex
HMAC-SHA256) and puts the send time in the body (``webhookTimestamp``, ms). A request is
refused unless a configured secret produces the signature, and then unless that time is
within ``tolerance`` of the relay's clock: the timestamp is signed, so a captured
request cannot be replayed once the window has passed. ``Linear-Delivery`` is the
dedupe key.

Issue and Comment payloads become ``task.*`` events keyed by the issue's identifier
(``ENG-12``), the key the ``linear`` target records; any other payload is a ``custom``
event, queued and acknowledged like the rest so that Linear does not retry it. Linear
counts any answer but 200 as a failed delivery, so new events and resends both get 200.
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

from pydantic import Field, ValidationError

from relay.config.paths import path_of
from relay.config.units import Duration
from relay.errors import BadRequest, Unauthorized, Unprocessable
from relay.events import GroupEvent, Party, TaskChange
from relay.intake.sources.base import BaseSource, InboundRequest, Parsed, Reply, SignedRequest
from relay.intake.sources.generic_payloads import read_json
from relay.intake.sources.task_payloads import (
    TaskSourceOptions,
    by_relay_account,
    signature_matches,
    strip_marker,
    task_event,
)

SIGNATURE = "Linear-Signature"
DELIVERY = "Linear-Delivery"
TIMESTAMP = "webhookTimestamp"
MAX_DELIVERY_ID = 256
MAX_LISTED = 100  # changed fields kept per event
CLOSED_STATES = frozenset({"completed", "canceled"})  # workflow state types of a closed issue
# updatedFrom keys that only follow from another change: a reorder, a state's timestamps
FOLLOWERS = frozenset(
    "updatedAt sortOrder prioritySortOrder subIssueSortOrder completedAt canceledAt "
    "startedAt startedTriageAt triagedAt autoClosedAt".split()
)
RENAMED = {"stateId": "status", "assigneeId": "assignee"}
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_EVENT_NAME = re.compile(r"[A-Za-z]{1,64}")
# the linear target writes its marker as inline code, which strip_marker does not unwrap
_CODE_MARKER = re.compile(r"`(group-relay:[0-9a-f]{24})`")


class LinearOptions(TaskSourceOptions):
    """Options of the ``linear`` source."""

    tolerance: Duration = Field(
        60, gt=0, description="How far webhookTimestamp may be from the relay's clock."
    )


class LinearSource(BaseSource):
    """Verifies and parses Linear's data-change webhooks."""

    kind: ClassVar[str] = "linear"
    Options: ClassVar[type[TaskSourceOptions]] = LinearOptions

    def verify(self, request: InboundRequest) -> None:
        given = (request.header(SIGNATURE) or "").strip()
        if not given:
            raise Unauthorized(f"missing header {SIGNATURE}", code="missing_signature")
        if not _HEX_DIGEST.fullmatch(given):
            raise Unauthorized(
                f"{SIGNATURE} is not 64 hex digits (an HMAC-SHA256)", code="malformed_signature"
            )
        if not signature_matches(self.options.secrets, request.body, given):
            raise Unauthorized(
                f"{SIGNATURE} matches no configured secret", code="invalid_signature"
            )
        body = read_json(request)  # only now: the bytes are Linear's
        if isinstance(body, dict):  # anything else is refused by parse
            self._check_time(body.get(TIMESTAMP))

    def _check_time(self, stamp: object) -> None:
        tolerance: float = self.options.tolerance
        if stamp is None:
            raise Unauthorized(f"the body has no {TIMESTAMP}", code="missing_timestamp")
        try:
            if isinstance(stamp, bool) or not isinstance(stamp, int | float):
                raise TypeError
            skew = time.time() - stamp / 1000
        except (TypeError, OverflowError):
            raise Unauthorized(
                f"{TIMESTAMP} is not a Unix time in milliseconds", code="invalid_timestamp"
            ) from None
        if abs(skew) > tolerance:
            raise Unauthorized(
                f"{TIMESTAMP} is {abs(int(skew))}s {'old' if skew > 0 else 'ahead'}; "
                f"the window is ±{tolerance:g}s",
                code="stale_timestamp",
            )

    def parse(self, request: InboundRequest) -> Parsed:
        body = read_json(request)
        if not isinstance(body, dict):
            raise Unprocessable("the body is not a JSON object, as every Linear webhook is")
        try:
            event = linear_event(self.config.id, body, self.options.relay_accounts)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise Unprocessable(f"{path_of(first['loc']) or 'body'}: {first['msg']}") from None
        return Parsed(event, _dedupe_key(request, body))

    def reply(self, request: InboundRequest, event_id: str, *, duplicate: bool) -> Reply:
        """200 either way: Linear retries anything else, and may disable the webhook."""
        answer: dict[str, Any] = {"event_id": event_id}
        if duplicate:
            answer["duplicate"] = True
        return Reply(200, json.dumps(answer).encode())

    def sample(self, body: bytes | None = None) -> SignedRequest:
        """Signed with the first secret; a JSON object's ``webhookTimestamp`` is set to
        now, so a payload saved from an earlier delivery is accepted again."""
        now_ms = int(time.time() * 1000)
        payload: Any = sample_issue(now_ms) if body is None else _json_or_none(body)
        if isinstance(payload, dict):
            payload[TIMESTAMP] = now_ms
            body = json.dumps(payload).encode()
        body = body or b""
        secret = self.options.secrets[0].encode()
        return SignedRequest(
            headers={
                "content-type": "application/json; charset=utf-8",
                "User-Agent": "Linear-Webhook",
                DELIVERY: str(uuid.uuid4()),
                "Linear-Event": _event_name(payload),
                SIGNATURE: hmac.new(secret, body, hashlib.sha256).hexdigest(),
            },
            body=body,
        )


def linear_event(source_id: str, body: dict[str, Any], relay_accounts: list[str]) -> GroupEvent:
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


def _dedupe_key(request: InboundRequest, body: dict[str, Any]) -> str | None:
    """``Linear-Delivery``; without it the webhook id and send time, which tell a replay
    of the same request though not Linear's retry of it."""
    delivery = (request.header(DELIVERY) or "").strip()
    if len(delivery) > MAX_DELIVERY_ID:
        raise BadRequest(
            f"{DELIVERY} is longer than {MAX_DELIVERY_ID} characters", code="invalid_delivery_id"
        )
    if delivery:
        return delivery
    hook, stamp = _text(body.get("webhookId"), 128), body.get(TIMESTAMP)
    if hook and isinstance(stamp, int) and not isinstance(stamp, bool):
        return f"{hook}:{stamp}"
    return None


def sample_issue(now_ms: int) -> dict[str, Any]:
    """An ``Issue`` ``create`` payload shaped as Linear sends it, sent ``now_ms``."""
    now = datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(timespec="milliseconds")
    url = "https://linear.app/example/issue/ENG-12/fix-the-login-timeout"
    ada = {"id": "4c1b2a5e-8f1d-4f7a-9d2c-3e5b6a7c8d9e", "name": "Ada", "email": "ada@example.com"}
    state = {"id": "0d2f4b6c-8e1a-4c3e-9b5d-7f9a1c3e5b7d", "name": "Todo", "type": "unstarted"}
    team = {"id": "5e7a9c1b-3d5f-4a7c-8e9a-2b4d6f8a0c1e", "key": "ENG", "name": "Engineering"}
    issue = {
        "id": "7a9c1e3f-2b4d-4c6e-8f0a-1b3d5f7a9c2e",
        "identifier": "ENG-12",
        "number": 12,
        "title": "Fix the login timeout",
        "description": "Sessions end after five minutes instead of an hour.",
        "priority": 2,
        "url": url,
        "stateId": state["id"],
        "state": state,
        "teamId": team["id"],
        "team": team,
        "assigneeId": ada["id"],
        "assignee": ada,
        "labelIds": [],
    }
    return {
        "action": "create",
        "actor": {**ada, "type": "user"},
        "createdAt": now.replace("+00:00", "Z"),
        "data": issue,
        "url": url,
        "type": "Issue",
        "organizationId": "9b1d3f5a-7c9e-4b1d-8f3a-5c7e9b1d3f5a",
        "webhookId": "2f4a6c8e-0b2d-4f6a-9c8e-1d3f5b7a9c0e",
        TIMESTAMP: now_ms,
    }


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


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _event_name(payload: object) -> str:
    """The ``Linear-Event`` header Linear sends with ``payload``: its ``type``."""
    kind = payload.get("type") if isinstance(payload, dict) else None
    return kind if isinstance(kind, str) and _EVENT_NAME.fullmatch(kind) else "Issue"
