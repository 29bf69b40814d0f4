"""``acme``: group events from Acme Chat's outgoing webhooks.

Acme signs every request: ``Acme-Signature: sha256=`` + hex HMAC-SHA256 of
``"{Acme-Timestamp}.{raw body}"`` with the endpoint's signing secret, and retries
anything but a 200 for 24 hours with the same event ``id``. The relay refuses requests
outside ``tolerance`` (the replay window) and drops resends by ``id`` (the dedupe key).
Before Acme sends events to a new endpoint it proves the URL with a signed
``endpoint.verification`` request, answered here with its ``challenge``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, field_validator
from relay.config.models import SourceConfig
from relay.config.units import Duration
from relay.errors import BadRequest, IntakeError, Unauthorized
from relay.intake.sources.base import (
    BaseSource,
    InboundRequest,
    Parsed,
    Reply,
    SignedRequest,
    SourceOptions,
)
from relay.intake.sources.generic_payloads import read_json

from group_relay_acme import payloads

SIGNATURE_HEADER = "Acme-Signature"
TIMESTAMP_HEADER = "Acme-Timestamp"
NO_RETRY_HEADER = "Acme-No-Retry"
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
VERIFICATION = "endpoint.verification"


def signature(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The ``Acme-Signature`` value Acme computes for ``body`` sent at ``timestamp``."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    digest = hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


class AcmeOptions(SourceOptions):
    """``hide_input_in_errors``: a config error must never echo a secret."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    signing_secrets: list[str] = Field(
        min_length=1, repr=False, description="The endpoint's signing secrets; several to rotate."
    )
    tolerance: Duration = Field(300, gt=0, description="Allowed clock skew each way.")
    bot_user_id: str | None = Field(
        None, min_length=1, max_length=256, description="The bot's user id: sets mentions_bot."
    )

    @field_validator("signing_secrets")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        for i, secret in enumerate(value):
            if not secret:
                raise ValueError(
                    f"signing_secrets[{i}] is empty (is its environment variable set?)"
                )
        return value


class AcmeSource(BaseSource):
    kind: ClassVar[str] = "acme"
    Options: ClassVar[type[SourceOptions]] = AcmeOptions  # as the Source protocol declares it
    default_dedupe_ttl: ClassVar[float] = 2 * 86400  # Acme retries for 24 h; keep two days

    def __init__(self, config: SourceConfig) -> None:
        super().__init__(config)
        self.keys = [s.encode("utf-8") for s in self.options.signing_secrets]

    def verify(self, request: InboundRequest) -> None:
        """Fresh timestamp first (cheap), then the signature against every secret."""
        value = (request.header(SIGNATURE_HEADER) or "").strip()
        stamp = (request.header(TIMESTAMP_HEADER) or "").strip()
        if not value:
            raise Unauthorized(f"missing header {SIGNATURE_HEADER}", code="missing_signature")
        if not stamp:
            raise Unauthorized(f"missing header {TIMESTAMP_HEADER}", code="missing_timestamp")
        if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
            raise Unauthorized(
                f"{TIMESTAMP_HEADER} is not a Unix time in seconds", code="invalid_timestamp"
            )
        skew = time.time() - int(stamp)
        tolerance = self.options.tolerance
        if abs(skew) > tolerance:
            raise Unauthorized(
                f"{TIMESTAMP_HEADER} is {abs(int(skew))}s {'old' if skew > 0 else 'ahead'}; "
                f"the window is ±{tolerance:g}s",
                code="stale_timestamp",
            )
        match = _SIGNATURE.fullmatch(value)
        if not match:
            raise Unauthorized(
                f"{SIGNATURE_HEADER} is not 'sha256=' and 64 hex digits",
                code="malformed_signature",
            )
        received = bytes.fromhex(match.group(1))
        payload = stamp.encode("ascii") + b"." + request.body
        matched = False
        for key in self.keys:  # no early exit: the time taken does not tell which key matched
            expected = hmac.new(key, payload, hashlib.sha256).digest()
            matched |= hmac.compare_digest(expected, received)
        if not matched:
            raise Unauthorized(
                f"{SIGNATURE_HEADER} matches no configured signing secret",
                code="invalid_signature",
            )

    def handshake(self, request: InboundRequest) -> Reply | None:
        """Acme's URL check, verified like an event: an unsigned one proves nothing."""
        if request.method != "POST" or VERIFICATION.encode() not in request.body:
            return None  # the cheap test first: events never pay for a second JSON parse
        try:
            body = read_json(request)
        except IntakeError:
            return None  # parse() reports it, after verification
        if not isinstance(body, dict) or body.get("type") != VERIFICATION:
            return None
        self.verify(request)
        challenge = body.get("challenge")
        if not isinstance(challenge, str) or not challenge or len(challenge) > 256:
            raise BadRequest(f"{VERIFICATION} without a challenge", code="missing_challenge")
        return Reply(200, json.dumps({"challenge": challenge}).encode())

    def parse(self, request: InboundRequest) -> Parsed:
        body = read_json(request)  # 415 for another media type, 400 for bad JSON
        if not isinstance(body, dict):
            raise BadRequest("an Acme event is a JSON object", code="invalid_payload")
        key = payloads.event_id(body)
        event = payloads.to_event(self.config.id, body, bot_user_id=self.options.bot_user_id)
        return Parsed(event, key)

    def reply(self, request: InboundRequest, event_id: str, *, duplicate: bool) -> Reply:
        """200 for both: Acme retries any other status, 202 included."""
        body: dict[str, Any] = {"ok": True, "event_id": event_id}
        if duplicate:
            body["duplicate"] = True
        return Reply(200, json.dumps(body).encode())

    def refusal_headers(self, error: IntakeError) -> Mapping[str, str]:
        """``Acme-No-Retry: 1`` when the same request can never succeed (a body that is
        not an event). A 401 is left to Acme's retries, which succeed once a rotated
        secret is configured, and so are 429 and 503."""
        if error.status in (400, 413, 415, 422):
            return {NO_RETRY_HEADER: "1"}
        return {}

    def sample(self, body: bytes | None = None) -> SignedRequest:
        """A message in an ``ops`` room (or ``body``), signed with the first secret."""
        now = int(time.time())
        if body is None:
            body = json.dumps(
                {
                    "id": f"ev_{uuid.uuid4().hex}",
                    "type": "message.posted",
                    "created_at": now,
                    "room": {"id": "room-ops", "name": "Ops"},
                    "user": {"id": "u-ada", "name": "Ada"},
                    "message": {"id": f"m_{uuid.uuid4().hex[:12]}", "text": "Deploy finished"},
                }
            ).encode()
        stamp = str(now)
        return SignedRequest(
            headers={
                "content-type": "application/json",
                TIMESTAMP_HEADER: stamp,
                SIGNATURE_HEADER: signature(self.keys[0], stamp, body),
            },
            body=body,
        )
