"""``webhook`` target: POST the event as JSON, signed the Standard Webhooks way.

The body is exactly ``context.event_json``; ``webhook-id`` is the delivery id, so it
stays the same on every retry and replay and receivers can use it to deduplicate.
Every request goes through the guarded pools of ``workers.net.http`` (SSRF policy,
no redirects, typed outcomes).
"""

from __future__ import annotations

import re
import time
from typing import ClassVar

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from relay import __version__
from relay.config.models import TargetConfig
from relay.errors import ConfigError
from relay.signing import decode_secret, sign_header
from workers.net.addresses import check_url
from workers.net.http import guarded_pool, send
from workers.net.outcomes import classify
from workers.targets.base import BaseTarget, DeliveryContext, DeliveryResult, TargetOptions

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110)
_RESERVED = {
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "user-agent",
}


class WebhookOptions(TargetOptions):
    """What a ``webhook`` target adds to the common target fields."""

    # Secrets must not show up in validation errors or reprs.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: str
    secret: str | None = Field(None, repr=False)
    secrets: list[str] = Field(default_factory=list, repr=False)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str, info: ValidationInfo) -> str:
        """Scheme and host always; the address policy too when the config loader passes
        the target's ``allow_private`` as validation context (the target checks it anyway)."""
        context = info.context if isinstance(info.context, dict) else {}
        check_url(value, allow_private=bool(context.get("allow_private", True)))
        return value

    @field_validator("secret")
    @classmethod
    def _one_secret(cls, value: str | None) -> str | None:
        if value is not None:
            decode_secret(value)
        return value

    @field_validator("secrets")
    @classmethod
    def _many_secrets(cls, value: list[str]) -> list[str]:
        for i, secret in enumerate(value):
            try:
                decode_secret(secret)
            except ValueError as exc:
                raise ValueError(f"secrets[{i}]: {exc}") from None
        return value

    @field_validator("headers")
    @classmethod
    def _static_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            lowered = name.lower()
            if not _TOKEN.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if lowered.startswith("webhook-") or lowered in _RESERVED:
                raise ValueError(f"header {name!r} is set by the relay and cannot be overridden")
            if "\r" in text or "\n" in text:
                raise ValueError(f"header {name!r}: the value contains a line break")
        return value

    @model_validator(mode="after")
    def _not_both(self) -> WebhookOptions:
        if self.secret is not None and self.secrets:
            raise ValueError("use secret or secrets, not both")
        return self

    @property
    def all_secrets(self) -> list[str]:
        return [self.secret] if self.secret is not None else list(self.secrets)


class WebhookTarget(BaseTarget):
    """POST each event to ``url``; several secrets give several signatures (rotation)."""

    kind: ClassVar[str] = "webhook"
    family: ClassVar[str] = "webhook"
    Options: ClassVar[type[WebhookOptions]] = WebhookOptions

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        options = config.options
        if not isinstance(options, WebhookOptions):
            options = WebhookOptions.model_validate(options or {})
        try:
            check_url(options.url, config.allow_private)
        except ValueError as exc:
            raise ConfigError([f"targets.{config.id}.url: {exc}"]) from None
        self.options: WebhookOptions = options
        self._keys = [decode_secret(secret) for secret in options.all_secrets]

    def headers(self, delivery_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """The request headers; static ones first so ours always win."""
        headers = dict(self.options.headers)
        headers.update(
            {
                "content-type": "application/json; charset=utf-8",  # the bytes signed
                "user-agent": f"group-relay/{__version__}",
                "webhook-id": delivery_id,
                "webhook-timestamp": str(timestamp),
            }
        )
        if self._keys:
            headers["webhook-signature"] = sign_header(self._keys, delivery_id, timestamp, body)
        return headers

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        body = context.event_json.encode()
        headers = self.headers(context.delivery_id, int(time.time()), body)
        pools = guarded_pool(self.config.allow_private)
        timeout = self.config.timeout or context.timeout
        response = send(
            pools, "POST", self.options.url, timeout=timeout, data=body, headers=headers
        )
        return classify(response)
