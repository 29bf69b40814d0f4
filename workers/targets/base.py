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
from relay.events import GroupEvent, ReplyHandle
from relay.templates import TemplateError, render
from workers.net.outcomes import DeliveryResult

__all__ = [
    "BaseTarget",
    "DeliveryContext",
    "DeliveryResult",
    "Target",
    "TargetOptions",
    "Thread",
]


class TargetOptions(BaseModel):
    """Base of every target kind's options: unknown keys are config errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Thread:
    """The chat message a reply answers. For a chat event it is the event's own
    message; for a task update it is the message the task was made from, so a change
    made in the tool is told where the task was born."""

    source_kind: str | None
    group: str | None = None
    message_id: str | None = None
    root: str | None = None  # the thread's first message, if this one is a reply in it
    reply: ReplyHandle | None = None

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> Thread:
        """A thread stored in a delivery's vars (see ``workers.pm.updates``)."""
        reply = value.get("reply")
        return cls(
            source_kind=value.get("source_kind"),
            group=value.get("group"),
            message_id=value.get("message_id"),
            root=value.get("root"),
            reply=ReplyHandle.model_validate(reply) if isinstance(reply, dict) else None,
        )


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
    retention: float = 7 * 24 * 3600  # how long records (and ledgers) are kept
    link_retention: float = 90 * 24 * 3600  # how long a chat message and its task stay linked
    # set on a chained delivery (a confirmation): what the delivery it follows produced
    # (``task``, ``files``), seen by templates beside ``event``
    vars: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # a shadow route's delivery: rendered in full, its requests captured, nothing sent
    # (``workers.net.dryrun`` does it where requests leave; adapters need not look)
    shadow: bool = False

    @cached_property
    def event(self) -> GroupEvent:
        """Parsed on first use: adapters that forward the JSON as it is never pay for it."""
        return GroupEvent.from_json(self.event_json)

    @cached_property
    def thread(self) -> Thread:
        """Where a reply goes: the vars' ``thread`` (a task update), else the event."""
        stored = self.vars.get("thread")
        if isinstance(stored, Mapping):
            return Thread.of(stored)
        event = self.event
        return Thread(
            source_kind=self.source_kind,
            group=event.group.id if event.group else None,
            message_id=event.message_id,
            root=event.in_reply_to,
            reply=event.reply,
        )

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
