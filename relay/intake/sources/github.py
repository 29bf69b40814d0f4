"""``github``: a repository's or organisation's issue webhooks as ``task.*`` events.

GitHub signs the raw body with HMAC-SHA256 under the webhook's secret and sends
``X-Hub-Signature-256: sha256=<hex>``; ``X-GitHub-Event`` names the event and
``X-GitHub-Delivery`` (kept on a redelivery) is the dedupe key. ``issues`` and
``issue_comment`` events about issues become ``task.*`` events; a ``ping`` is
answered once verified, so a wrong secret shows up on GitHub's "Recent Deliveries"
page; anything else (pull requests, pushes, comment edits) is queued as ``custom``
with the whole payload in ``raw``, as other sources do with what they do not map.
Only the body is signed: the event name and delivery id in the headers are not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import ValidationError

from relay.errors import BadRequest, Unauthorized, Unprocessable, UnsupportedMediaType
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

SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"
MAX_DELIVERY_ID = 256
WANTED_EVENTS = ("issues", "issue_comment")  # what a webhook must send for two-way sync
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_EVENT_NAME = re.compile(r"[a-z_]{1,64}")

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


class GitHubOptions(TaskSourceOptions):
    """Options of the ``github`` source."""


class GitHubSource(BaseSource):
    """Verifies GitHub's webhook signature and maps issue events to ``task.*``."""

    kind: ClassVar[str] = "github"
    Options: ClassVar[type[TaskSourceOptions]] = GitHubOptions
    # github.com redelivers for 3 days, GitHub Enterprise Server for 7
    default_dedupe_ttl: ClassVar[float] = 7 * 86400

    def handshake(self, request: InboundRequest) -> Reply | None:
        """A ``ping`` (sent when the webhook is created) is verified, then answered
        without queueing anything; its answer names the events two-way sync needs
        that the webhook does not send, so the mistake shows on GitHub's side."""
        if request.method != "POST" or _event_name(request) != "ping":
            return None
        self.verify(request)
        body = _json(request)
        answer: dict[str, Any] = {"pong": True}
        hook = body.get("hook") if isinstance(body, dict) else None
        events = hook.get("events") if isinstance(hook, dict) else None
        if isinstance(events, list) and "*" not in events:
            missing = [name for name in WANTED_EVENTS if name not in events]
            if missing:
                answer["missing_events"] = missing
        return Reply(200, json.dumps(answer).encode())

    def verify(self, request: InboundRequest) -> None:
        value = (request.header(SIGNATURE_HEADER) or "").strip()
        if not value:
            raise Unauthorized(
                f"missing header {SIGNATURE_HEADER}; give the webhook a secret",
                code="missing_signature",
            )
        match = _SIGNATURE.fullmatch(value)
        if match is None:
            raise Unauthorized(
                f"{SIGNATURE_HEADER} is not 'sha256=' and 64 hex digits",
                code="malformed_signature",
            )
        if not signature_matches(self.options.secrets, request.body, match.group(1)):
            raise Unauthorized(
                f"{SIGNATURE_HEADER} matches no configured secret", code="invalid_signature"
            )

    def parse(self, request: InboundRequest) -> Parsed:
        body = _json(request)
        name = _event_name(request)
        if name is None:
            raise BadRequest(f"missing header {EVENT_HEADER}", code="missing_event")
        if not _EVENT_NAME.fullmatch(name):
            raise BadRequest(f"{EVENT_HEADER} is not an event name", code="invalid_event_name")
        return Parsed(self._event(name, body), _delivery_id(request))

    def _event(self, name: str, body: Any) -> GroupEvent:
        """The ``task.*`` event of an issue change, else a ``custom`` event."""
        issue = body.get("issue") if isinstance(body, dict) else None
        on_pull_request = isinstance(issue, dict) and issue.get("pull_request") is not None
        if name == "issues" and not on_pull_request:
            return self._issue_event(body)
        created = isinstance(body, dict) and body.get("action") == "created"
        if name == "issue_comment" and created and not on_pull_request:
            return self._comment_event(body)
        return _custom(self.config.id, name, body)

    def _issue_event(self, body: Any) -> GroupEvent:
        if not isinstance(body, dict):
            raise Unprocessable("an issues payload must be a JSON object")
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise Unprocessable("action: missing from the issues payload")
        change = self._change(body)
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
        return self._task(
            _ISSUE_TYPES.get(action, "task.updated"), change, issue.get("updated_at"), body
        )

    def _comment_event(self, body: dict[str, Any]) -> GroupEvent:
        comment = body.get("comment")
        if not isinstance(comment, dict):
            raise Unprocessable("comment: missing from the issue_comment payload")
        text = comment.get("body")
        stripped, marked = strip_marker(text if isinstance(text, str) else None)
        change = self._change(body)
        change["comment"] = stripped[:65536] if stripped else None
        change["by_relay"] = change["by_relay"] or marked
        return self._task("task.commented", change, comment.get("created_at"), body)

    def _change(self, body: dict[str, Any]) -> dict[str, Any]:
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
                user
                for user in map(_user, assignees if isinstance(assignees, list) else [])
                if user
            ],
            "actor": actor,
            "by_relay": by_relay_account(actor, self.options.relay_accounts),
        }

    def _task(self, type: str, change: dict[str, Any], when: Any, raw: Any) -> GroupEvent:
        try:
            return task_event(
                source_id=self.config.id,
                type=type,
                change=TaskChange.model_validate(change),
                occurred_at=_time(when),
                raw=raw,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "task"
            raise Unprocessable(f"{where}: {first['msg']}") from None

    def sample(self, body: bytes | None = None) -> SignedRequest:
        """A comment on issue #1 (or ``body``, its event guessed from its shape), signed
        with the first secret as GitHub signs it."""
        if body is None:
            body, event = json.dumps(_sample_comment()).encode(), "issue_comment"
        else:
            event = _guess_event(body)
        key = self.options.secrets[0].encode()
        return SignedRequest(
            headers={
                "content-type": "application/json",
                "User-Agent": "GitHub-Hookshot/relay-sample",
                EVENT_HEADER: event,
                DELIVERY_HEADER: str(uuid.uuid4()),
                SIGNATURE_HEADER: "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(),
            },
            body=body,
        )


def _json(request: InboundRequest) -> Any:
    """The body as JSON; a form-encoded delivery gets a 415 that says what to change."""
    media = request.content_type
    if media == "application/x-www-form-urlencoded":
        raise UnsupportedMediaType(
            "content type 'application/x-www-form-urlencoded' is not accepted; "
            "set the webhook's Content type to application/json"
        )
    return read_json(request)


def _event_name(request: InboundRequest) -> str | None:
    value = (request.header(EVENT_HEADER) or "").strip()
    return value or None


def _delivery_id(request: InboundRequest) -> str:
    value = (request.header(DELIVERY_HEADER) or "").strip()
    if not value:
        raise BadRequest(
            f"missing header {DELIVERY_HEADER}; it is this source's dedupe key",
            code="missing_delivery_id",
        )
    if len(value) > MAX_DELIVERY_ID:
        raise BadRequest(
            f"{DELIVERY_HEADER} is longer than {MAX_DELIVERY_ID} characters",
            code="invalid_delivery_id",
        )
    return value


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


def _guess_event(body: bytes) -> str:
    """The ``X-GitHub-Event`` a body of this shape would come with (``relay send``)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return "issues"
    if isinstance(data, dict) and "zen" in data and "hook_id" in data:
        return "ping"
    if isinstance(data, dict) and "comment" in data and "issue" in data:
        return "issue_comment"
    return "issues"


def _sample_comment() -> dict[str, Any]:
    """An ``issue_comment`` payload cut to what the mapping reads, written now."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    octocat = {"login": "octocat", "type": "User"}
    url = "https://github.com/octo-org/hello-world/issues/1"
    return {
        "action": "created",
        "issue": {
            "html_url": url,
            "number": 1,
            "title": "Login times out after 30 s",
            "state": "open",
            "assignees": [octocat],
            "updated_at": now,
        },
        "comment": {
            "html_url": f"{url}#issuecomment-1",
            "id": 1,
            "user": octocat,
            "created_at": now,
            "body": "The fix is in staging; closing once QA signs off.",
        },
        "repository": {"full_name": "octo-org/hello-world", "name": "hello-world"},
        "sender": octocat,
    }
