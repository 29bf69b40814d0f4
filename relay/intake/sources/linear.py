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

The mapping of a payload to an event lives in ``linear_payloads``; this module holds the
options, the signature and timestamp checks, the dedupe key and the sample request.
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
from relay.intake.sources.base import BaseSource, InboundRequest, Parsed, Reply, SignedRequest
from relay.intake.sources.generic_payloads import read_json
from relay.intake.sources.linear_payloads import TIMESTAMP, linear_event
from relay.intake.sources.task_payloads import TaskSourceOptions, signature_matches

SIGNATURE = "Linear-Signature"
DELIVERY = "Linear-Delivery"
MAX_DELIVERY_ID = 256
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_EVENT_NAME = re.compile(r"[A-Za-z]{1,64}")


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
    hook, stamp = body.get("webhookId"), body.get(TIMESTAMP)
    if isinstance(hook, str) and hook and isinstance(stamp, int) and not isinstance(stamp, bool):
        return f"{hook[:128]}:{stamp}"
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


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _event_name(payload: object) -> str:
    """The ``Linear-Event`` header Linear sends with ``payload``: its ``type``."""
    kind = payload.get("type") if isinstance(payload, dict) else None
    return kind if isinstance(kind, str) and _EVENT_NAME.fullmatch(kind) else "Issue"
