"""Read-only pages: the overview, the event explorer, deliveries, one event, one delivery."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from flask import abort, render_template, request
from flask.typing import ResponseReturnValue

from relay.admin.query import Cursor, DeliveryFilter, EventFilter, parse_time
from relay.config.models import RouteMode
from relay.config.units import parse_duration
from relay.dashboard.auth import can, ops
from relay.dashboard.blueprint import dashboard
from relay.state.lifecycle import DeliveryStatus

CHART_MINUTES = 60
PAGE_SIZE = 50
EVENT_STATUSES = ("queued", "routed", "unrouted")
MAX_PARAM = 200
# "1h" means an hour ago; a unit is required, as a bare number is Unix seconds
_AGO = re.compile(r"^\d+(\.\d+)?(ms|s|m|h|d|w)$")


class Params:
    """The page's query parameters, parsed; problems are collected, not raised, so the
    page can show them next to the form (with status 400)."""

    def __init__(self, given: Mapping[str, str] | None = None) -> None:
        self.given: Mapping[str, str] = request.args if given is None else given
        self.problems: list[str] = []

    def text(self, name: str) -> str | None:
        value = (self.given.get(name) or "").strip()
        if len(value) > MAX_PARAM:
            self.problems.append(f"{name} is longer than {MAX_PARAM} characters")
            return None
        return value or None

    def time(self, name: str) -> float | None:
        """A moment: ISO 8601, Unix seconds, or a duration with its unit (``1h``) meaning
        that long ago, so a bookmarked filter keeps meaning "the last hour"."""
        value = self.text(name)
        if value is None:
            return None
        try:
            if _AGO.match(value):
                return time.time() - parse_duration(value)
            return parse_time(value)
        except ValueError as exc:
            self.problems.append(f"{name}: {exc}")
            return None

    def cursor(self) -> Cursor | None:
        value = self.text("cursor")
        if value is None:
            return None
        try:
            return Cursor.decode(value)
        except ValueError:
            self.problems.append("cursor: not a position this page gave")
            return None

    def choice(self, name: str, allowed: tuple[str, ...]) -> str | None:
        value = self.text(name)
        if value is not None and value not in allowed:
            self.problems.append(f"{name} must be one of {', '.join(allowed)}")
            return None
        return value

    def values(self, *names: str) -> dict[str, str]:
        """The non-empty given values of ``names``: the filter form's state."""
        return {n: v for n in names if (v := (self.given.get(n) or "").strip())}


def chart(points: list[tuple[int, int]]) -> dict[str, Any]:
    """One sparkline: the per-minute counts and the numbers shown without JavaScript."""
    counts = [n for _, n in points]
    recent = counts[-5:]
    return {
        "points": ",".join(str(n) for n in counts),
        "start": points[0][0] if points else None,
        "total": sum(counts),
        "per_minute": round(sum(recent) / max(1, len(recent)), 1),
        "last": counts[-1] if counts else 0,
        "peak": max(counts) if counts else 0,
    }


@dashboard.get("/")
def overview() -> ResponseReturnValue:
    o = ops()
    series = o.stats.series(CHART_MINUTES)
    charts = {name: chart(points) for name, points in series.items()}
    return render_template(
        "dashboard/overview.html",
        queues=o.queues(),
        charts=charts,
        targets=o.targets(),
        sources=o.sources(),
        minutes=CHART_MINUTES,
    )


@dashboard.get("/events")
def events() -> ResponseReturnValue:
    p = Params()
    f = EventFilter(
        source=p.text("source"),
        type=p.text("type"),
        group=p.text("group"),
        status=p.text("status"),
        since=p.time("since"),
        until=p.time("until"),
        q=p.text("q"),
    )
    cursor = p.cursor()
    page = None if p.problems else ops().events(f, limit=PAGE_SIZE, cursor=cursor)
    form = p.values("source", "type", "group", "status", "since", "until", "q")
    rt = ops().runtime
    page_html = render_template(
        "dashboard/events.html",
        page=page,
        form=form,
        problems=p.problems,
        paged=cursor is not None,
        sources=sorted(rt.config.sources),
        statuses=EVENT_STATUSES,
    )
    return page_html, 400 if p.problems else 200


@dashboard.get("/deliveries")
def deliveries() -> ResponseReturnValue:
    """Deliveries, shadow ones beside the real ones; ``mode=shadow`` shows only what
    shadow routes would have sent."""
    p = Params()
    mode = p.choice("mode", tuple(RouteMode))
    f = DeliveryFilter(
        source=p.text("source"),
        target=p.text("target"),
        status=p.choice("status", tuple(DeliveryStatus)),
        since=p.time("since"),
        until=p.time("until"),
    )
    cursor = p.cursor()
    page = None
    if not p.problems:
        page = ops().deliveries(
            f, limit=PAGE_SIZE, cursor=cursor, mode=RouteMode(mode) if mode else None
        )
    form = p.values("source", "target", "status", "mode", "since", "until")
    config = ops().runtime.config
    page_html = render_template(
        "dashboard/deliveries.html",
        page=page,
        form=form,
        problems=p.problems,
        paged=cursor is not None,
        sources=sorted(config.sources),
        targets=sorted(config.targets),
        statuses=[s.value for s in DeliveryStatus],
        modes=[m.value for m in RouteMode],
    )
    return page_html, 400 if p.problems else 200


@dashboard.get("/events/<event_id>")
def event(event_id: str) -> ResponseReturnValue:
    found = ops().event(event_id, reveal_replies=can("admin"))
    if found is None:
        abort(404, "No such event, or it is past its retention.")
    return render_template("dashboard/event.html", event=found)


@dashboard.get("/deliveries/<delivery_id>")
def delivery(delivery_id: str) -> ResponseReturnValue:
    found = ops().delivery(delivery_id, reveal_replies=can("admin"))
    if found is None:
        abort(404, "No such delivery, or it is past its retention.")
    return render_template("dashboard/delivery.html", delivery=found)


@dashboard.route("/<path:anything>", methods=["GET", "POST"])
def unknown(anything: str) -> ResponseReturnValue:
    abort(404, "There is no such dashboard page.")
