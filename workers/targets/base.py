"""The ``Target`` protocol: deliver one event to one destination, and say how it went.

``deliver`` returns a ``DeliveryResult`` on success, or raises
``RetryableDeliveryError`` (optionally with ``retry_after``) or
``PermanentDeliveryError``; the retry policy in ``workers.delivery`` decides the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

import redis
from pydantic import BaseModel, ConfigDict

from relay.config.models import SourceConfig, TargetConfig
from relay.config.people import Mention, People
from relay.errors import PermanentDeliveryError
from relay.events import GroupEvent
from relay.templates import TemplateError, render
from workers.net.outcomes import DeliveryResult

__all__ = ["BaseTarget", "DeliveryContext", "DeliveryResult", "Target", "TargetOptions"]


class TargetOptions(BaseModel):
    """Base of every target kind's options: unknown keys are config errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class DeliveryContext:
    """Everything an adapter may use for one attempt."""

    delivery_id: str  # stable across retries and replays: the idempotency key
    attempt: int
    event_json: str
    timeout: float
    template: str | None = None  # the route's template, else the target's, else None
    source_kind: str | None = None  # kind of the source the event came from
    people: People = field(default_factory=lambda: People({}))
    state: redis.Redis | None = None  # shared Redis, for caches such as access tokens
    source: SourceConfig | None = None  # the source's config: fetchers use its tokens
    retention: float = 7 * 24 * 3600  # how long records (and task links) are kept
    # set on a chained delivery (a confirmation): what the delivery it follows produced
    # (``task``, ``files``), seen by templates beside ``event``
    vars: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @cached_property
    def event(self) -> GroupEvent:
        """Parsed on first use: adapters that forward the JSON as it is never pay for it."""
        return GroupEvent.from_json(self.event_json)

    @cached_property
    def mentions(self) -> list[Mention]:
        """The event's mentions, resolved through the config's ``people`` map."""
        return self.people.resolve(self.event, self.source_kind)

    def render(self, default_template: str, *, html: bool = False, **extra: Any) -> str:
        """The message text: the configured template (or ``default_template``) rendered
        with ``event``, ``mentions`` and ``extra``. A template that fails to render is a
        ``PermanentDeliveryError`` naming the line: retrying cannot fix it."""
        try:
            return render(
                self.template or default_template,
                html=html,
                event=self.event,
                mentions=self.mentions,
                **{**self.vars, **extra},
            )
        except TemplateError as exc:
            raise PermanentDeliveryError(str(exc)) from None


class Target(Protocol):
    kind: ClassVar[str]
    family: ClassVar[str]  # notify | pm | storage | webhook: picks the Celery queue
    Options: ClassVar[type[TargetOptions]]
    # The platform's own limits ("20/min"), used unless the config sets rate_limit.
    default_rate_limits: ClassVar[tuple[str, ...]]

    def __init__(self, config: TargetConfig) -> None: ...

    def deliver(self, context: DeliveryContext) -> DeliveryResult: ...


class BaseTarget:
    kind: ClassVar[str]
    family: ClassVar[str]
    Options: ClassVar[type[TargetOptions]] = TargetOptions
    default_rate_limits: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        self.options: Any = config.options
