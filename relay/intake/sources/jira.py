"""``jira``: Jira Cloud and Data Center issue webhooks as ``task.*`` events.

An admin webhook (System → WebHooks) saved with a secret signs the raw body:
``X-Hub-Signature: sha256=<hex HMAC>``, WebSub's ``method=signature``. Issue and comment
events become ``task.*`` events keyed by the issue key (``OPS-12``), the key the ``jira``
target records, so the workers find the thread a task came from; every other event is
acknowledged as ``custom``. Jira resends a delivery with the same
``X-Atlassian-Webhook-Identifier``, the dedupe key. One new comment may arrive twice
(``comment_created`` and ``jira:issue_updated``/``issue_commented`` when both are ticked),
so comment events are keyed by the comment's id instead and the second is a duplicate.

The mapping of a payload to an event lives in ``jira_payloads``; this module holds the
options, the signature check, the delivery id and the sample request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from typing import Any, ClassVar

from relay.errors import BadRequest, Unauthorized
from relay.intake.sources.base import BaseSource, InboundRequest, Parsed, SignedRequest
from relay.intake.sources.generic_payloads import read_json
from relay.intake.sources.jira_payloads import MAX_ID, comment_id, event_from_body
from relay.intake.sources.task_payloads import TaskSourceOptions, signature_matches

SIGNATURE_HEADER = "X-Hub-Signature"
IDENTIFIER_HEADER = "X-Atlassian-Webhook-Identifier"
# WebSub methods; Atlassian signs with sha256 and warns it may change the method later
_SIGNATURE = re.compile(r"(sha256|sha384|sha512)=([0-9a-fA-F]+)")
_HEX_DIGITS = {"sha256": 64, "sha384": 96, "sha512": 128}


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
        event = event_from_body(self.config.id, body, self.options.relay_accounts)
        comment = comment_id(body)
        if event.type == "task.commented" and comment:
            return Parsed(event, f"comment:{comment}")
        return Parsed(event, _delivery_id(request))

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
