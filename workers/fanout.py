"""Fan-out: one accepted event becomes one delivery per matching route target.

Each delivery records its route's mode: a ``test`` route's deliveries go to its
``test_targets``, a ``shadow`` route's are rendered and recorded by the worker but
never sent (``workers.net.dryrun``).
"""

from __future__ import annotations

import time

import structlog

from relay.config.models import RouteMode
from relay.events import GroupEvent
from relay.state import keys
from relay.state.lanes import Joining
from relay.state.lifecycle import DeliveryRecord
from workers.context import WorkerContext
from workers.pm import updates
from workers.routing import delivery_id as make_delivery_id
from workers.routing import route_matches

log = structlog.get_logger("relay.delivery")


def fanout(ctx: WorkerContext, event_id: str) -> int:
    """Create (once) and enqueue one delivery per matching route target."""
    record = ctx.store.event(event_id)
    if record is None:
        ctx.store.redis.zrem(keys.INFLIGHT, f"fanout:{event_id}")
        log.warning("fanout.missing_event", event_id=event_id)
        return 0
    if "unreadable" in record:  # sealed with a key this worker lacks: the watchdog retries
        log.error("fanout.unreadable_event", event_id=event_id, reason=record["unreadable"])
        return 0
    event = GroupEvent.model_validate(record["event"])
    now = time.time()
    lanes = Joining(ctx.store.redis, event, record["received_at"], record["status"])
    batch: list[tuple[dict[str, str], str]] = []
    for index, route in ctx.config.routes_for(event.source):
        if not route_matches(route.when, event):
            continue
        # a test route delivers to its test targets; a shadow one is recorded, never sent
        for target_id in route.delivery_targets:
            target = ctx.targets[target_id]
            queue = keys.deliver_queue(target.family)
            delivery = DeliveryRecord.new(
                id=make_delivery_id(event_id, index, target_id),
                event_id=event_id,
                source=event.source,
                target=target_id,
                route=index,
                queue=queue,
                now=now,
                mode=None if route.mode is RouteMode.LIVE else route.mode,  # absent: live
            )
            # an ordered delivery names its lane: the fan-out script adds it there
            lane = lanes.fields(route, ctx.config.targets[target_id])
            batch.append((delivery.to_fields() | lane, queue))
    batch += updates.plan(ctx, event, now)  # a tool's change, told in the task's thread
    created = ctx.outbox.fan_out(event_id, batch)
    log.info("fanout.done", event_id=event_id, deliveries=len(batch), new=created)
    return len(batch)
