"""Chained deliveries: a confirmation that follows a delivery's success.

When a project-management or storage delivery succeeds, its result may name
deliveries to start next (post the task's link back into the group). Each is a
delivery like any other (own id, record, retries, dead letter) for the same event,
created before the first one is marked delivered; its id is derived from the first
one's, so a repeat of the first attempt creates nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import structlog

from relay.state import keys
from relay.state.lifecycle import DeliveryRecord
from workers.context import WorkerContext
from workers.net.outcomes import Chained

log = structlog.get_logger("relay.delivery")


@dataclass(frozen=True)
class ChainedVars:
    """What a chained delivery's record carries for its template."""

    vars: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    template: str | None = None


def chained_id(parent_id: str, target_id: str) -> str:
    digest = hashlib.sha256(f"{parent_id}|then|{target_id}".encode()).hexdigest()
    return f"dlv_{digest[:32]}"


def read_vars(stored: str | None) -> ChainedVars:
    """The stored ``vars`` of a chained delivery (empty for any other)."""
    if not stored:
        return ChainedVars()
    try:
        data = json.loads(stored)
    except ValueError:
        return ChainedVars()
    values = data.get("vars") if isinstance(data, dict) else None
    template = data.get("template") if isinstance(data, dict) else None
    return ChainedVars(
        MappingProxyType(values if isinstance(values, dict) else {}),
        template if isinstance(template, str) else None,
    )


def start(
    ctx: WorkerContext, parent: DeliveryRecord, parent_id: str, chained: Sequence[Chained]
) -> int:
    """Create and enqueue the chained deliveries not created yet; how many were new.
    A chained target that is no longer configured is skipped with a warning."""
    now = time.time()
    batch: list[tuple[dict[str, str], str]] = []
    for item in chained:
        target = ctx.targets.get(item.target)
        if target is None:
            log.warning("chain.unknown_target", delivery_id=parent_id, target=item.target)
            continue
        queue = keys.deliver_queue(target.family)
        record = DeliveryRecord.new(
            id=chained_id(parent_id, item.target),
            event_id=parent.event_id or "",
            source=parent.source or "",
            target=item.target,
            route=-1 if parent.route is None else parent.route,
            queue=queue,
            now=now,
            parent=parent_id,
            vars=json.dumps({"vars": dict(item.vars), "template": item.template}, default=str),
        )
        batch.append((record.to_fields(), queue))
    if not batch:
        return 0
    created = ctx.outbox.fan_out(parent.event_id or "", batch)
    log.info("chain.started", delivery_id=parent_id, deliveries=len(batch), new=created)
    return created
