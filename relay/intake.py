"""Durably queue one parsed event: the step the receiver and the poller share."""

from __future__ import annotations

from dataclasses import dataclass

import redis
import structlog
from pydantic_core import PydanticSerializationError

from relay.errors import Unavailable, Unprocessable
from relay.runtime import Runtime
from relay.sources.base import Parsed

log = structlog.get_logger("relay.intake")


@dataclass(frozen=True)
class Accepted:
    """The queued event's id; ``duplicate`` when it is a resend of an earlier one."""

    event_id: str
    duplicate: bool


def enqueue(runtime: Runtime, source_id: str, parsed: Parsed) -> Accepted:
    """Dedupe and enqueue in one script; ``Unavailable`` (503) when Redis is away."""
    event = parsed.event
    try:
        event_json = event.to_json()
    except PydanticSerializationError as exc:  # lone surrogates, nesting past the limit
        raise Unprocessable(f"the event cannot be stored as JSON: {exc}") from None
    try:
        earlier = runtime.queue.accept_event(
            source_id,
            event.id,
            event_json,
            dedupe_key=parsed.dedupe_key,
            dedupe_ttl=runtime.dedupe_ttl(source_id),
            single_use=parsed.single_use,
            single_use_ttl=parsed.single_use_ttl,
        )
    except redis.RedisError as exc:
        log.error("intake.unavailable", source=source_id, error=type(exc).__name__)
        raise Unavailable("the queue is unreachable; retry later", retry_after=5) from None
    if earlier is not None:
        return Accepted(earlier, duplicate=True)
    return Accepted(event.id, duplicate=False)
