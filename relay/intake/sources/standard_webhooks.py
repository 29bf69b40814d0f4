"""``standard_webhooks``: any sender that follows the Standard Webhooks spec (Svix, ...).

Verifies ``webhook-signature`` against every configured ``whsec_`` secret (several
during rotation) over ``{webhook-id}.{webhook-timestamp}.{body}``, within ±5 minutes
(configurable), and drops resends by ``webhook-id``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, ClassVar

from pydantic import AfterValidator, ConfigDict, Field

from relay import signing
from relay.config.units import Duration
from relay.errors import Unauthorized
from relay.intake.sources.base import (
    BaseSource,
    InboundRequest,
    Parsed,
    SignedRequest,
    SourceOptions,
)
from relay.intake.sources.generic_payloads import event_from_json, read_json

SAMPLE_EVENT = {
    "type": "message.created",
    "data": {
        "group": {"id": "ops-room", "name": "Ops"},
        "sender": {"id": "u-42", "name": "Ada"},
        "text": "Deploy finished: relay is live",
    },
}


def _decodable(secret: str) -> str:
    signing.decode_secret(secret)
    return secret


Secret = Annotated[str, AfterValidator(_decodable)]


class StandardWebhooksOptions(SourceOptions):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    secrets: list[Secret] = Field(min_length=1, description="whsec_ secrets; several to rotate.")
    tolerance: Duration = Field(300, gt=0, description="Allowed clock skew each way.")
    file_headers: dict[str, str] = Field(
        default_factory=dict, repr=False, description="Headers sent when fetching files[].url."
    )
    file_hosts: list[str] | None = Field(
        None, description="Fetch files[].url only from these hosts (unset: any public host)."
    )
    allow_private: bool = Field(False, description="Let file fetches reach a private address.")


class StandardWebhooksSource(BaseSource):
    kind: ClassVar[str] = "standard_webhooks"
    Options = StandardWebhooksOptions
    default_dedupe_ttl: ClassVar[float] = 3 * 86400  # senders retry for up to ~3 days

    def __init__(self, config: object) -> None:
        super().__init__(config)  # type: ignore[arg-type]
        self.keys = [signing.decode_secret(s) for s in self.options.secrets]

    def verify(self, request: InboundRequest) -> None:
        check_signed(
            request,
            self.keys,
            self.options.tolerance,
            mismatch="no v1 signature matches a configured secret",
        )

    def parse(self, request: InboundRequest) -> Parsed:
        event = event_from_json(self.config.id, read_json(request))
        return Parsed(event, request.header("webhook-id"))

    def sample(self, body: bytes | None = None) -> SignedRequest:
        body = body if body is not None else json.dumps(SAMPLE_EVENT).encode()
        msg_id = f"msg_{uuid.uuid4().hex}"
        stamp = str(int(time.time()))
        return SignedRequest(
            headers={
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": stamp,
                "webhook-signature": signing.sign_header(self.keys[:1], msg_id, stamp, body),
            },
            body=body,
        )


def check_signed(
    request: InboundRequest, keys: list[bytes], tolerance: float, *, mismatch: str
) -> None:
    """Standard Webhooks' check (also GitLab's signing token): the three headers present,
    the timestamp within ``tolerance`` seconds each way, a ``v1`` signature of
    ``{webhook-id}.{webhook-timestamp}.{body}`` by one of ``keys``; else ``Unauthorized``
    with ``mismatch`` for a signature that matches none."""
    msg_id = request.header("webhook-id")
    stamp = request.header("webhook-timestamp")
    header = request.header("webhook-signature")
    given = (("webhook-id", msg_id), ("webhook-timestamp", stamp), ("webhook-signature", header))
    missing = [name for name, value in given if not value]
    if missing or not msg_id or not stamp or not header:
        raise Unauthorized(f"missing header {', '.join(missing)}", code="missing_signature")
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        raise Unauthorized(
            "webhook-timestamp is not a Unix time in seconds", code="invalid_timestamp"
        )
    skew = time.time() - int(stamp)
    if abs(skew) > tolerance:
        raise Unauthorized(
            f"webhook-timestamp is {abs(int(skew))}s {'old' if skew > 0 else 'ahead'}; "
            f"the window is ±{tolerance:g}s",
            code="stale_timestamp",
        )
    if not signing.matches(keys, msg_id, stamp, request.body, header):
        raise Unauthorized(mismatch, code="invalid_signature")
