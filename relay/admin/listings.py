"""Listing the relay's records for the operations layer (``relay.admin.ops``).

Events newest first with filters, one event with its deliveries and attempts,
deliveries and dead letters with filters, all paged by cursor (``relay.admin.query``)
and shown with secrets redacted (``relay.admin.views``). A page examines at most
``SCAN_BUDGET`` records, so a filter that matches little still answers quickly: such a
page may hold fewer items than asked for and still carry a cursor.

Every Redis read goes through ``relay.state.records.Records`` (the runtime's store),
the one reader of each structure; this module filters, pages and shapes. The text
search matches the redacted text, so a search cannot probe for a secret: that is why
filtering stays here, beside the redaction, and not in ``relay.state``.
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
from relay.admin.views import (
    Redactor,
    attempt_view,
    captured_view,
    delivery_view,
    event_summary,
)
from relay.config.models import RouteMode
from relay.context import WebContext
from relay.state import keys
from relay.state.lifecycle import DeliveryRecord, DeliveryStatus
from relay.state.records import event_status

SCAN_BUDGET = 5000  # records examined for one page


def _loads(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


class Listings:
    """Paged, filtered and redacted views of events, deliveries, attempts and dead letters."""

    def __init__(self, runtime: WebContext) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.redactor = Redactor(runtime.config.secrets)
        self.admin_redactor = Redactor(runtime.config.secrets, reveal_replies=True)

    def events(self, f: EventFilter, *, limit: int = 50, cursor: Cursor | None = None) -> Page:
        """Events newest first by time received."""
        walk = Walk(self.store, keys.EVENTS, cursor, until=f.until, since=f.since)
        items: list[dict[str, Any]] = []
        last: Cursor | None = None
        for batch in walk.batches():
            found = self.store.event_fields([member.decode() for member, _ in batch])
            for (member, score), record in zip(batch, found, strict=True):
                last = Cursor(score, member)
                event = _loads(record.get("data"))
                if not isinstance(event, dict) or not self._event_matches(f, event, record):
                    continue
                items.append(event_summary(member.decode(), event, record, self.redactor))
                if len(items) >= limit:
                    return self._event_page(items, last.encode())
            if walk.examined >= SCAN_BUDGET and last is not None:
                return self._event_page(items, last.encode())
        return self._event_page(items, None)

    def _event_page(self, items: list[dict[str, Any]], cursor: str | None) -> Page:
        """The page, each event with its ``delivery_status`` read from its deliveries."""
        found = self.store.event_statuses([e["id"] for e in items], [e["status"] for e in items])
        for item, status in zip(items, found, strict=True):
            item["delivery_status"] = status.value
        return Page(items, cursor)

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

    def event(self, event_id: str, *, reveal_replies: bool = False) -> dict[str, Any] | None:
        """One event, each of its deliveries and every attempt of each; reply URLs only
        with ``reveal_replies`` (an admin asks)."""
        [record] = self.store.event_fields([event_id])
        event = _loads(record.get("data"))
        if not isinstance(event, dict):
            return None
        deliveries = [
            self.delivery(delivery_id, with_event=False, reveal_replies=reveal_replies)
            for delivery_id in self.store.event_delivery_ids(event_id)
        ]
        redactor = self.admin_redactor if reveal_replies else self.redactor
        shown = [d for d in deliveries if d is not None]
        status = event_status(record.get("status"), (d["status"] for d in shown))
        return {
            **event_summary(event_id, event, record, redactor),
            "delivery_status": status.value,
            "event": redactor.event(event),
            "deliveries": shown,
            "tasks": self.store.event_tasks(event_id),
        }

    # deliveries -----------------------------------------------------------------------
    def deliveries(
        self,
        f: DeliveryFilter,
        *,
        limit: int = 50,
        cursor: Cursor | None = None,
        mode: RouteMode | None = None,
    ) -> Page:
        """Deliveries newest event first, each event's deliveries by id; ``mode`` keeps
        only the shadow, test or live ones (a record without a mode is live)."""
        items: list[dict[str, Any]] = []
        last: Cursor | None = None
        examined = 0
        for batch in self._event_positions(f, cursor):
            found = self.store.delivery_ids_of([member.decode() for member, _ in batch])
            rows: list[tuple[bytes, float, bytes | None]] = []
            for (member, score), ids in zip(batch, found, strict=True):
                if cursor is not None and cursor.sub is not None and cursor.at(score, member):
                    ids = [i for i in ids if i > cursor.sub]
                rows += [(member, score, i) for i in ids] or [(member, score, None)]
            records = iter(self.store.deliveries([i.decode() for _, _, i in rows if i is not None]))
            for member, score, delivery_id in rows:
                last = Cursor(score, member, delivery_id)
                if delivery_id is None:
                    continue
                d = next(records)
                if (
                    d is not None
                    and (f.source is None or d.source == f.source)
                    and (f.target is None or d.target == f.target)
                    and (f.status is None or d.status == f.status)
                    and (mode is None or (d.mode or RouteMode.LIVE) == mode)
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
            member, score = f.event_id.encode(), self.store.received_at(f.event_id)
            if score is not None and in_range(score, f.since, f.until):
                if cursor is None or cursor.admits(score, member):
                    yield [(member, score)]
            return
        if cursor is not None and cursor.sub is not None:
            score = self.store.received_at(cursor.member)
            if score is not None and cursor.at(score, cursor.member):
                yield [(cursor.member, cursor.score)]
        yield from Walk(self.store, keys.EVENTS, cursor, until=f.until, since=f.since).batches()

    def delivery(
        self, delivery_id: str, *, with_event: bool = True, reveal_replies: bool = False
    ) -> dict[str, Any] | None:
        """One delivery with every attempt (and the event, from its record or the copy a
        dead letter keeps); reply URLs only with ``reveal_replies``."""
        d = self.store.delivery(delivery_id)
        if d is None:
            return None
        redactor = self.admin_redactor if reveal_replies else self.redactor
        view = delivery_view(d, redactor)
        view["captured"] = captured_view(d, redactor)
        kind = self._target_kind(d.target or "")
        view["attempts_log"] = [
            attempt_view(a, d, kind, redactor) for a in self.store.attempts(delivery_id)
        ]
        if with_event:
            event = _loads(self.store.event_data(d.event_id or "") or d.event)
            view["event"] = redactor.event(event) if isinstance(event, dict) else None
        return view

    def _target_kind(self, target_id: str) -> str | None:
        target = self.runtime.config.targets.get(target_id)
        return target.kind if target else None

    # dead letters ---------------------------------------------------------------------
    def _dead(
        self, f: DeadLetterFilter, cursor: Cursor | None
    ) -> Iterator[tuple[Cursor, DeliveryRecord | None]]:
        """(position, delivery record or None) newest first; None marks a skipped one."""
        walk = Walk(self.store, keys.DLQ, cursor, until=f.until, since=f.since)
        for batch in walk.batches():
            found = self.store.deliveries([member.decode() for member, _ in batch])
            for (member, score), d in zip(batch, found, strict=True):
                keep = (
                    d is not None
                    and d.status is DeliveryStatus.DEAD
                    and (f.source is None or d.source == f.source)
                    and (f.target is None or d.target == f.target)
                    and (f.q is None or self._text_has(_loads(d.event), f.q))
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

    def dead_letters_counted(
        self, f: DeadLetterFilter, *, limit: int | None
    ) -> tuple[list[dict[str, Any]], int]:
        """The newest ``limit`` dead letters matching ``f`` (all with ``None``) and how many
        match in all: one walk without the scan budget, for the CLI's "showing N of M"."""
        items: list[dict[str, Any]] = []
        total = 0
        for _, d in self._dead(f, None):
            if d is None:
                continue
            total += 1
            if limit is None or len(items) < limit:
                items.append(delivery_view(d, self.redactor))
        return items, total
