"""Response shapes of the management API, as pydantic models.

They exist to describe: ``relay.api.openapi`` builds the OpenAPI document's schemas
from them, and the schemathesis run in ``tests/api`` checks every answer against that
document. The views return what ``relay.admin.ops`` builds; these models name its fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from relay.events import GroupEvent
from relay.state.lifecycle import PUBLIC_FIELDS, Kind
from relay.state.records import EventStatus


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(_Model):
    """Every refusal: a stable machine code and a sentence for people."""

    error: str = Field(description="Machine-readable code, such as `unauthorized`.")
    detail: str


class PartySummary(_Model):
    """A group or sender as the event names it."""

    id: str
    name: str | None


class EventSummary(_Model):
    id: str
    source: str
    type: str
    status: str = Field(
        description="As stored at fan-out: `queued` (not fanned out yet), `routed` or `unrouted`."
    )
    delivery_status: EventStatus = Field(
        description="What became of it, read from its deliveries now: `delivered` (all), "
        "`partly_delivered` (the others dead), `failed` (all dead), `waiting` (not fanned "
        "out yet, or a delivery queued, running or scheduled), `unrouted`, or `unknown` "
        "(its delivery records are gone)."
    )
    received_at: float | None = Field(description="Unix seconds.")
    occurred_at: str | None = Field(description="When it happened, as the platform said.")
    group: PartySummary | None
    sender: PartySummary | None
    text: str | None = Field(description="The text, redacted, cut at 500 characters.")
    files: int = Field(description="How many files the event carries.")


class AttemptRequest(BaseModel):
    """What was sent: the target, its kind and the idempotency key (the delivery id)."""

    model_config = ConfigDict(extra="allow")
    target: str
    kind: str | None
    idempotency_key: str


class OrderBreak(BaseModel):
    """Why an ordered delivery went ahead of an earlier one of its group."""

    reason: str = Field(
        description="`hold` (the earlier one kept retrying past `ordering_hold`), "
        "`dead_letter` (it was dead-lettered) or `late_fanout` (its event's fan-out came "
        "after the hold)."
    )
    skipped: str | None = Field(description="The delivery id it went ahead of.")
    held_s: float | None = Field(description="How long it waited behind it, in seconds.")


class Attempt(_Model):
    n: int = Field(description="Attempt number, from 1.")
    started_at: float | None
    duration_ms: float | None
    outcome: str = Field(description="`delivered`, `retry`, `failed` or `lost`.")
    status: int | None = Field(description="The target's HTTP status, if it answered.")
    retry_after: float | None
    error: str | None
    response: str | None = Field(description="Excerpt of the answer, redacted and capped.")
    request: AttemptRequest
    order_break: OrderBreak | None = Field(
        None, description="Set on the attempt of an ordered delivery sent out of order."
    )


# How ``relay.admin.views.delivery_view`` shows each kind of record field.
_SHOWN_AS: dict[Kind, Any] = {
    Kind.NAME: str,
    Kind.COUNT: int,
    Kind.STATUS: str,
    Kind.INDEX: int | None,
    Kind.TIME: float | None,
    Kind.REASON: str | None,
    Kind.TEXT: str | None,
    Kind.MODE: Literal["live", "shadow", "test"],
}


def _delivery_fields() -> type[_Model]:
    """The public fields of ``relay.state.lifecycle.DeliveryRecord``, as the API shows them:
    a field added to the record appears here and in the document by construction."""
    shown: dict[str, Any] = {
        name: (_SHOWN_AS[kind], Field(description=doc) if doc else ...)
        for name, kind, doc in PUBLIC_FIELDS
    }
    return create_model("Delivery", __base__=_Model, **shown)


# Not a module global, so ``schema_models`` names only the class below.
class Delivery(_delivery_fields()):  # type: ignore[misc]
    pass


class CapturedRequest(_Model):
    """A request a shadow delivery would have sent, exactly as built, secrets redacted
    (credential headers, token-like URL parts, signature fields, configured secrets)."""

    method: str = Field(description="The HTTP method, or `SMTP` for an email.")
    url: str = Field(description="The URL, redacted (`smtp://host:port` for an email).")
    headers: dict[str, str] = Field(description="For an email: `MAIL FROM` and `RCPT TO`.")
    body: str | None = Field(description="The body as text; null if it is not UTF-8.")
    size: int = Field(description="Bytes of the body as it would have been sent.")
    truncated: bool = Field(description="The body shown is cut at 64 KiB.")


class DeliveryInEvent(Delivery):
    attempts_log: list[Attempt]
    captured: list[CapturedRequest] | None = Field(
        description="A shadow delivery's requests (its last attempt), never sent; null "
        "for a delivery that is sent."
    )


class DeliveryDetail(DeliveryInEvent):
    event: GroupEvent | None = Field(description="The event, redacted; null if expired.")


class TaskLink(_Model):
    """A task in a project-management tool that the event created or acted on."""

    target: str
    key: str = Field(description="What people type: OPS-12, #12.")
    url: str | None
    title: str | None
    created: bool = Field(description="This event created it (else it acted on it).")


class EventDetail(EventSummary):
    event: GroupEvent
    deliveries: list[DeliveryInEvent]
    tasks: list[TaskLink]


class EventPage(_Model):
    items: list[EventSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class DeliveryPage(_Model):
    items: list[Delivery]
    next_cursor: str | None


class Count(_Model):
    """A dry run: how many dead letters the same request would act on."""

    count: int


class BulkReplay(_Model):
    count: int = Field(description="Dead letters that matched.")
    replayed: int = Field(description="Sent again (another operator may have been first).")


class BulkPurge(_Model):
    count: int
    purged: int


class Replayed(_Model):
    delivery_id: str
    replayed: Literal[True]


class Purged(_Model):
    delivery_id: str
    purged: Literal[True]


class Queues(_Model):
    queues: dict[str, int] = Field(
        description="Task messages waiting in each Celery queue (one fan-out message "
        "carries all of an event's deliveries for that queue)."
    )
    scheduled: int = Field(description="Deliveries waiting in the schedule.")
    scheduled_due: int = Field(description="… of which are due now.")
    schedule_lag_seconds: float = Field(description="Age of the oldest due item.")
    in_flight: int
    dead_letters: int


class RateUse(_Model):
    rate: str
    limit: int
    per: float
    used: int = Field(description="Sends in the current window.")


class Window(_Model):
    attempts: int
    delivered: int
    failed: int
    success_rate: float | None
    p50_ms: float | None
    p99_ms: float | None


class Latency(_Model):
    count: int
    sum_ms: float


class Target(_Model):
    id: str
    kind: str
    paused: bool
    circuit: Literal["closed", "open", "half_open"]
    open_until: float | None
    consecutive_failures: int
    successes: int
    failures: int
    slow_calls: int = Field(description="Attempts counted as failures for running too long.")
    in_flight: int = Field(description="Attempts to the target running now, in all workers.")
    max_in_flight: int | None = Field(description="Cap on those; over it deliveries wait.")
    throttled_until: float | None
    rates: list[RateUse]
    rate_limit_source: Literal["config", "kind", "unknown"]
    windows: dict[Literal["5m", "1h"], Window]
    outcomes: dict[str, int] = Field(description="Attempts by outcome since counting began.")
    waits: dict[str, int] = Field(description="Times a delivery waited, by reason.")
    latency: Latency


class TargetList(_Model):
    items: list[Target]
    next_cursor: None


class Source(_Model):
    id: str
    kind: str | None = Field(description="Null for ids that are not configured.")
    accepted: int
    duplicates: int
    rejected: dict[str, int] = Field(description="Refused requests by reason code.")
    rejected_total: int


class SourceList(_Model):
    items: list[Source]
    next_cursor: None


class AuditEntry(_Model):
    id: str
    at: float
    actor: str = Field(description="API key id, `cli`, or `-` when nobody authenticated.")
    action: str
    target: str
    outcome: str = Field(description="`ok`, `failed` or `denied`.")
    remote_addr: str
    detail: str
    count: int = Field(
        1,
        description="Refusals this entry stands for: repeats from one address within a "
        "minute are summed into one summary entry.",
    )


class AuditPage(_Model):
    items: list[AuditEntry]
    next_cursor: str | None


def schema_models() -> list[type[BaseModel]]:
    """Every model the document names, in a stable order."""
    found: list[type[BaseModel]] = []
    for value in globals().values():
        if isinstance(value, type) and issubclass(value, BaseModel) and value is not _Model:
            if value.__module__ == __name__:
                found.append(value)
    return found
