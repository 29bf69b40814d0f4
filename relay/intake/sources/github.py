"""``github``: a repository's or organisation's issue webhooks as ``task.*`` events.

GitHub signs the raw body with HMAC-SHA256 under the webhook's secret and sends
``X-Hub-Signature-256: sha256=<hex>``; ``X-GitHub-Event`` names the event and
``X-GitHub-Delivery`` (kept on a redelivery) is the dedupe key. ``issues`` and
``issue_comment`` events about issues become ``task.*`` events; a ``ping`` is
answered once verified, so a wrong secret shows up on GitHub's "Recent Deliveries"
page; anything else (pull requests, pushes, comment edits) is queued as ``custom``
with the whole payload in ``raw``, as other sources do with what they do not map.
Only the body is signed: the event name and delivery id in the headers are not.

The mapping of a payload to an event lives in ``github_payloads``; this module holds the
options, the signature check, the headers, the ``ping`` answer and the sample request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from relay.errors import BadRequest, Unauthorized, UnsupportedMediaType
from relay.intake.sources.base import BaseSource, InboundRequest, Parsed, Reply, SignedRequest
from relay.intake.sources.generic_payloads import read_json
from relay.intake.sources.github_payloads import event_from_hook
from relay.intake.sources.task_payloads import TaskSourceOptions, signature_matches

SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"
MAX_DELIVERY_ID = 256
WANTED_EVENTS = ("issues", "issue_comment")  # what a webhook must send for two-way sync
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_EVENT_NAME = re.compile(r"[a-z_]{1,64}")


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
        event = event_from_hook(self.config.id, body, self.options.relay_accounts, name)
        return Parsed(event, _delivery_id(request))

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
