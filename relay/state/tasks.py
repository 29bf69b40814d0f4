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


def _when(change: Any) -> tuple[str, str]:
    """When a change happened as the tool tells it; ties in the order received."""
    if not isinstance(change, dict):
        return ("", "")
    return (str(change.get("at", "")), str(change.get("event_id", "")))


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

    def __init__(
        self, client: redis.Redis, *, retention: float, link_retention: float | None = None
    ) -> None:
        self.client = client
        self.retention = int(retention)  # the event's list of its tasks, like its record
        # message <-> task, usually far longer: tasks outlive the chat records
        self.link_retention = max(self.retention, int(link_retention or 0))

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
        thread: Mapping[str, Any] | None = None,
    ) -> None:
        """Note that ``event_id`` created (``created``) or acted on ``task``; a created
        task is also linked from its chat message, so replies find it, and to it (by
        key and by id), so the tool's webhooks about it find the thread (``thread``:
        how a reply reaches it, and in which language)."""
        value = json.dumps(dict(task))
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(keys.event_tasks(event_id), target_id, json.dumps({**task, "created": created}))
        pipe.expire(keys.event_tasks(event_id), self.retention)
        if created and message_id:
            message_key = keys.message_tasks(source_id, group_id or "", message_id)
            pipe.hset(message_key, target_id, value)
            pipe.expire(message_key, self.link_retention)
            origin = {
                "event_id": event_id,
                "source": source_id,
                "group": group_id,
                "message_id": message_id,
                "task_url": task.get("url"),
                **(thread or {}),
            }
            for name in dict.fromkeys([str(task.get("key")), str(task.get("id") or "")]):
                if name:
                    pipe.set(
                        keys.task_origin(target_id, name),
                        json.dumps(origin),
                        ex=self.link_retention,
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


class Echoes:
    """Changes the relay made to tasks, awaiting the tool's report of them.

    Before the relay closes, reopens, assigns or comments on a task it counts the
    action here; the tool's webhook for that action then consumes one count and is
    recognised as the relay's own (an echo), not posted back into the group. Counts
    expire after ``ttl``, so a call that failed cannot hide a person's change for long.
    """

    def __init__(self, client: redis.Redis, *, ttl: float) -> None:
        self.client = client
        self.ttl = max(1, int(ttl))

    def expect(self, target_id: str, task_key: str, action: str) -> None:
        key = keys.task_echoes(target_id, task_key)
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(key, action, 1)
        pipe.expire(key, self.ttl)
        pipe.execute()

    def consume(self, target_id: str, task_key: str, action: str) -> bool:
        """True if the relay made this change itself (one expected count is used)."""
        key = keys.task_echoes(target_id, task_key)
        left = int(self.client.hincrby(key, action, -1))
        if left < 0:  # nothing was expected: undo, the change is a person's
            self.client.hincrby(key, action, 1)
            return False
        return True


class Bursts:
    """A task's changes gathered into one message per short window.

    The first change of a task starts a *gathering* delivery and names it in the
    task's burst key; changes that arrive while that delivery has not run join it
    instead of starting their own. When it runs it closes the burst (later changes
    start the next one) and tells every change it gathered.
    """

    def __init__(self, client: redis.Redis, *, retention: float) -> None:
        self.client = client
        self.retention = int(retention)

    def join(
        self,
        target_id: str,
        task_key: str,
        delivery_id: str,
        event_id: str,
        change: str,
        ttl: float,
    ) -> str:
        """The id of the delivery that will tell ``change``: an open burst's, else
        ``delivery_id``, which then opens one. Repeating a join changes nothing."""
        burst = keys.task_burst(target_id, task_key)
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(burst)
                    current = pipe.get(burst)
                    leader = _text(current) if current is not None else delivery_id
                    pipe.multi()
                    if current is None:
                        pipe.set(burst, delivery_id, ex=max(1, int(ttl)))
                    pipe.hsetnx(keys.task_updates(leader), event_id, change)
                    pipe.expire(keys.task_updates(leader), self.retention)
                    pipe.execute()
                    return leader
                except redis.WatchError:
                    continue

    def close(self, target_id: str, task_key: str, delivery_id: str) -> list[Any]:
        """End the burst ``delivery_id`` leads (if it still does) and return its changes
        in the order they happened; a retry reads the same changes again."""
        burst = keys.task_burst(target_id, task_key)
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(burst)
                    current = pipe.get(burst)
                    pipe.multi()
                    if current is not None and _text(current) == delivery_id:
                        pipe.delete(burst)
                    pipe.hgetall(keys.task_updates(delivery_id))
                    stored = pipe.execute()[-1]
                    break
                except redis.WatchError:
                    continue
        changes = [value for raw in stored.values() if (value := _json(raw)) is not None]
        return sorted(changes, key=_when)
