"""Ledgers and task links: what project-management and storage deliveries did.

A delivery's *ledger* records each effect in the world as soon as it is known (the
task created, a comment posted, a file stored), so a retry after a crash or an
ambiguous answer never repeats it. *Task links* tie a chat message to the task it
created, so a reply in its thread (``done``) finds the task, and the API and the
dashboard show an event's tasks. Both live as long as the delivery records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import redis

from relay.state import keys


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _json(value: Any) -> Any:
    try:
        return json.loads(_text(value))
    except ValueError:
        return None


class Ledger:
    """One delivery's effects: field -> JSON value."""

    def __init__(self, client: redis.Redis, delivery_id: str, *, retention: float) -> None:
        self.client = client
        self.key = keys.ledger(delivery_id)
        self.retention = int(retention)

    def read(self) -> dict[str, Any]:
        return {_text(k): _json(v) for k, v in self.client.hgetall(self.key).items()}

    def get(self, name: str) -> Any:
        value = self.client.hget(self.key, name)
        return None if value is None else _json(value)

    def record(self, **values: Any) -> None:
        """Record effects at once; the ledger lives as long as the delivery record."""
        mapping = {name: json.dumps(value) for name, value in values.items()}
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.key, mapping=mapping)
        pipe.expire(self.key, self.retention)
        pipe.execute()


class TaskLinks:
    """Chat message ↔ task, per target."""

    def __init__(self, client: redis.Redis, *, retention: float) -> None:
        self.client = client
        self.retention = int(retention)

    def link(
        self,
        *,
        target_id: str,
        task: Mapping[str, Any],
        event_id: str,
        source_id: str,
        group_id: str | None,
        message_id: str | None,
        created: bool,
    ) -> None:
        """Note that ``event_id`` created (``created``) or acted on ``task``; a created
        task is also linked from its chat message, so replies find it."""
        value = json.dumps(dict(task))
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(keys.event_tasks(event_id), target_id, json.dumps({**task, "created": created}))
        pipe.expire(keys.event_tasks(event_id), self.retention)
        if created and message_id:
            message_key = keys.message_tasks(source_id, group_id or "", message_id)
            pipe.hset(message_key, target_id, value)
            pipe.expire(message_key, self.retention)
            origin = {
                "event_id": event_id,
                "source": source_id,
                "group": group_id,
                "message_id": message_id,
            }
            pipe.set(
                keys.task_origin(target_id, str(task.get("key"))),
                json.dumps(origin),
                ex=self.retention,
            )
        pipe.execute()

    def of_message(
        self, source_id: str, group_id: str | None, message_id: str
    ) -> dict[str, dict[str, Any]]:
        """Target id -> task, for the tasks a chat message created."""
        stored = self.client.hgetall(keys.message_tasks(source_id, group_id or "", message_id))
        return {_text(k): v for k, raw in stored.items() if isinstance(v := _json(raw), dict)}

    def of_event(self, event_id: str) -> dict[str, dict[str, Any]]:
        """Target id -> task, for the tasks an event created or acted on."""
        stored = self.client.hgetall(keys.event_tasks(event_id))
        return {_text(k): v for k, raw in stored.items() if isinstance(v := _json(raw), dict)}

    def origin(self, target_id: str, task_key: str) -> dict[str, Any] | None:
        """The chat message a task came from, if the relay created it."""
        raw = self.client.get(keys.task_origin(target_id, task_key))
        value = None if raw is None else _json(raw)
        return value if isinstance(value, dict) else None
