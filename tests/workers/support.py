"""What the worker tests share: the event a target is handed, targets built from their
options, checks every target must pass, and queueing events for ``run_delivery``.

Each target test keeps what is its platform's own (the fake, the defaults that exercise
its formatting); the plumbing around it lives here once.
"""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from typing import Any, Protocol, TypeVar

import pytest
import redis

from relay.config.models import TargetConfig
from relay.config.people import People, Person
from relay.events import FileRef, GroupEvent, Party
from workers.context import WorkerContext
from workers.fanout import fanout
from workers.targets.base import BaseTarget, DeliveryContext

TargetT = TypeVar("TargetT", bound=BaseTarget)


class Delivers(Protocol):
    """Any target, whatever its options class (``Target`` pins that to the base)."""

    def deliver(self, context: DeliveryContext) -> object: ...


def delivery_context(
    delivery_id: str = "dlv_1",
    *,
    attempt: int = 1,
    timeout: float = 5.0,
    template: str | None = None,
    source_kind: str | None = None,
    people: People | None = None,
    state: redis.Redis | None = None,
    **event: Any,
) -> DeliveryContext:
    """What the worker hands an adapter for one attempt: event ``evt_1`` from ``ops``,
    a message from Grace in "Ops room" unless ``event`` overrides its fields."""
    fields: dict[str, Any] = {
        "id": "evt_1",
        "source": "ops",
        "type": "message.created",
        "group": Party(id="g1", name="Ops room"),
        "sender": Party(id="u1", name="Grace"),
        **event,
    }
    return DeliveryContext(
        delivery_id,
        attempt,
        GroupEvent(**fields).to_json(),
        timeout,
        template=template,
        source_kind=source_kind,
        people=people or People({}),
        state=state,
    )


def dingtalk_message(
    people: People, text: str = "deploy finished ✅", template: str | None = None, **event: Any
) -> DeliveryContext:
    """A DingTalk group message as the Chinese group bots get it: Bob mentions Ada (by her
    DingTalk id, which ``people`` maps to the target's) and Zed (known nowhere), and shares
    a file with a URL and one with only a DingTalk reference. ``template`` is the route's
    or target's."""
    fields: dict[str, Any] = {
        "sender": Party(id="u1", name="Bob"),
        "mentions": [Party(id="manager4521", name="ada-dt"), Party(id="u9", name="Zed")],
        "files": [
            FileRef(name="report.pdf", url="https://files.example.com/report.pdf"),
            FileRef(name="notes.txt", ref="dt-file-1"),
        ],
        **event,
    }
    return delivery_context(
        text=text, template=template, people=people, source_kind="dingtalk_robot", **fields
    )


def markup_message(
    source_kind: str,
    *,
    text: str | None = "deploy finished",
    type_: str = "message.created",
    mentions: list[Party] | None = None,
    files: list[FileRef] | None = None,
    people: dict[str, Person] | None = None,
    template: str | None = None,
    state: redis.Redis | None = None,
    delivery_id: str = "dlv_1",
) -> DeliveryContext:
    """A message from a group named ``Ops & <Infra>``, for targets that send markup (Slack's
    mrkdwn, Telegram's HTML): the name must arrive escaped, never as markup."""
    return delivery_context(
        delivery_id,
        template=template,
        source_kind=source_kind,
        people=People(people or {}),
        state=state,
        type=type_,
        text=text,
        group=Party(id="g1", name="Ops & <Infra>"),
        mentions=mentions or [],
        files=files or [],
    )


def build_target(
    cls: type[TargetT],
    target_id: str,
    *,
    allow_private: bool = True,
    timeout: float | None = None,
    **options: Any,
) -> TargetT:
    """A ``cls`` target from its options alone, without a config file; ``allow_private``
    is on unless a test says otherwise, since the platform fakes listen on loopback."""
    config = TargetConfig(
        id=target_id,
        kind=cls.kind,
        allow_private=allow_private,
        timeout=timeout,
        options=cls.Options.model_validate(options),
    )
    return cls(config)


def assert_registered(cls: type[BaseTarget], kind: str, family: str) -> None:
    """Workers find target kinds through the ``group_relay.targets`` entry points; the
    family picks the Celery queue."""
    (ep,) = [ep for ep in entry_points(group="group_relay.targets") if ep.name == kind]
    assert ep.load() is cls
    assert (cls.kind, cls.family) == (kind, family)


def assert_hidden(error: BaseException, *secrets: str) -> None:
    """Delivery errors end up in logs, attempt records and the dashboard: none of the ways
    they are shown (message, repr, response excerpt) may carry a secret."""
    for shown in (str(error), repr(error), getattr(error, "excerpt", None) or ""):
        for secret in secrets:
            assert secret not in shown


def refusal(
    target: Delivers,
    context: DeliveryContext,
    error: type[Exception],
    match: str,
    retry_after: float | None,
) -> Exception:
    """What delivering ``context`` raised, checked to be exactly ``error`` (a
    ``TargetThrottled`` where a ``RetryableDeliveryError`` belongs would hold back the whole
    target) with the remote's ``retry_after``."""
    with pytest.raises(error, match=match) as info:
        target.deliver(context)
    assert type(info.value) is error
    assert getattr(info.value, "retry_after", None) == retry_after
    return info.value


def fan_out(ctx: WorkerContext, event_id: str) -> list[str]:
    """Queue event ``event_id`` from ``ops`` as intake does and fan it out as the worker
    does; the ids of its deliveries."""
    ctx.outbox.accept_event(
        "ops",
        event_id,
        json.dumps({"id": event_id, "source": "ops"}),
        dedupe_key=None,
        dedupe_ttl=60,
    )
    created = fanout(ctx, event_id)
    delivery_ids = ctx.store.event_delivery_ids(event_id)
    assert created == len(delivery_ids)
    return delivery_ids


def accept(ctx: WorkerContext, n: int = 1) -> str:
    """Event ``evt_{n}`` queued and fanned out to its one delivery; that delivery's id."""
    [delivery_id] = fan_out(ctx, f"evt_{n}")
    return delivery_id
