"""Reading the relay's records for the operations layer (``relay.admin.ops``).

Events newest first with filters, one event with its deliveries and attempts,
deliveries and dead letters with filters, all paged by cursor (``relay.admin.query``)
and shown with secrets redacted (``relay.admin.views``). A page examines at most
``SCAN_BUDGET`` records, so a filter that matches little still answers quickly: such a
page may hold fewer items than asked for and still carry a cursor.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from relay.admin.query import (
    Cursor,
    DeadLetterFilter,
    DeliveryFilter,
    EventFilter,
    Page,
    Walk,
    in_range,
)
from relay.admin.views import Redactor, attempt_view, delivery_view, event_summary
from relay.context import WebContext
from relay.state import keys

SCAN_BUDGET = 5000  # records examined for one page


def _decode(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode(errors="replace") for k, v in raw.items()}


def _loads(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


class Records:
    """Read-only views of events, deliveries, attempts and dead letters."""

    def __init__(self, runtime: WebContext) -> None:
        self.runtime = runtime
        self.redis = runtime.redis
        self.store = runtime.store
        self.redactor = Redactor(runtime.config.secrets)

    def events(self, f: EventFilter, *, limit: int = 50, cursor: Cursor | None = None) -> Page:
        """Events newest first by time received."""
        walk = Walk(self.redis, keys.EVENTS, cursor, until=f.until, since=f.since)
        items: list[dict[str, Any]] = []
        last: Cursor | None = None
        for batch in walk.batches():
            pipe = self.redis.pipeline(transaction=False)
            for member, _ in batch:
                pipe.hgetall(keys.event(member.decode()))
            for (member, score), raw in zip(batch, pipe.execute(), strict=True):
                last = Cursor(score, member)
                record = _decode(raw)
                event = _loads(record.get("data"))
                if not isinstance(event, dict) or not self._event_matches(f, event, record):
                    continue
                items.append(event_summary(member.decode(), event, record, self.redactor))
                if len(items) >= limit:
                    return Page(items, last.encode())
            if walk.examined >= SCAN_BUDGET and last is not None:
                return Page(items, last.encode())
        return Page(items, None)

    def _event_matches(self, f: EventFilter, event: dict[str, Any], rec: dict[str, str]) -> bool:
        group = event.get("group") or {}
        return (
            (f.source is None or event.get("source") == f.source)
            and (f.type is None or event.get("type") == f.type)
            and (f.group is None or (isinstance(group, dict) and group.get("id") == f.group))
            and (f.status is None or rec.get("status") == f.status)
            and (f.q is None or self._text_has(event, f.q))
        )

    def _text_has(self, event: Any, needle: str) -> bool:
        text = event.get("text") if isinstance(event, dict) else None
        shown = self.redactor.text(text if isinstance(text, str) else "") or ""
        return needle.casefold() in shown.casefold()

    def event(self, event_id: str) -> dict[str, Any] | None:
        """One event, each of its deliveries and every attempt of each."""
        record = _decode(self.redis.hgetall(keys.event(event_id)))
        event = _loads(record.get("data"))
        if not isinstance(event, dict):
            return None
        deliveries = [
            self.delivery(delivery_id, with_event=False)
            for delivery_id in self.store.event_delivery_ids(event_id)
        ]
        return {
            **event_summary(event_id, event, record, self.redactor),
            "event": self.redactor.deep(event),
            "deliveries": [d for d in deliveries if d is not None],
        }

    # deliveries -----------------------------------------------------------------------
    def deliveries(
        self, f: DeliveryFilter, *, limit: int = 50, cursor: Cursor | None = None
    ) -> Page:
        """Deliveries newest event first, each event's deliveries by id."""
        items: list[dict[str, Any]] = []
        last: Cursor | None = None
        examined = 0
        for batch in self._event_positions(f, cursor):
            pipe = self.redis.pipeline(transaction=False)
            for member, _ in batch:
                pipe.smembers(keys.event_deliveries(member.decode()))
            rows: list[tuple[bytes, float, bytes | None]] = []
            for (member, score), found in zip(batch, pipe.execute(), strict=True):
                ids = sorted(found)
                if cursor is not None and cursor.sub is not None and cursor.at(score, member):
                    ids = [i for i in ids if i > cursor.sub]
                rows += [(member, score, i) for i in ids] or [(member, score, None)]
            pipe = self.redis.pipeline(transaction=False)
            for _, _, delivery_id in rows:
                if delivery_id is not None:
                    pipe.hgetall(keys.delivery(delivery_id.decode()))
            records = iter(pipe.execute())
            for member, score, delivery_id in rows:
                last = Cursor(score, member, delivery_id)
                if delivery_id is None:
                    continue
                d = _decode(next(records))
                if (
                    d
                    and all(
                        value is None or d.get(name) == value
                        for name, value in (("source", f.source), ("target", f.target))
                    )
                    and (f.status is None or d.get("status") == f.status)
                ):
                    items.append(delivery_view(d, self.redactor))
                    if len(items) >= limit:
                        return Page(items, last.encode())
            examined += len(batch)
            if examined >= SCAN_BUDGET and last is not None:
                return Page(items, last.encode())
        return Page(items, None)

    def _event_positions(
        self, f: DeliveryFilter, cursor: Cursor | None
    ) -> Iterator[list[tuple[bytes, float]]]:
        """Events (id, received time) whose deliveries come after the cursor, newest first;
        a cursor that stopped inside an event yields that event again first."""
        if f.event_id is not None:
            member, score = f.event_id.encode(), self.redis.zscore(keys.EVENTS, f.event_id)
            if score is not None and in_range(float(score), f.since, f.until):
                if cursor is None or cursor.admits(float(score), member):
                    yield [(member, float(score))]
            return
        if cursor is not None and cursor.sub is not None:
            score = self.redis.zscore(keys.EVENTS, cursor.member)
            if score is not None and cursor.at(float(score), cursor.member):
                yield [(cursor.member, cursor.score)]
        yield from Walk(self.redis, keys.EVENTS, cursor, until=f.until, since=f.since).batches()

    def delivery(self, delivery_id: str, *, with_event: bool = True) -> dict[str, Any] | None:
        """One delivery with every attempt (and the event, from its record or the copy a
        dead letter keeps)."""
        d = _decode(self.redis.hgetall(keys.delivery(delivery_id)))
        if not d:
            return None
        view = delivery_view(d, self.redactor)
        kind = self._target_kind(d.get("target", ""))
        raw = self.redis.lrange(keys.attempts(delivery_id), 0, -1)
        found = [_loads(a.decode(errors="replace")) for a in raw]
        view["attempts_log"] = [
            attempt_view(a, d, kind, self.redactor) for a in found if isinstance(a, dict)
        ]
        if with_event:
            data = self.redis.hget(keys.event(d.get("event_id", "")), "data")
            event = _loads(data.decode(errors="replace") if data else d.get("event"))
            view["event"] = self.redactor.deep(event) if isinstance(event, dict) else None
        return view

    def _target_kind(self, target_id: str) -> str | None:
        target = self.runtime.config.targets.get(target_id)
        return target.kind if target else None

    # dead letters ---------------------------------------------------------------------
    def _dead(self, f: DeadLetterFilter, cursor: Cursor | None) -> Iterator[tuple[Cursor, Any]]:
        """(position, delivery record or None) newest first; None marks a skipped one."""
        walk = Walk(self.redis, keys.DLQ, cursor, until=f.until, since=f.since)
        for batch in walk.batches():
            pipe = self.redis.pipeline(transaction=False)
            for member, _ in batch:
                pipe.hgetall(keys.delivery(member.decode()))
            for (member, score), raw in zip(batch, pipe.execute(), strict=True):
                d = _decode(raw)
                keep = (
                    d.get("status") == "dead"
                    and (f.source is None or d.get("source") == f.source)
                    and (f.target is None or d.get("target") == f.target)
                    and (f.q is None or self._text_has(_loads(d.get("event")), f.q))
                )
                yield Cursor(score, member), (d if keep else None)

    def dead_letters(
        self, f: DeadLetterFilter, *, limit: int = 50, cursor: Cursor | None = None
    ) -> Page:
        """Dead letters newest first by time of death."""
        items: list[dict[str, Any]] = []
        examined = 0
        for position, d in self._dead(f, cursor):
            examined += 1
            if d is not None:
                items.append(delivery_view(d, self.redactor))
            if len(items) >= limit or examined >= SCAN_BUDGET:
                return Page(items, position.encode())
        return Page(items, None)
