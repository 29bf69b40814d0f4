"""The management API's operations; each is a thin call into ``relay.admin.ops``.

Scopes: ``read`` for everything that only looks; ``replay`` to replay dead letters;
``admin`` to purge, pause, resume or reset a target, and to read the audit log.
"""

from __future__ import annotations

from typing import Any

from flask import g, request

from relay.admin.ops import Actor
from relay.admin.query import Cursor, DeadLetterFilter, DeliveryFilter, EventFilter
from relay.api import models as m
from relay.api.auth import reveals_replies
from relay.api.core import endpoint, not_found, ops
from relay.api.params import (
    AUDIT_PAGING,
    DEAD_LETTER_FILTERS,
    DELIVERY_FILTERS,
    DELIVERY_ID,
    DRY_RUN,
    EVENT_FILTERS,
    EVENT_ID,
    PAGING,
    TARGET_ID,
    confirm,
    text,
)
from relay.config.models import RouteMode

JSON = dict[str, Any]


def _actor() -> Actor:
    return Actor(g.get("api_key_id") or "-", request.remote_addr)


@endpoint(
    "GET", "/events", summary="List events", tag="events",
    params=(*EVENT_FILTERS, *PAGING), response=m.EventPage,
)  # fmt: skip
def list_events(limit: int, cursor: Cursor | None, **filters: Any) -> JSON:
    """Newest first by the time the relay received them."""
    return ops().events(EventFilter(**filters), limit=limit, cursor=cursor).public()


@endpoint(
    "GET", "/events/<event_id>", summary="One event with its deliveries and attempts",
    tag="events", params=(EVENT_ID,), response=m.EventDetail, errors=(404,),
)  # fmt: skip
def get_event(event_id: str) -> JSON:
    """The event (redacted), each delivery it fanned out to and every attempt of each."""
    found = ops().event(event_id, reveal_replies=reveals_replies())
    if found is None:
        raise not_found(f"no event {event_id!r} (or it is past retention)")
    return found


@endpoint(
    "GET", "/deliveries", summary="List deliveries", tag="deliveries",
    params=(*DELIVERY_FILTERS, *PAGING), response=m.DeliveryPage,
)  # fmt: skip
def list_deliveries(limit: int, cursor: Cursor | None, mode: str | None, **filters: Any) -> JSON:
    """Newest event first; `since`/`until` bound the time the event was received. Shadow
    deliveries sit beside the real ones of the same event; `mode` picks one kind."""
    page = ops().deliveries(
        DeliveryFilter(**filters),
        limit=limit,
        cursor=cursor,
        mode=RouteMode(mode) if mode else None,
    )
    return page.public()


@endpoint(
    "GET", "/deliveries/<delivery_id>", summary="One delivery with every attempt",
    tag="deliveries", params=(DELIVERY_ID,), response=m.DeliveryDetail, errors=(404,),
)  # fmt: skip
def get_delivery(delivery_id: str) -> JSON:
    """Each attempt shows its outcome, HTTP status, duration, a summary of the request
    and a capped, redacted excerpt of the answer; a shadow delivery shows in `captured`
    the requests it would have sent."""
    found = ops().delivery(delivery_id, reveal_replies=reveals_replies())
    if found is None:
        raise not_found(f"no delivery {delivery_id!r} (or it is past retention)")
    return found


@endpoint(
    "GET", "/dead-letters", summary="List dead letters", tag="dead letters",
    params=(*DEAD_LETTER_FILTERS, *PAGING), response=m.DeliveryPage,
)  # fmt: skip
def list_dead_letters(limit: int, cursor: Cursor | None, **filters: Any) -> JSON:
    """Newest first by time of death; `since`/`until` bound that time."""
    return ops().dead_letters(DeadLetterFilter(**filters), limit=limit, cursor=cursor).public()


@endpoint(
    "POST", "/dead-letters/<delivery_id>/replay", summary="Replay one dead letter",
    tag="dead letters", scope="replay", params=(DELIVERY_ID,), response=m.Replayed,
    errors=(404,),
)  # fmt: skip
def replay_dead_letter(delivery_id: str) -> JSON:
    """Queue it again under the same delivery id with a fresh retry budget."""
    if not ops().replay(delivery_id, _actor()):
        raise not_found(f"{delivery_id!r} is not in the dead-letter queue")
    return {"delivery_id": delivery_id, "replayed": True}


@endpoint(
    "POST", "/dead-letters/replay", summary="Replay every matching dead letter",
    tag="dead letters", scope="replay", params=(*DEAD_LETTER_FILTERS, DRY_RUN),
    response=(m.Count, m.BulkReplay),
)  # fmt: skip
def replay_dead_letters(dry_run: bool, **filters: Any) -> JSON:
    """The filters of the listing select; none selects every dead letter. With
    `dry_run=true` the answer is only `{"count": n}` and nothing changes."""
    return ops().replay_matching(DeadLetterFilter(**filters), _actor(), dry_run=dry_run)


@endpoint(
    "POST", "/dead-letters/<delivery_id>/purge", summary="Purge one dead letter",
    tag="dead letters", scope="admin", params=(DELIVERY_ID,), response=m.Purged,
    errors=(404,),
)  # fmt: skip
def purge_dead_letter(delivery_id: str) -> JSON:
    """Delete it, its attempts and its event copy for good."""
    if not ops().purge(delivery_id, _actor()):
        raise not_found(f"{delivery_id!r} is not in the dead-letter queue")
    return {"delivery_id": delivery_id, "purged": True}


@endpoint(
    "POST", "/dead-letters/purge", summary="Purge every matching dead letter",
    tag="dead letters", scope="admin", params=(*DEAD_LETTER_FILTERS, DRY_RUN, confirm()),
    response=(m.Count, m.BulkPurge), errors=(422,),
)  # fmt: skip
def purge_dead_letters(dry_run: bool, confirm: bool, **filters: Any) -> JSON:
    """The filters of the listing select; none selects every dead letter. `confirm=true`
    is required (422 without it), also for a dry run."""
    return ops().purge_matching(DeadLetterFilter(**filters), _actor(), dry_run=dry_run)


@endpoint("GET", "/queues", summary="Queue depths, schedule, in flight, dead letters",
          tag="queues", response=m.Queues)  # fmt: skip
def queues() -> JSON:
    """Depth of each Celery queue, scheduled (delayed) deliveries and how late the
    oldest due one is, tasks in flight and the dead-letter count."""
    return ops().queues()


@endpoint("GET", "/targets", summary="Every target's state and recent numbers",
          tag="targets", response=m.TargetList)  # fmt: skip
def list_targets() -> JSON:
    """Pause flag, circuit breaker, platform throttle, rate windows and their use,
    success rate and p50/p99 latency over the last 5 minutes and hour."""
    return {"items": ops().targets(), "next_cursor": None}


@endpoint("GET", "/targets/<target_id>", summary="One target", tag="targets",
          params=(TARGET_ID,), response=m.Target, errors=(404,))  # fmt: skip
def get_target(target_id: str) -> JSON:
    """The same fields as one item of the target listing."""
    found = ops().target(target_id)
    if found is None:
        raise not_found(f"no target {target_id!r} is configured")
    return found


def _target_action(name: str, summary: str, doc: str, act: Any) -> None:
    def view(target_id: str) -> JSON:
        found = act(target_id)
        if found is None:
            raise not_found(f"no target {target_id!r} is configured")
        return dict(found)

    view.__name__, view.__doc__ = f"{name}_target", doc
    endpoint(
        "POST", f"/targets/<target_id>/{name}", summary=summary, tag="targets",
        scope="admin", params=(TARGET_ID,), response=m.Target, errors=(404,),
    )(view)  # fmt: skip


_target_action(
    "pause",
    "Pause a target",
    "Its deliveries wait in the schedule (no attempt spent, nothing dead-lettered).",
    lambda t: ops().set_paused(t, True, _actor()),
)
_target_action(
    "resume",
    "Resume a target",
    "Deliveries to it go out again.",
    lambda t: ops().set_paused(t, False, _actor()),
)
_target_action(
    "reset",
    "Close a target's circuit breaker",
    "Closes the breaker and forgets its failure counts and any platform throttle.",
    lambda t: ops().reset(t, _actor()),
)


@endpoint("GET", "/sources", summary="Accepted, duplicate and rejected counts per source",
          tag="sources", response=m.SourceList)  # fmt: skip
def list_sources() -> JSON:
    """Since the counters began; refusals for unknown source ids count under `(unknown)`."""
    return {"items": ops().sources(), "next_cursor": None}


@endpoint(
    "GET", "/audit", summary="The audit log", tag="audit", scope="admin",
    params=(
        text("action", "Only this action (`replay`, `purge`, `auth.failed`, ...).", max_length=64),
        text("actor", "Only this key id (or `cli`, `-`).", max_length=64),
        *AUDIT_PAGING,
    ),
    response=m.AuditPage,
)  # fmt: skip
def list_audit(limit: int, cursor: str | None, action: str | None, actor: str | None) -> JSON:
    """Operator actions and auth failures, newest first: who (key id), what, when,
    from which address, and the outcome."""
    return ops().audit(limit=limit, cursor=cursor, action=action, actor=actor).public()
