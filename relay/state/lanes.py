"""Ordered delivery per group: each ordered target has one lane per group, and a lane's
deliveries go out one at a time, in the order their events were accepted.

A lane is a sorted set (``keys.lane``) of delivery ids by their event's acceptance time;
its lowest member, the head, alone may be sent. The steps that change a lane are the
relay's own atomic steps (``relay/state/lua``), so a crash leaves no lane waiting for a
delivery that is done:

- fan-out (``fanout.lua``) adds each ordered delivery to its lane in the script that marks
  the event routed;
- ``lane_admit.lua``, between a worker's claim and its target gate, lets the head go, or
  holds the delivery in the schedule (``waiting: ordered``) until the head's hold would
  end; a retrying head that kept the next waiting that long leaves the lane;
- ``finish.lua`` (delivered) and ``dead.lua`` take the head out and make the next one due
  at once.

An event's deliveries join their lanes only when it is fanned out, and workers may fan
out a later event first; so a head also waits until every earlier event is routed (the
fan-out mark, ``keys.FANNED_OUT``, which the scheduler keeps near the newest event), or
has waited for its fan-out as long as the hold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
import structlog

from relay.config.models import RouteConfig, RouteMode, TargetConfig
from relay.events import GroupEvent
from relay.state import keys
from relay.state.lua import ScriptCall, load_script, run_together

log = structlog.get_logger("relay.ordering")

PER_GROUP = "per_group"
DEFAULT_HOLD = 600.0  # how long a head may keep its lane waiting, unless configured
FANOUT_RECHECK = 0.5  # how soon a head waiting for an earlier event's fan-out looks again
HELD = "ordered"  # the ``waiting`` reason of a delivery held in its lane
LANE_FIELD = "lane"  # the delivery hash field naming its lane's key (read by the scripts)
BREAK_FIELD = "lane_broke"  # a note of the break in order the delivery's sending makes


def ordering_hold(route: RouteConfig | None, target: TargetConfig) -> float | None:
    """The hold of a delivery on ``route`` to ``target`` if either orders per group, else
    ``None``. The route's ``ordering_hold`` wins over the target's."""
    route_orders = route is not None and route.ordering == PER_GROUP
    if not route_orders and target.ordering != PER_GROUP:
        return None
    if route is not None and route.ordering_hold is not None:
        return float(route.ordering_hold)
    return float(target.ordering_hold or DEFAULT_HOLD)


class Joining:
    """The lane fields of one event's deliveries, for fan-out to store with each record.

    Events without a group have no lane; shadow deliveries are never sent, so they hold
    no lane back. An event whose fan-out comes after the fan-out mark passed it (it was
    queued for longer than a hold) may go out after later ones of its group: its
    deliveries carry a note saying so into their attempt records.
    """

    def __init__(
        self, client: redis.Redis, event: GroupEvent, accepted_at: float, status: str
    ) -> None:
        self.redis = client
        self.event = event
        self.accepted_at = accepted_at
        self.first_fanout = status == "queued"  # a rerun of a routed event creates nothing
        self._late: bool | None = None

    def fields(self, route: RouteConfig, target: TargetConfig) -> dict[str, str]:
        group = self.event.group
        if group is None or route.mode is RouteMode.SHADOW:
            return {}
        if ordering_hold(route, target) is None:
            return {}
        fields = {LANE_FIELD: keys.lane(target.id, self.event.source, group.id)}
        if self.late():
            fields[BREAK_FIELD] = json.dumps({"reason": "late_fanout"})
        return fields

    def late(self) -> bool:
        """Whether ordered deliveries stopped waiting for this event's fan-out."""
        if self._late is None:
            mark = self.redis.get(keys.FANNED_OUT) if self.first_fanout else None
            self._late = mark is not None and float(mark) >= self.accepted_at
            if self._late:
                log.warning("ordering.late_fanout", event_id=self.event.id)
        return self._late


@dataclass(frozen=True)
class LaneClaim:
    """A claimed delivery that may be in a lane, and what holding it needs."""

    delivery_id: str
    token: str  # the claim's lock token, released if the delivery is held
    attempts: int  # the attempt counter before the claim, restored if held
    hold: float


@dataclass(frozen=True)
class LaneVerdict:
    """``lane_admit.lua``'s answer: go (with the break in order it makes, if any, and the
    lane's next delivery to hand over to), or held until ``until`` behind ``blocker``."""

    go: bool
    broke: dict[str, Any] | None = None
    next_id: str | None = None
    next_queue: str | None = None
    until: float | None = None
    blocker: str | None = None


def _verdict(reply: list[Any]) -> LaneVerdict:
    text = [item.decode() if isinstance(item, bytes) else str(item) for item in reply]
    if text[0] == "run":
        broke = json.loads(text[1]) if text[1] else None
        return LaneVerdict(True, broke, text[2] or None, text[3] or None)
    return LaneVerdict(False, until=float(text[1]), blocker=text[2] or None)


class Lanes:
    """Admission to the lanes, for the workers."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._admit = load_script(client, "lane_admit.lua")
        self._mark = load_script(client, "fanout_mark.lua")

    def admit_many(self, claims: Sequence[LaneClaim], now: float) -> list[LaneVerdict]:
        """Each claim's verdict, in one round trip; a held one is parked by its script."""
        calls = [
            ScriptCall(
                self._admit,
                [
                    keys.delivery(claim.delivery_id),
                    keys.lock(claim.delivery_id),
                    keys.INFLIGHT,
                    keys.SCHEDULE,
                    keys.FANNED_OUT,
                    keys.EVENTS,
                    keys.STATS_TARGETS,
                ],
                [
                    claim.delivery_id,
                    claim.token,
                    f"{now:.6f}",
                    claim.hold,
                    claim.attempts,
                    FANOUT_RECHECK,
                    keys.event(""),
                ],
            )
            for claim in claims
        ]
        return [_verdict(reply) for reply in run_together(self.redis, calls)]

    def advance_mark(self, most: int) -> bool:
        """Move the fan-out mark over the events fanned out since it last moved (looking
        at ``most`` at most), once a relay has one; whether it caught up."""
        caught_up = self._mark(keys=[keys.FANNED_OUT, keys.EVENTS], args=[keys.event(""), most])
        return bool(caught_up)

    def lane_of(self, delivery_id: str) -> list[str]:
        """The delivery's lane, head first (empty if it is in none): for reads and tests."""
        name = self.redis.hget(keys.delivery(delivery_id), LANE_FIELD)
        if name is None:
            return []
        return [member.decode() for member in self.redis.zrange(name.decode(), 0, -1)]
