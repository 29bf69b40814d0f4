"""``hmac``: generic HMAC-signed webhooks (GitHub and the many senders shaped like it).

The sender puts ``prefix + encode(HMAC(secret, signed_payload))`` in one header. The
signed payload is a template over the raw body and, optionally, a timestamp header
(``"{timestamp}.{body}"``); with a timestamp, requests outside ``tolerance`` are
refused, which is the only replay protection a scheme like this has. Several secrets
may be configured so they can be rotated. The dedupe key is the value of
``delivery_id_header``; without one every request is a new event (a sender's retry
is then delivered twice), so set it whenever the sender has a delivery id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import string
import time
import uuid
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from relay.config.units import Duration
from relay.errors import BadRequest, Unauthorized
from relay.intake.sources.base import (
    BaseSource,
    InboundRequest,
    Parsed,
    SignedRequest,
    SourceOptions,
)
from relay.intake.sources.generic_payloads import event_from_json, read_json
from relay.intake.sources.standard_webhooks import SAMPLE_EVENT

PRESETS: dict[str, dict[str, str]] = {
    "github": {
        "header": "X-Hub-Signature-256",
        "algorithm": "sha256",
        "encoding": "hex",
        "prefix": "sha256=",
        "delivery_id_header": "X-GitHub-Delivery",
    },
}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name (RFC 9110)
_HEX = re.compile(r"[0-9a-fA-F]+")
_TEMPLATE_FIELDS = ("timestamp", "body")
MAX_DELIVERY_ID = 256


def _template_parts(template: str) -> list[tuple[str, str | None]]:
    """``"{timestamp}.{body}"`` → ``[("", "timestamp"), (".", "body")]``; ValueError if odd."""
    parts: list[tuple[str, str | None]] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"invalid template: {exc}") from None
    for literal, name, spec, conversion in parsed:
        if name is not None and (name not in _TEMPLATE_FIELDS or spec or conversion):
            written = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ValueError(f"unknown placeholder {{{written}}}; use {{timestamp}} and {{body}}")
        parts.append((literal, name))
    return parts


class HmacOptions(SourceOptions):
    preset: Literal["github"] | None = Field(None, description="Fill defaults for a sender.")
    secrets: list[str] = Field(description="Shared secrets; several to rotate.")
    header: str = Field(description="Header carrying the signature, e.g. X-Signature.")
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = Field("", description="Text before the digest, e.g. 'sha256='.")
    timestamp_header: str | None = Field(None, description="Header with the Unix time.")
    tolerance: Duration = Field(300, gt=0, description="Allowed clock skew each way.")
    signed_payload: str = Field(
        "{body}", validate_default=True, description="What is signed: {timestamp}, {body}."
    )
    delivery_id_header: str | None = Field(None, description="Header whose value is dedupe key.")
    file_headers: dict[str, str] = Field(
        default_factory=dict, repr=False, description="Headers sent when fetching files[].url."
    )
    file_hosts: list[str] | None = Field(
        None, description="Fetch files[].url only from these hosts (unset: any public host)."
    )
    allow_private: bool = Field(False, description="Let file fetches reach a private address.")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """A preset only fills keys the config leaves out, so explicit keys win."""
        if isinstance(data, dict) and isinstance(data.get("preset"), str):
            return {**PRESETS.get(data["preset"], {}), **data}
        return data

    @field_validator("secrets")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one secret is required")
        for i, secret in enumerate(value):
            if not secret:
                raise ValueError(f"secrets[{i}] is empty (is its environment variable set?)")
        return value

    @field_validator("header", "timestamp_header", "delivery_id_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and not _TOKEN.fullmatch(value):
            raise ValueError(f"{value!r} is not an HTTP header name")
        return value

    @field_validator("signed_payload")
    @classmethod
    def _template(cls, value: str, info: ValidationInfo) -> str:
        """The body must be signed; a timestamp is checked only if signed, and vice versa."""
        names = [name for _, name in _template_parts(value) if name]
        if "body" not in names:
            raise ValueError("the template must contain {body}: an unsigned body is forgeable")
        if "timestamp_header" not in info.data:
            return value  # timestamp_header is invalid itself, and reported as such
        if "timestamp" in names and not info.data["timestamp_header"]:
            raise ValueError("the template uses {timestamp}; set timestamp_header too")
        if info.data["timestamp_header"] and "timestamp" not in names:
            raise ValueError(
                "timestamp_header is set but the template lacks {timestamp}: "
                "an unsigned timestamp can be forged"
            )
        return value


class HmacSource(BaseSource):
    kind: ClassVar[str] = "hmac"
    Options = HmacOptions
    default_dedupe_ttl: ClassVar[float] = 3 * 86400  # GitHub lets you redeliver for 3 days

    def __init__(self, config: object) -> None:
        super().__init__(config)  # type: ignore[arg-type]
        opts: HmacOptions = self.options
        self.keys = [s.encode("utf-8") for s in opts.secrets]
        self.parts = _template_parts(opts.signed_payload)
        self.digest_size = hashlib.new(opts.algorithm).digest_size

    def _payload(self, timestamp: str | None, body: bytes) -> bytes:
        """The signed bytes: the template with the raw body spliced in (never re-encoded)."""
        out = bytearray()
        for literal, name in self.parts:
            out += literal.encode("utf-8")
            if name == "body":
                out += body
            elif name == "timestamp":
                out += (timestamp or "").encode("ascii")
        return bytes(out)

    def _digest(self, key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, payload, self.options.algorithm).digest()

    def _encode(self, digest: bytes) -> str:
        opts: HmacOptions = self.options
        if opts.encoding == "hex":
            return opts.prefix + digest.hex()
        return opts.prefix + base64.b64encode(digest).decode("ascii")

    def _decode(self, value: str) -> bytes:
        """The digest bytes a signature header carries; ``Unauthorized`` if malformed."""
        opts: HmacOptions = self.options
        if not value.startswith(opts.prefix):
            raise Unauthorized(
                f"{opts.header} does not start with {opts.prefix!r}", code="malformed_signature"
            )
        encoded = value[len(opts.prefix) :]
        try:
            if opts.encoding == "hex":
                if not _HEX.fullmatch(encoded):  # fromhex() alone would skip spaces
                    raise ValueError
                digest = bytes.fromhex(encoded)
            else:
                digest = base64.b64decode(encoded.encode("ascii"), validate=True)
        except (ValueError, binascii.Error):
            raise Unauthorized(
                f"{opts.header} is not {opts.encoding} after the prefix", code="malformed_signature"
            ) from None
        if len(digest) != self.digest_size:
            raise Unauthorized(
                f"{opts.header} carries {len(digest)} bytes; {opts.algorithm} makes "
                f"{self.digest_size}",
                code="malformed_signature",
            )
        return digest

    def _check_time(self, stamp: str) -> None:
        opts: HmacOptions = self.options
        if not stamp:
            raise Unauthorized(f"missing header {opts.timestamp_header}", code="missing_timestamp")
        if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 13:
            raise Unauthorized(
                f"{opts.timestamp_header} is not a Unix time in seconds or ms",
                code="invalid_timestamp",
            )
        sent = int(stamp) / 1000 if len(stamp) == 13 else int(stamp)
        skew = time.time() - sent
        if abs(skew) > opts.tolerance:
            raise Unauthorized(
                f"{opts.timestamp_header} is {abs(int(skew))}s "
                f"{'old' if skew > 0 else 'ahead'}; the window is ±{opts.tolerance:g}s",
                code="stale_timestamp",
            )

    def verify(self, request: InboundRequest) -> None:
        opts: HmacOptions = self.options
        value = (request.header(opts.header) or "").strip()
        if not value:
            raise Unauthorized(f"missing header {opts.header}", code="missing_signature")
        stamp = None
        if opts.timestamp_header:
            stamp = (request.header(opts.timestamp_header) or "").strip()
            self._check_time(stamp)
        received = self._decode(value)
        payload = self._payload(stamp, request.body)
        matched = False
        for key in self.keys:  # no early exit: the time taken does not depend on which key
            matched |= hmac.compare_digest(self._digest(key, payload), received)
        if not matched:
            raise Unauthorized(
                f"{opts.header} matches no configured secret", code="invalid_signature"
            )

    def parse(self, request: InboundRequest) -> Parsed:
        event = event_from_json(self.config.id, read_json(request))
        return Parsed(event, self._delivery_id(request))

    def _delivery_id(self, request: InboundRequest) -> str | None:
        name = self.options.delivery_id_header
        if not name:
            return None
        value = (request.header(name) or "").strip()
        if not value:
            raise BadRequest(
                f"missing header {name}; it is this source's dedupe key", code="missing_delivery_id"
            )
        if len(value) > MAX_DELIVERY_ID:
            raise BadRequest(
                f"{name} is longer than {MAX_DELIVERY_ID} characters", code="invalid_delivery_id"
            )
        return value

    def sample(self, body: bytes | None = None) -> SignedRequest:
        opts: HmacOptions = self.options
        body = body if body is not None else json.dumps(SAMPLE_EVENT).encode()
        headers = {"content-type": "application/json"}
        stamp = None
        if opts.timestamp_header:
            stamp = str(int(time.time()))
            headers[opts.timestamp_header] = stamp
        if opts.delivery_id_header:
            headers[opts.delivery_id_header] = str(uuid.uuid4())
        headers[opts.header] = self._encode(self._digest(self.keys[0], self._payload(stamp, body)))
        return SignedRequest(headers=headers, body=body)
