"""HTTP responses as typed delivery outcomes, and the excerpts kept in attempt records."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from relay.errors import DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from workers.net.addresses import safe_url
from workers.net.http import HttpAnswer


@dataclass(frozen=True)
class Chained:
    """A delivery to start once this one has succeeded (a confirmation posted back into
    the group): to ``target``, with ``vars`` (the task, the stored files) for its
    template. It gets its own id, record and retries."""

    target: str
    vars: Mapping[str, Any] = field(default_factory=dict)
    template: str | None = None  # else the chained target's own, else its default


@dataclass(frozen=True)
class DeliveryResult:
    """What a target returns for a delivered attempt: the status and a capped excerpt of
    the answer, kept in the attempt record, and the deliveries it chains."""

    status: int | None = None
    excerpt: str | None = None
    chain: tuple[Chained, ...] = ()


def excerpt(text: str, limit: int = 1024) -> str:
    """At most ``limit`` characters of a response, for attempt records and dead letters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def response_text(response: HttpAnswer, limit: int = 4096) -> str:
    """The start of the body as text: what excerpts and error codes are read from, so a
    large (up to ``MAX_BODY``) body is never decoded whole."""
    return response.decode(limit)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds or HTTP-date); None if garbage."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"-?\d{1,12}", value):
        return float(max(0, int(value)))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def classify(response: HttpAnswer) -> DeliveryResult:
    """2xx is success; everything else raises the retryable or permanent error it means."""
    status = response.status
    text = excerpt(response_text(response))
    if 200 <= status < 300:
        return DeliveryResult(status=status, excerpt=text)
    error: DeliveryError
    if 300 <= status < 400:
        location = response.headers.get("location")
        target = safe_url(location) if location else "nowhere"
        error = PermanentDeliveryError(
            f"HTTP {status}: redirect to {target} not followed", status=status, excerpt=text
        )
    elif status == 410:
        error = PermanentDeliveryError("HTTP 410: the target is gone", status=status, excerpt=text)
    elif status in (408, 425, 429) or 500 <= status:
        error = RetryableDeliveryError(
            f"HTTP {status}",
            status=status,
            excerpt=text,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    elif 400 <= status < 500:
        error = PermanentDeliveryError(f"HTTP {status}", status=status, excerpt=text)
    else:
        error = RetryableDeliveryError(f"unexpected HTTP {status}", status=status, excerpt=text)
    raise error


def classify_redacted(response: HttpAnswer, redact: Callable[[str], str]) -> DeliveryResult:
    """``classify``, with ``redact`` applied to the excerpt an error carries (tokens in
    echoed URLs)."""
    try:
        return classify(response)
    except DeliveryError as exc:
        exc.excerpt = redact(exc.excerpt or "") or None
        raise


def json_object(text: str) -> dict[str, Any]:
    """The body as a JSON object, or ``{}`` if it is not one (an HTML error page, ...)."""
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
