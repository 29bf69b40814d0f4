"""Durably queue one parsed event: the step the receiver and the poller share.

``Intake`` holds what that step needs (the built sources, the outbox, the inbound rate
windows), so the route and the poller depend on nothing above the intake.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import redis
import structlog
from pydantic_core import PydanticSerializationError

from relay.config.kinds import source_kinds
from relay.config.models import RelayConfig
from relay.errors import TooManyRequests, Unavailable, Unprocessable
from relay.intake.sources.base import Parsed, Source
from relay.settings import Settings
from relay.state import keys
from relay.state.connection import RedisStalled
from relay.state.outbox import Outbox
from relay.state.replicas import NotReplicated, Replicas
from relay.state.sealing import Sealer
from relay.state.windows import SlidingWindows

log = structlog.get_logger("relay.intake")
RETRY_AFTER = 5  # seconds a sender is asked to wait after a 503


@dataclass(frozen=True)
class Accepted:
    """The queued event's id; ``duplicate`` when it is a resend of an earlier one."""

    event_id: str
    duplicate: bool


@dataclass
class Intake:
    """The configured sources and the Redis steps that accept their events."""

    settings: Settings
    config: RelayConfig
    redis: redis.Redis
    outbox: Outbox
    sources: dict[str, Source] = field(init=False)
    windows: SlidingWindows = field(init=False)
    replicas: Replicas = field(init=False)
    sealer: Sealer = field(init=False)  # RELAY_ENCRYPTION_KEYS: the event is stored sealed

    def __post_init__(self) -> None:
        kinds = source_kinds()
        # A command that left a source's secrets unresolved never receives its events.
        unresolved = self.config.unresolved()
        self.sources = {
            sid: kinds[sc.kind](sc)
            for sid, sc in self.config.sources.items()
            if f"sources.{sid}" not in unresolved
        }
        self.windows = SlidingWindows(self.redis)
        self.replicas = Replicas.of(self.settings)
        self.sealer = Sealer.of(self.settings)

    def inbound_limit(self, source_id: str) -> None:
        """Take a slot of the source's inbound rate limit, or refuse with 429.

        Checked after verification, so only authentic requests spend the budget: a
        flood of forged requests is refused (401) without locking out the platform."""
        rates = self.config.sources[source_id].rate_limit
        if not rates:
            return
        try:
            wait = self.windows.acquire(lambda i: keys.source_rate(source_id, i), rates)
        except redis.RedisError as exc:
            raise self.unavailable(source_id, exc, wrote=False) from None
        if wait > 0:
            limits = ", ".join(str(rate) for rate in rates)
            raise TooManyRequests(
                f"source {source_id!r} is over its inbound limit ({limits})",
                retry_after=max(1, math.ceil(wait)),
            )

    def unavailable(self, source_id: str, exc: redis.RedisError, *, wrote: bool) -> Unavailable:
        """The 503 for a Redis failure, saying what the sender should do.

        Never retried here: a write that timed out may have been applied, and one that
        too few replicas confirmed was (``RELAY_REDIS_MIN_REPLICAS``). The sender's
        resend is the safe retry, since the intake script answers a resend of a stored
        event as a duplicate (for sources whose events carry an id)."""
        log.error("intake.unavailable", source=source_id, error=type(exc).__name__)
        timeout = self.settings.redis_timeout
        if isinstance(exc, NotReplicated):
            detail = (
                f"the event is queued on the primary only: {exc} (a resend is answered "
                "as a duplicate if it was kept)"
            )
        elif isinstance(exc, RedisStalled):
            detail = f"the queue did not answer within {timeout:g}s moments ago; not queued"
        elif isinstance(exc, redis.TimeoutError) and wrote:
            detail = (
                f"the queue did not answer within {timeout:g}s; send the event again "
                "(if it was queued after all, the resend is answered as a duplicate)"
            )
        elif isinstance(exc, redis.TimeoutError):
            detail = f"the queue did not answer within {timeout:g}s; not queued"
        else:
            detail = "the queue is unreachable; not queued"
        return Unavailable(f"{detail}; retry later", retry_after=RETRY_AFTER)

    def dedupe_ttl(self, source_id: str) -> float:
        """The source's own window, else the global override, else its kind's default."""
        source = self.config.sources[source_id]
        if source.dedupe_ttl is not None:
            return source.dedupe_ttl
        if self.settings.dedupe_ttl is not None:
            return self.settings.dedupe_ttl
        return self.sources[source_id].default_dedupe_ttl

    def enqueue(self, source_id: str, parsed: Parsed) -> Accepted:
        """Dedupe and enqueue in one script; ``Unavailable`` (503) when Redis is away."""
        event = parsed.event
        try:
            event_json = self.sealer.seal_event(event.to_json(), event)
        except PydanticSerializationError as exc:  # lone surrogates, nesting past the limit
            raise Unprocessable(f"the event cannot be stored as JSON: {exc}") from None
        try:
            earlier = self.outbox.accept_event(
                source_id,
                event.id,
                event_json,
                dedupe_key=parsed.dedupe_key,
                dedupe_ttl=self.dedupe_ttl(source_id),
                single_use=parsed.single_use,
                single_use_ttl=parsed.single_use_ttl,
                replicas=self.replicas,
            )
        except redis.RedisError as exc:
            raise self.unavailable(source_id, exc, wrote=True) from None
        if earlier is not None:
            return Accepted(earlier, duplicate=True)
        return Accepted(event.id, duplicate=False)
