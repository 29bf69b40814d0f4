"""The ``Target`` protocol: deliver one event to one destination, and say how it went.

``deliver`` returns a ``DeliveryResult`` on success, or raises
``RetryableDeliveryError`` (optionally with ``retry_after``) or
``PermanentDeliveryError``; the retry policy in ``workers.delivery`` decides the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from relay.config import TargetConfig
from relay.events import GroupEvent


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

    @cached_property
    def event(self) -> GroupEvent:
        """Parsed on first use: adapters that forward the JSON as it is never pay for it."""
        return GroupEvent.from_json(self.event_json)


@dataclass(frozen=True)
class DeliveryResult:
    status: int | None = None
    excerpt: str | None = None


class Target(Protocol):
    kind: ClassVar[str]
    family: ClassVar[str]  # notify | pm | storage | webhook: picks the Celery queue
    Options: ClassVar[type[TargetOptions]]

    def __init__(self, config: TargetConfig) -> None: ...

    def deliver(self, context: DeliveryContext) -> DeliveryResult: ...


class BaseTarget:
    kind: ClassVar[str]
    family: ClassVar[str]
    Options: ClassVar[type[TargetOptions]] = TargetOptions

    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        self.options: Any = config.options
