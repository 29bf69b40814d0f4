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

The mapping of a hook to an event lives in ``gitlab_payloads``; this module holds the
options, the token and signature checks, the delivery id and the sample request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, model_validator

from relay import signing
from relay.config.models import SourceConfig
from relay.config.units import Duration
from relay.errors import BadRequest, Unauthorized
from relay.intake.sources.base import (
    BaseSource,
    InboundRequest,
    Parsed,
    SignedRequest,
    SourceOptions,
)
from relay.intake.sources.generic_payloads import read_json
from relay.intake.sources.gitlab_payloads import event_from_hook
from relay.intake.sources.standard_webhooks import Secret, check_signed
from relay.intake.sources.task_payloads import TaskSourceOptions

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
        if self.keys and signature:  # Standard Webhooks over id, timestamp and raw body
            check_signed(
                request,
                self.keys,
                opts.tolerance,
                mismatch="webhook-signature matches no configured signing token",
            )
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
