"""Records as intake and the workers write them, for API and dashboard tests."""

from __future__ import annotations

import time

import redis

from relay.context import WebContext
from relay.events import GroupEvent
from relay.state import keys
from relay.state.apikeys import ApiKeys
from workers.routing import delivery_id as make_delivery_id


def accept(runtime: WebContext, event: GroupEvent) -> None:
    """Queue ``event`` as intake does."""
    runtime.outbox.accept_event(
        event.source, event.id, event.to_json(), dedupe_key=None, dedupe_ttl=60
    )


def fan_out(runtime: WebContext, event: GroupEvent) -> list[str]:
    """Create the event's deliveries as a worker's fan-out does; their ids, sorted."""
    batch: list[tuple[dict[str, str | int], str]] = []
    for index, route in runtime.config.routes_for(event.source):
        for target in route.targets:
            fields: dict[str, str | int] = {
                "id": make_delivery_id(event.id, index, target),
                "event_id": event.id,
                "source": event.source,
                "target": target,
                "route": index,
                "queue": keys.deliver_queue("webhook"),
                "status": "queued",
                "attempts": 0,
                "created_at": f"{time.time():.6f}",
            }
            batch.append((fields, keys.deliver_queue("webhook")))
    runtime.outbox.fan_out(event.id, batch)
    return sorted(str(f["id"]) for f, _ in batch)


def kill(runtime: WebContext, delivery_id: str) -> None:
    """Dead-letter a delivery as the worker does after a permanent failure."""
    d = runtime.store.delivery(delivery_id) or {}
    data = runtime.redis.hget(keys.event(d["event_id"]), "data") or b"null"
    record = {"n": 1, "started_at": time.time(), "duration_ms": 3.0, "outcome": "failed",
              "status": 410, "response": "gone", "error": "HTTP 410"}  # fmt: skip
    runtime.store.finish_dead(delivery_id, record, "permanent failure", data.decode())


def scoped_keys(client: redis.Redis) -> tuple[dict[str, str], dict[str, str]]:
    """One API key per scope: tokens and key ids by scope."""
    tokens, key_ids = {}, {}
    store = ApiKeys(client)
    for scope in ("read", "replay", "admin"):
        key, token = store.create(f"{scope} key", scope)
        tokens[scope], key_ids[scope] = token, key.id
    return tokens, key_ids
