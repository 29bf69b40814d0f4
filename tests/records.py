"""Records as intake and the workers write them, for API and dashboard tests."""

from __future__ import annotations

import time

import redis

from relay.context import WebContext
from relay.events import GroupEvent
from relay.state import keys
from relay.state.apikeys import ApiKeys
from relay.state.lifecycle import DeliveryRecord
from workers.routing import delivery_id as make_delivery_id


def accept(runtime: WebContext, event: GroupEvent) -> None:
    """Queue ``event`` as intake does."""
    runtime.outbox.accept_event(
        event.source, event.id, event.to_json(), dedupe_key=None, dedupe_ttl=60
    )


def fan_out(runtime: WebContext, event: GroupEvent) -> list[str]:
    """Create the event's deliveries as a worker's fan-out does; their ids, sorted."""
    now, queue = time.time(), keys.deliver_queue("webhook")
    records = [
        DeliveryRecord.new(
            id=make_delivery_id(event.id, index, target),
            event_id=event.id,
            source=event.source,
            target=target,
            route=index,
            queue=queue,
            now=now,
        )
        for index, route in runtime.config.routes_for(event.source)
        for target in route.targets
    ]
    runtime.outbox.fan_out(event.id, [(r.to_fields(), queue) for r in records])
    return sorted(r.id or "" for r in records)


def kill(runtime: WebContext, delivery_id: str) -> None:
    """Dead-letter a delivery as the worker does after a permanent failure."""
    d = runtime.store.delivery(delivery_id)
    assert d is not None and d.event_id is not None, delivery_id
    data = runtime.redis.hget(keys.event(d.event_id), "data") or b"null"
    record = {"n": 1, "started_at": time.time(), "duration_ms": 3.0, "outcome": "failed",
              "status": 410, "response": "gone", "error": "HTTP 410"}  # fmt: skip
    runtime.store.finish_dead(delivery_id, record, "permanent failure", data.decode(), token="")


def scoped_keys(client: redis.Redis) -> tuple[dict[str, str], dict[str, str]]:
    """One API key per scope: tokens and key ids by scope."""
    tokens, key_ids = {}, {}
    store = ApiKeys(client)
    for scope in ("read", "replay", "admin"):
        key, token = store.create(f"{scope} key", scope)
        tokens[scope], key_ids[scope] = token, key.id
    return tokens, key_ids
